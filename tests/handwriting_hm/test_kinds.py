"""kinds.py, the one map from a checkpoint's kind to its model family: each command that reads a checkpoint
(`evaluate`, `export`, `train --init-from`, `write`) picks the family of the kind it holds, and a kind it does
not know is one line, exit code 2."""
from __future__ import annotations

import json

import pytest

from data_prep.dataset import HandwritingDataset
from tests.factories import make_prepared, write_tiny_checkpoint
from handwriting_hm.cli import main
from handwriting_hm.hmlstm.checkpoint import checkpoint_payload, load_checkpoint, save_checkpoint
from handwriting_hm.kinds import FAMILIES, checkpoint_kind, family_of, family_of_preset
from handwriting_hm.synthesis.alphabet import alphabet_of_prepared
from handwriting_hm.synthesis.model import LoadedSynthesisModel
from handwriting_hm.unconditional.model import LoadedModel
from tests.write_factory import write_tiny_synthesis_checkpoint


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("data"), n_forms=4)


@pytest.fixture(scope="module")
def checkpoints(prepared, tmp_path_factory):
    """A tiny handwriting and a tiny synthesis checkpoint, both trained (so to speak) on `prepared`."""
    folder = tmp_path_factory.mktemp("models")
    stats = {key: [float(v) for v in value] for key, value in HandwritingDataset(prepared, "train", "paper").stats.items()}
    synthesis = write_tiny_synthesis_checkpoint(folder / "synthesis.pt", alphabet_of_prepared(prepared).characters)
    payload = load_checkpoint(synthesis)
    payload["metadata"] = {"stats": stats, "scheme": "paper"}
    save_checkpoint(synthesis, payload)
    return {"handwriting": write_tiny_checkpoint(folder / "handwriting.pt", stats), "synthesis": synthesis}


@pytest.fixture
def unknown(tmp_path):
    path = tmp_path / "language-model.pt"
    save_checkpoint(path, checkpoint_payload("lm", {}, {}, 1.0, {}))
    return path


def test_every_kind_has_one_family_and_every_preset_one_family():
    assert set(FAMILIES) == {"handwriting", "synthesis"}
    assert family_of_preset("tiny").kind == "handwriting" and family_of_preset("synthesis").kind == "synthesis"


@pytest.mark.parametrize("kind, loaded_type", [("handwriting", LoadedModel), ("synthesis", LoadedSynthesisModel)])
def test_the_kind_picks_the_loader(checkpoints, kind, loaded_type):
    assert checkpoint_kind(checkpoints[kind]) == kind
    assert isinstance(family_of(checkpoints[kind]).load(checkpoints[kind]), loaded_type)


@pytest.mark.parametrize("kind", ["handwriting", "synthesis"])
def test_export_keeps_the_kind_it_read(checkpoints, kind, tmp_path):
    out = tmp_path / "exported.pt"
    assert main(["export", str(checkpoints[kind]), str(out)]) == 0
    assert load_checkpoint(out)["kind"] == kind


def test_evaluate_scores_each_kind_with_its_family(checkpoints, prepared, tmp_path, capsys):
    reports = {kind: tmp_path / f"{kind}.json" for kind in checkpoints}
    for kind, path in checkpoints.items():
        assert main(["evaluate", str(path), "--data", str(prepared), "--json", str(reports[kind])]) == 0
    out = capsys.readouterr().out
    handwriting, synthesis = (json.loads(reports[kind].read_text()) for kind in ("handwriting", "synthesis"))
    assert "scheme" in handwriting and "kind" not in handwriting  # unconditional: lines without their texts
    assert synthesis["kind"] == "synthesis" and "(synthesis, each line given its text)" in out


@pytest.mark.parametrize("command", [
    ["export", "{checkpoint}", "{tmp}/out.pt"],
    ["evaluate", "{checkpoint}", "--data", "{tmp}/absent.npz"],
    ["write", "hi", "--checkpoint", "{checkpoint}", "--out", "{tmp}/hi.svg"],
    ["train", "--data", "{tmp}/absent.npz", "--run-dir", "{tmp}/run", "--init-from", "{checkpoint}"],
])
def test_an_unknown_kind_is_one_line_naming_the_known_ones(unknown, tmp_path, capsys, command):
    argv = [part.format(checkpoint=unknown, tmp=tmp_path) for part in command]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "holds a 'lm' model" in error and "handwriting, synthesis" in error


def test_a_missing_checkpoint_is_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"absent\.pt: no such file"):
        checkpoint_kind(tmp_path / "absent.pt")
