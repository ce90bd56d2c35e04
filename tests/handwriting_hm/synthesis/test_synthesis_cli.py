"""`handwriting-hm train --preset synthesis`, and `evaluate` and `export` of a synthesis checkpoint."""
from __future__ import annotations

import json

import pytest
import torch
from tests.factories import make_prepared

from handwriting_hm.cli import main
from handwriting_hm.hmlstm.checkpoint import load_checkpoint
from handwriting_hm.synthesis.model import KIND
from handwriting_hm.synthesis import task as synthesis_train
from handwriting_hm.synthesis.evaluate import evaluate_synthesis
from handwriting_hm.synthesis.write import write

TINY = ["--hidden-sizes", "8,8", "--embedding-size", "8", "--n-mixtures", "2", "--n-window", "2",
        "--batch-size", "4", "--validation-lines", "2", "--eval-every", "2", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 3-step run, and a 2-step run resumed to 3 steps, both through `handwriting-hm train`."""
    folder = tmp_path_factory.mktemp("synthesis-runs")
    data = make_prepared(folder, n_forms=2)
    train = ["train", "--data", str(data)]
    for run, steps in (("straight", "3"), ("resumed", "2")):
        assert main([*train, "--preset", "synthesis", "--run-dir", str(folder / run), *TINY, "--max-steps", steps]) == 0
    assert load_checkpoint(folder / "resumed" / "latest.pt", kind=KIND)["progress"]["step"] == 2
    # --resume finds the synthesis run by itself and keeps its settings: only the step limit is given
    assert main([*train, "--run-dir", str(folder / "resumed"), "--resume", "--max-steps", "3"]) == 0
    return data, folder


def test_train_preset_synthesis_runs_and_resumes_exactly(runs):
    data, folder = runs
    straight, resumed = (load_checkpoint(folder / run / "latest.pt", kind=KIND) for run in ("straight", "resumed"))
    assert resumed["progress"]["step"] == 3 and straight["config"]["hidden_sizes"] == [8, 8]
    assert straight["config"]["alphabet"] == " 0123456789eiln" and straight["metadata"]["preset"] == "synthesis"
    assert resumed["metadata"]["task"] == {"scheme": "paper", "batch_size": 4, "validation_lines": 2,
                                           "chunk_points": None}
    for name, weight in straight["model"].items():
        assert torch.equal(weight, resumed["model"][name]), name


def test_flags_of_the_other_model_are_refused_in_one_line(runs, tmp_path, capsys):
    data, folder = runs
    base = ["train", "--data", str(data), "--run-dir", str(tmp_path / "run")]
    assert main([*base, "--preset", "synthesis", "--cell", "lstm"]) == 2
    assert main([*base, "--preset", "tiny", "--n-window", "3"]) == 2
    assert main([*base, "--preset", "tiny", "--chunk-points", "100"]) == 2  # the tiny preset crops: one or the other
    assert main([*base, "--preset", "synthesis", "--impl", "fused"]) == 2
    assert main(["train", "--data", str(data), "--run-dir", str(folder / "resumed"), "--resume",
                 "--batch-size", "8"]) == 2
    # the module's own entry is the same command
    assert synthesis_train.main(["--data", str(data), "--run-dir", str(tmp_path / "run"), "--cell", "lstm"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 6 and errors[5] == errors[0]
    assert "--cell: not a setting of the synthesis model" in errors[0]
    assert "--n-window: not a setting of the handwriting model" in errors[1]
    assert "crop_points (random windows) and chunk_points (whole lines in chunks) exclude each other" in errors[2]
    assert "its own loop of steps" in errors[3] and "contradicts" in errors[4]
    assert not (tmp_path / "run").exists()


def test_evaluate_and_export_take_a_synthesis_checkpoint(runs, tmp_path, capsys):
    data, folder = runs
    best = folder / "straight" / "latest.pt"
    report = tmp_path / "evaluation.json"
    assert main(["evaluate", str(best), "--data", str(data), "--json", str(report)]) == 0
    expected = evaluate_synthesis(best, data)
    written = json.loads(report.read_text())
    assert written["log_likelihood_per_sequence"] == pytest.approx(expected.log_likelihood_per_sequence)
    assert written["boundary_rate"] == pytest.approx(expected.boundary_rate) and written["kind"] == "synthesis"
    assert {"ci95_low", "ci95_high", "firings_on_pen_up", "pen_up_rate"} <= set(written)
    assert "synthesis" in capsys.readouterr().out
    exported = tmp_path / "synthesis-model.pt"
    assert main(["export", str(best), str(exported), "--dtype", "float32"]) == 0
    assert load_checkpoint(exported, kind=KIND)["metadata"]["preset"] == "synthesis"
    assert (write("line 1", exported, seed=5).offsets == write("line 1", best, seed=5).offsets).all()


def test_init_from_may_switch_a_run_to_chunks_of_lines(runs, tmp_path):
    data, folder = runs
    run = tmp_path / "chunked"
    assert main(["train", "--data", str(data), "--run-dir", str(run), "--init-from", str(folder / "straight" / "latest.pt"),
                 "--preset", "synthesis", "--chunk-points", "8", "--batch-size", "4", "--validation-lines", "2",
                 "--max-steps", "2", "--device", "cpu", "--quiet"]) == 0
    chunked = load_checkpoint(run / "latest.pt", kind=KIND)
    assert chunked["metadata"]["task"]["chunk_points"] == 8
    assert chunked["task"]["carried"] is not None  # 2 steps of 8 points end inside the first lines (20 to 59 points)


def test_init_from_may_switch_the_copy_gradient_but_nothing_the_model_computes(runs, tmp_path, capsys):
    data, folder = runs
    source = folder / "straight" / "latest.pt"
    base = ["train", "--data", str(data), "--init-from", str(source), "--preset", "synthesis", "--batch-size", "4",
            "--validation-lines", "2", "--max-steps", "1", "--device", "cpu", "--quiet"]
    assert main([*base, "--run-dir", str(tmp_path / "mixed"), "--copy-gradient", "mixed"]) == 0
    assert load_checkpoint(tmp_path / "mixed" / "latest.pt", kind=KIND)["config"]["copy_gradient"] == "mixed"
    assert load_checkpoint(source, kind=KIND)["config"]["copy_gradient"] == "straight"
    assert main([*base, "--run-dir", str(tmp_path / "wider"), "--n-window", "3"]) == 2
    assert "contradicts" in capsys.readouterr().err
