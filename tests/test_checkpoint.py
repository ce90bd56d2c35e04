"""The one checkpoint format, and the files written before it: shipped models load, runs resume."""
from pathlib import Path

import torch

from handwriting_hm.hmlstm.checkpoint import FORMAT, LEGACY_FORMAT, export_checkpoint, load_checkpoint
from handwriting_hm.model import DEFAULT_MODEL as HANDWRITING_MODEL, load_handwriting_model
from lm.model import DEFAULT_MODEL as LM_MODEL, load_lm
from test_trainer import make_trainer  # tests/ is on sys.path under pytest's default import mode


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


def test_shipped_models_are_legacy_files_and_still_load():
    handwriting = torch.load(HANDWRITING_MODEL, weights_only=True)
    lm = torch.load(LM_MODEL, weights_only=True)
    assert handwriting["format"] == lm["format"] == LEGACY_FORMAT
    assert load_handwriting_model(HANDWRITING_MODEL).slope == handwriting["metadata"]["slope"] == 3.0
    assert load_lm(LM_MODEL).slope == lm["task"]["slope"]


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
