"""Where the detectors fire against the pen-ups, and their health, in `handwriting-hm evaluate` and validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from handwriting_hm.cli import main
from handwriting_hm.scoring import BoundaryCounts, summarise
from handwriting_hm.unconditional.evaluate import evaluate_lines
from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel
from handwriting_hm.unconditional.task import detector_metrics


def test_pen_up_alignment_counts_firings_within_the_window_of_the_points_read():
    # one line of 12 points, pen-ups at points 3 and 8; step t reads point t-1
    offsets = torch.zeros(1, 12, 3)
    offsets[0, [3, 8], 2] = 1.0
    boundaries = torch.zeros(1, 12, 2)
    boundaries[0, 4, 0] = 1.0  # reads point 3: on the pen-up
    boundaries[0, 7, 0] = 1.0  # reads point 6: two before the pen-up at 8
    boundaries[0, 11, 0] = 1.0  # reads point 10: two after it
    boundaries[0, 1, 1] = 1.0  # reads point 0: three before the pen-up at 3
    counts = BoundaryCounts.of_batch(boundaries, offsets, torch.tensor([12]))
    assert counts.fired_steps.shape == (11, 2) and counts.pen_up_steps.sum() == 2
    result = summarise(np.zeros(1), 12, counts, pen_up_window=2)
    z1, z2 = result.pen_up_alignment
    assert z1["precision"] == 1.0 and z1["recall"] == 1.0
    assert z2["precision"] == 0.0 and z2["recall"] == 0.0
    assert summarise(np.zeros(1), 12, counts, pen_up_window=0).pen_up_alignment[0]["precision"] == pytest.approx(1 / 3)
    assert result.operation_shares[0]["copy"] == 0.0  # layer 1 reads every point
    assert result.operation_shares[2]["update"] == pytest.approx(1 / 12)  # layer 3 reads z2 once
    assert "precision 1.00 within 2 points of a pen-up" in result.format()
    metrics = detector_metrics(result)
    assert metrics["z1_precision"] == 1.0 and metrics["z1_rate"] == pytest.approx(3 / 12)
    assert "z1_window" not in metrics  # no pre-activations given: the window is not known


def test_batches_add_up_to_the_whole():
    offsets = torch.zeros(2, 6, 3)
    offsets[:, 2, 2] = 1.0
    boundaries = (torch.rand(2, 6, 2, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    lengths = torch.tensor([6, 4])
    boundaries[1, 4:] = 0.0
    whole = BoundaryCounts.of_batch(boundaries, offsets, lengths)
    parts = BoundaryCounts.of_batch(boundaries[:1], offsets[:1], lengths[:1]).plus(
        BoundaryCounts.of_batch(boundaries[1:], offsets[1:], lengths[1:]))
    assert np.array_equal(whole.fired_steps, parts.fired_steps)
    assert whole.health.summary() == parts.health.summary()


def test_evaluating_a_model_reports_the_window_from_a_fast_path():
    torch.manual_seed(0)
    model = HandwritingModel(HandwritingConfig(hidden_sizes=(6, 6, 6), embedding_size=6, n_mixtures=2))
    lines = [torch.randn(20, 3).clamp(-2, 2) for _ in range(3)]
    for line in lines:
        line[:, 2] = (torch.arange(20) % 5 == 4).float()
    reference = evaluate_lines(model, lines)
    model.core.impl = "auto"  # the sparse path: pre-activations recomputed from its output
    fast = evaluate_lines(model, lines)
    assert fast.window_share == pytest.approx(reference.window_share, abs=1e-6)
    assert all(share is not None for share in fast.window_share)
    assert fast.pen_up_alignment == reference.pen_up_alignment


def tiny_training(tmp_path, *extra: str) -> list[str]:
    """`handwriting-hm train` of a 3 x 8 model on a prepared fixture in tmp_path, without --run-dir."""
    from tests.factories import make_prepared
    data = make_prepared(tmp_path / "data")
    return ["train", "--data", str(data), "--preset", "tiny", "--hidden-sizes", "8,8,8", "--embedding-size", "8",
            "--n-mixtures", "2", "--batch-size", "8", "--crop-points", "0", "--validation-lines", "0",
            "--sample-points", "12", "--log-every", "1", "--device", "cpu", "--quiet", *extra]


@pytest.mark.slow
def test_handwriting_training_takes_the_recipes_and_logs_pen_up_figures(tmp_path):
    common = tiny_training(tmp_path, "--max-steps", "12", "--eval-every", "12", "--lr", "0.03", "--boundary-bias", "-2")
    assert main([*common, "--run-dir", str(tmp_path / "free")]) == 0
    assert main([*common, "--run-dir", str(tmp_path / "pulled"), "--rate-targets", "0.9,0.9", "--rate-weight", "20",
                 "--bernoulli-steps", "4", "--no-boundary-norm", "--z-on-copy", "recompute",
                 "--copy-gradient", "exact"]) == 0

    def last_validation(run: str) -> dict:
        records = [json.loads(line) for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]
        return [r for r in records if r["type"] == "val"][-1]

    free, pulled = last_validation("free"), last_validation("pulled")
    for key in ("z1_rate", "z1_window", "z1_precision", "z1_recall", "z1_lift", "layer2_copy", "layer3_update"):
        assert key in pulled, key
    assert pulled["z1_rate"] > free["z1_rate"] + 0.2
    assert main([*common, "--run-dir", str(tmp_path / "bad"), "--rate-weight", "1"]) == 2  # no targets: one line


def test_the_oracle_forces_layer_1_to_the_pen_ups_read_in_every_path():
    from handwriting_hm.unconditional.model import pen_ups_read, shift_inputs
    torch.manual_seed(0)
    offsets = torch.randn(2, 15, 3).clamp(-2, 2)
    offsets[..., 2] = (torch.arange(15) % 4 == 1).float()
    inputs = shift_inputs(offsets)
    forced = pen_ups_read(inputs)
    assert torch.equal(forced[0, :4], torch.tensor([0.0, 0.0, 1.0, 0.0]))  # step t reads point t-1
    for impl in ("reference", "auto"):
        model = HandwritingModel(HandwritingConfig(hidden_sizes=(6, 6, 6), embedding_size=6, n_mixtures=2), impl=impl)
        assert torch.equal(model(inputs, forced_z1=forced).core.boundaries[..., 0], forced), impl
        _, output = model.sequence_log_likelihood(offsets, oracle=True)
        assert torch.equal(output.core.boundaries[..., 0], forced), impl
    lstm = HandwritingModel(HandwritingConfig(cell="lstm", hidden_sizes=(6, 6), embedding_size=6, n_mixtures=2))
    with pytest.raises(ValueError, match="need an HM-LSTM core"):
        lstm(inputs, forced_z1=forced)


@pytest.mark.slow
def test_an_oracle_run_validates_forced_then_free_and_restarts_best_pt(tmp_path):
    from handwriting_hm.hmlstm.checkpoint import load_checkpoint
    common = tiny_training(tmp_path, "--max-steps", "4", "--eval-every", "2", "--impl", "auto")
    assert main([*common, "--run-dir", str(tmp_path / "oracle"), "--oracle-steps", "3"]) == 0
    log = [json.loads(line) for line in (tmp_path / "oracle" / "log.jsonl").read_text().splitlines()]
    validations = [r for r in log if r["type"] == "val"]
    assert [r["step"] for r in validations] == [2, 4]
    assert validations[0].get("val_oracle") == 1.0 and "val_oracle" not in validations[1]
    assert validations[0]["z1_precision"] == 1.0 and validations[0]["z1_recall"] == 1.0  # z1 is the pen-ups
    assert {"z1_word_precision", "z1_word_recall", "z2_word_lift"} <= validations[1].keys()  # against the words too
    # the free model is not held to the forced likelihood: best.pt and the plateau start again when z1 is free
    assert validations[1]["best_metric"] == validations[1]["val_loss"]
    assert [(r["step"], r["regime"]) for r in log if r["type"] == "regime"] == [(4, "")]
    assert load_checkpoint(tmp_path / "oracle" / "best.pt")["progress"]["step"] == 4
    assert main([*common, "--run-dir", str(tmp_path / "lstm"), "--cell", "lstm", "--hidden-sizes", "8,8",
                 "--oracle-steps", "2"]) == 2


def test_word_starts_are_the_widest_gaps_to_the_right_of_the_ink_so_far():
    from handwriting_hm.scoring import word_starts

    def stroke(dx: float, points: int = 3) -> list[list[float]]:  # `points` points moving right, the pen lifted after
        return [[dx, 0.0, 0.0]] * (points - 1) + [[dx, 0.0, 1.0]]

    # word 1: a stroke, a short hop, a second stroke, then back left for a dot; word 2 after a wide gap, then
    # a hop within it; word 3 after a narrower gap, still wider than any hop
    line = np.array(stroke(10) + [[5.0, 0.0, 0.0]] + stroke(10)[1:] + [[-30.0, 5.0, 1.0]]  # the dot
                    + [[90.0, -5.0, 0.0]] + stroke(10)[1:] + [[4.0, 0.0, 0.0]] + stroke(10)[1:]
                    + [[40.0, 0.0, 0.0]] + stroke(10)[1:], dtype=np.float64)
    pen_ups = np.flatnonzero(line[:-1, 2] > 0.5)
    assert len(pen_ups) == 5
    starts = word_starts(line, words=3)
    # the dot's pen-up (index 6) precedes word 2; the stroke's end before the 40-unit gap (index 12) word 3
    assert np.flatnonzero(starts).tolist() == [6, 12]
    assert not word_starts(line, words=1).any()
    assert word_starts(line, words=9).sum() == 4  # only the pen-ups after which the pen comes down further right
    scaled = line.copy()
    scaled[:, :2] *= 0.1
    assert np.array_equal(word_starts(scaled, words=3), starts)
    # a line as the model sees it (normalised, a shift included), undone with its statistics
    from handwriting_hm.scoring import line_word_starts
    stats = {"mean": (8.0, -0.5), "std": (40.0, 30.0)}
    normalised = line.copy()
    normalised[:, :2] = (line[:, :2] - np.array(stats["mean"])) / np.array(stats["std"])
    assert np.array_equal(line_word_starts(torch.from_numpy(normalised), "one two  three", stats), starts)


def test_evaluation_reports_the_firings_against_the_word_starts():
    offsets = torch.zeros(1, 12, 3)
    offsets[0, [3, 8], 2] = 1.0
    starts = torch.zeros(1, 12, dtype=torch.bool)
    starts[0, 8] = True  # the pen-up at 8 begins a word, the one at 3 does not
    boundaries = torch.zeros(1, 12, 2)
    boundaries[0, 4, 0] = boundaries[0, 9, 0] = 1.0  # z1 reads both pen-ups
    boundaries[0, 9, 1] = 1.0  # z2 only the word's
    counts = BoundaryCounts.of_batch(boundaries, offsets, torch.tensor([12]), word_starts=starts)
    result = summarise(np.zeros(1), 12, counts, pen_up_window=0)
    z1, z2 = result.word_start_alignment
    assert (z1["precision"], z1["recall"]) == (0.5, 1.0) and (z2["precision"], z2["recall"]) == (1.0, 1.0)
    assert "of a word's start (estimated)" in result.format()
    assert summarise(np.zeros(1), 12, BoundaryCounts.of_batch(boundaries, offsets, torch.tensor([12]))) \
        .word_start_alignment is None
