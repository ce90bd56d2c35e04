"""The one checkpoint format, and the files written before it: shipped models load, runs resume;
the files the loader and the exporter refuse."""
import os
from pathlib import Path

import pytest
import torch

from handwriting_hm.hmlstm.checkpoint import (FORMAT, LEGACY_FORMAT, checkpoint_payload, export_checkpoint,
                                              load_checkpoint, save_checkpoint)
from handwriting_hm.unconditional.model import DEFAULT_MODEL as HANDWRITING_MODEL, load_handwriting_model
from lm.model import DEFAULT_MODEL as LM_MODEL, load_lm
from tests.handwriting_hm.hmlstm.test_trainer import make_trainer


def as_legacy(path: Path, slope_under: str) -> None:
    """Rewrite a checkpoint as the code before the hmlstm library wrote it."""
    payload = torch.load(path, weights_only=True)
    slope = payload.pop("slope")
    payload["format"] = LEGACY_FORMAT
    if slope_under == "metadata":
        payload["metadata"]["slope"] = slope
    else:
        payload.setdefault("task", {})["slope"] = slope
    torch.save(payload, path)


# the first shipped handwriting model (3 x 128), in the legacy format, kept to show it still loads
LEGACY_HANDWRITING_MODEL = Path(__file__).resolve().parents[2] / "fixtures" / "legacy-handwriting-3x128.pt"


def test_shipped_models_load_the_legacy_ones_too(tmp_path):
    handwriting = torch.load(LEGACY_HANDWRITING_MODEL, weights_only=True)
    assert handwriting["format"] == LEGACY_FORMAT
    assert load_handwriting_model(LEGACY_HANDWRITING_MODEL).slope == handwriting["metadata"]["slope"] == 3.0
    shipped = torch.load(HANDWRITING_MODEL, weights_only=True)
    assert shipped["format"] == FORMAT
    assert load_handwriting_model(HANDWRITING_MODEL).slope == shipped["slope"] == 1.0  # the paper-hm preset's
    lm = torch.load(LM_MODEL, weights_only=True)
    assert lm["format"] == FORMAT and load_lm(LM_MODEL).slope == lm["slope"]
    legacy_lm = tmp_path / "legacy-lm.pt"  # the first shipped language model kept its slope under "task"
    legacy_lm.write_bytes(LM_MODEL.read_bytes())
    as_legacy(legacy_lm, slope_under="task")
    assert load_lm(legacy_lm).slope == lm["slope"]


def test_a_legacy_training_checkpoint_resumes_to_the_same_weights(tmp_path):
    straight = make_trainer(tmp_path / "straight")
    straight.fit()
    make_trainer(tmp_path / "split", max_steps=7).fit()
    as_legacy(tmp_path / "split" / "latest.pt", slope_under="task")
    resumed = make_trainer(tmp_path / "split")
    assert resumed.fit(resume=True)["steps"] == 13
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    rewritten = torch.load(tmp_path / "split" / "latest.pt", weights_only=True)
    assert rewritten["format"] == FORMAT and rewritten["slope"] == resumed.task.slope


def test_legacy_files_give_their_slope_in_one_place(tmp_path):
    make_trainer(tmp_path / "run", max_steps=3).fit()
    for slope_under in ("task", "metadata"):
        path = tmp_path / f"{slope_under}.pt"
        path.write_bytes((tmp_path / "run" / "latest.pt").read_bytes())
        as_legacy(path, slope_under)
        assert load_checkpoint(path, kind="toy")["slope"] == 1.0


def test_export_keeps_config_slope_and_metadata_and_drops_resume_state(tmp_path):
    make_trainer(tmp_path / "run", max_steps=3).fit()
    metadata = export_checkpoint(tmp_path / "run" / "latest.pt", tmp_path / "out.pt", "toy", torch.bfloat16)
    exported = load_checkpoint(tmp_path / "out.pt", kind="toy")
    assert exported["format"] == FORMAT and exported["slope"] == 1.0 and exported["metadata"] == metadata
    assert {"optimizer", "scheduler", "rng", "task", "train_config"}.isdisjoint(exported)
    assert all(value.dtype == torch.bfloat16 for value in exported["model"].values())


# ---- refusals: what safe loading refuses, configs that do not fit, exports over what they must not replace


class RunsACommand:
    """What a malicious checkpoint smuggles in: unpickling it would call os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_is_reported_as_refused_by_safe_loading_not_as_corrupt(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    torch.save({"format": FORMAT, "model": RunsACommand(marker)}, path)
    with pytest.raises(ValueError) as raised:
        load_checkpoint(path)
    message = str(raised.value)
    # Before: torch words a blocked module's refusal differently, and the file was called "corrupt".
    assert f"({os.system.__module__}.system) that safe loading refuses" in message and "weights_only" in message
    assert "corrupt" not in message and "\n" not in message and not marker.exists()


def claim_huge_layers(path: Path) -> None:
    """Rewrite a checkpoint's config to claim 60,000 units a layer, keeping its small weights."""
    payload = torch.load(path, weights_only=True)
    payload["config"]["hidden_sizes"] = [60000] * len(payload["config"]["hidden_sizes"])
    torch.save(payload, path)


def test_a_config_that_does_not_fit_the_weights_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    from tests.factories import write_tiny_checkpoint
    from handwriting_hm.unconditional.model import HandwritingModel
    from lm.model import LanguageModel, LMConfig

    lm_path = tmp_path / "lm.pt"
    torch.manual_seed(0)
    small = LanguageModel(LMConfig(vocab_size=5, input_embedding=4, hidden_sizes=(8, 8), embedding_size=8))
    save_checkpoint(lm_path, checkpoint_payload("lm", small.config.to_dict(), small.state_dict(), 1.0,
                                                {"dataset": "ptb", "vocab": list("abcde")}))
    cases = [(write_tiny_checkpoint(tmp_path / "handwriting.pt"), HandwritingModel, load_handwriting_model),
             (lm_path, LanguageModel, load_lm)]
    for path, model_class, load in cases:
        claim_huge_layers(path)
        real_init = model_class.__init__

        def meta_only_init(self, *args, real_init=real_init, **kwargs):
            # Before: the loader built the model for real, trying to allocate tens of gigabytes.
            assert torch.get_default_device().type == "meta", "the claimed model was built for real"
            real_init(self, *args, **kwargs)

        monkeypatch.setattr(model_class, "__init__", meta_only_init)
        with pytest.raises(ValueError) as raised:
            load(path)
        message = str(raised.value)
        assert str(path) in message and "config does not match its weights" in message and "\n" not in message
        assert "60000" in message


def test_export_refuses_to_overwrite_its_input_or_a_training_checkpoint(tmp_path):
    make_trainer(tmp_path / "run", max_steps=6).fit()
    latest, best = tmp_path / "run" / "latest.pt", tmp_path / "run" / "best.pt"
    before = latest.read_bytes()
    with pytest.raises(ValueError, match="is the checkpoint being exported"):
        export_checkpoint(latest, latest, "toy")
    with pytest.raises(ValueError, match="is a training checkpoint"):
        export_checkpoint(best, latest, "toy")
    assert latest.read_bytes() == before  # before: replaced by an inference copy that could not resume
    export_checkpoint(latest, tmp_path / "model.pt", "toy")
    export_checkpoint(best, tmp_path / "model.pt", "toy")  # an earlier export may be replaced
    with pytest.raises(ValueError) as raised:
        load_checkpoint(tmp_path / "model.pt", kind="toy", resumable=True)
    assert "exported model" in str(raised.value) and "--init-from" in str(raised.value)


def _small_models():
    """One small model of each kind, with the loader that reads it and the metadata it needs."""
    from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel
    from handwriting_hm.synthesis.model import SynthesisConfig, SynthesisModel, load_synthesis_model
    from lm.model import LMConfig, LanguageModel

    stats = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}
    return [
        ("handwriting", HandwritingConfig(hidden_sizes=(4, 4), embedding_size=4, n_mixtures=2), HandwritingModel,
         {"stats": stats}, load_handwriting_model, "handwriting model"),
        ("synthesis", SynthesisConfig(alphabet="ab ", hidden_sizes=(4, 4), embedding_size=4, n_mixtures=2,
                                      n_window=2), SynthesisModel, {"stats": stats}, load_synthesis_model,
         "synthesis model"),
        ("lm", LMConfig(vocab_size=5, input_embedding=4, hidden_sizes=(4, 4), embedding_size=4), LanguageModel,
         {"vocab": list("abcde"), "dataset": "ptb"}, load_lm, "language model"),
    ]


@pytest.mark.parametrize("index", range(3), ids=["handwriting", "synthesis", "lm"])
def test_every_loader_reads_its_model_and_refuses_a_config_that_does_not_fit_in_one_line(index, tmp_path):
    kind, config, build, metadata, load, what = _small_models()[index]
    torch.manual_seed(0)
    model = build(config)
    path = tmp_path / "model.pt"
    save_checkpoint(path, checkpoint_payload(kind, config.to_dict(), model.state_dict(), 2.5, metadata))
    loaded = load(path)
    assert loaded.slope == 2.5 and not loaded.model.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), model.state_dict().values()))

    wrong = config.to_dict() | {"hidden_sizes": [4, 100000]}  # the check runs before anything is allocated
    save_checkpoint(path, checkpoint_payload(kind, wrong, model.state_dict(), 2.5, metadata))
    with pytest.raises(ValueError) as raised:
        load(path)
    message = str(raised.value)
    assert message.startswith(f"checkpoint {path}: not a usable {what} (its config does not match its weights")
    assert "\n" not in message
