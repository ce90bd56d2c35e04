"""`handwriting-hm evaluate`: the paper's metric, its interval, and its errors."""
from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch

from data_prep.dataset import HandwritingDataset
from handwriting_hm.hmlstm.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
from handwriting_hm.cli import main
from handwriting_hm.unconditional.evaluate import evaluate_lines
from handwriting_hm.scoring import confidence_interval
from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel, shift_inputs
from handwriting_hm.mixture import mixture_log_likelihood
from tests.factories import make_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("data"), n_forms=4)


@pytest.fixture(scope="module")
def model_file(prepared, tmp_path_factory):
    """An untrained HM-LSTM saved as an inference file, with the prepared file's statistics."""
    torch.manual_seed(0)
    config = HandwritingConfig(hidden_sizes=(8, 8, 8), embedding_size=8, n_mixtures=3)
    model = HandwritingModel(config)
    stats = HandwritingDataset(prepared, "train", "paper").stats
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "handwriting",
                           "config": config.to_dict(), "model": model.state_dict(),
                           "metadata": {"stats": {"mean": list(stats["mean"]), "std": list(stats["std"])},
                                        "slope": 1.5}})
    return path, model


def independent_log_likelihoods(model, lines, slope):
    """One line at a time, no padding, no masks: sum over its points of the MDN log-likelihood."""
    with torch.no_grad():
        return np.array([float(mixture_log_likelihood(model(shift_inputs(line[None]), slope=slope).params,
                                                      line[None]).sum()) for line in lines])


def test_metric_equals_an_independent_computation(prepared, model_file, tmp_path):
    path, model = model_file
    out = tmp_path / "result.json"
    assert main(["evaluate", str(path), "--data", str(prepared), "--split", "test", "--batch-size", "2",
                 "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    lines = [item[0] for item in HandwritingDataset(prepared, "test", "paper")]
    totals = independent_log_likelihoods(model, lines, slope=1.5)
    points = sum(len(line) for line in lines)
    assert result["lines"] == len(lines) >= 2 and result["points"] == points and result["slope"] == 1.5
    assert result["log_likelihood_per_sequence"] == pytest.approx(totals.mean(), rel=1e-5)
    assert result["nats_per_point"] == pytest.approx(totals.sum() / points, rel=1e-5)
    assert result["bits_per_point"] == pytest.approx(totals.sum() / points / math.log(2), rel=1e-5)
    half_width = 1.959964 * totals.std(ddof=1) / math.sqrt(len(totals))
    assert result["ci95_low"] == pytest.approx(totals.mean() - half_width, rel=1e-4)
    assert result["ci95_high"] == pytest.approx(totals.mean() + half_width, rel=1e-4)


def test_batching_and_padding_do_not_change_the_metric(prepared, model_file):
    _, model = model_file
    lines = [item[0] for item in HandwritingDataset(prepared, "train", "paper")][:9]
    one = evaluate_lines(model, lines, slope=1.5, batch_size=1)
    padded = evaluate_lines(model, lines, slope=1.5, batch_size=4)
    assert padded.log_likelihood_per_sequence == pytest.approx(one.log_likelihood_per_sequence, rel=1e-5)
    assert padded.boundary_rate == pytest.approx(one.boundary_rate)
    assert all(0.0 <= rate <= 1.0 for rate in one.boundary_rate) and len(one.boundary_rate) == 2


def test_confidence_interval_is_the_normal_approximation():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    low, high = confidence_interval(values)
    half_width = 1.959964 * math.sqrt(5.0 / 3.0) / 2.0  # sample std sqrt(5/3), sqrt(n) = 2
    assert (low, high) == (pytest.approx(2.5 - half_width, rel=1e-6), pytest.approx(2.5 + half_width, rel=1e-6))
    assert confidence_interval(np.array([7.0])) == (7.0, 7.0)


@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_bad_checkpoint_is_one_line_and_exit_2(prepared, tmp_path, capsys, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    assert main(["evaluate", str(bad), "--data", str(prepared)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("handwriting-hm: error: checkpoint") and "\n" not in error


def test_other_normalisation_statistics_are_refused(prepared, model_file, tmp_path, capsys):
    path, _ = model_file
    other = make_prepared(tmp_path, n_forms=2)  # other lines, other mean and std
    assert main(["evaluate", str(path), "--data", str(other)]) == 2
    assert "normalisation" in capsys.readouterr().err


def test_a_line_with_nan_is_named_and_fails_in_one_line(prepared, model_file, tmp_path, capsys, monkeypatch):
    path, _ = model_file
    dataset = HandwritingDataset(prepared, "test", "paper")
    real_item = HandwritingDataset.__getitem__

    def one_nan(self, index):
        offsets, text = real_item(self, index)
        if index == 1:
            offsets = offsets.clone()
            offsets[3, 0] = float("nan")
        return offsets, text

    monkeypatch.setattr(HandwritingDataset, "__getitem__", one_nan)
    out = tmp_path / "result.json"
    assert main(["evaluate", str(path), "--data", str(prepared), "--split", "test", "--device", "cpu",
                 "--json", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"handwriting-hm: error: line {dataset.line_ids[1]} has log-likelihood nan; its offsets hold "
                     "NaN or infinite values (point 3): prepare the data again")
    assert not out.exists()  # never a JSON file with a bare NaN in it


def test_the_command_shows_progress_on_stderr(prepared, model_file, capsys):
    path, _ = model_file
    lines = len(HandwritingDataset(prepared, "test", "paper"))
    assert main(["evaluate", str(path), "--data", str(prepared), "--batch-size", "1", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "scoring: 100%" in captured.err and f"{lines}/{lines}" in captured.err
    assert "log-likelihood per sequence" in captured.out


def test_help_prints_the_percent_sign_once(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = capsys.readouterr().out
    assert "95% CI" in text and "%%" not in text


def test_firings_on_pen_ups_count_the_points_each_step_reads():
    """A model whose detectors fire on known steps: z1 at every step, z2 at steps 2 and 4 of line one."""
    lines = [torch.tensor([[0.1, 0.0, 0.0], [0.2, 0.0, 1.0], [0.3, 0.0, 0.0], [0.4, 0.0, 1.0], [0.5, 0.0, 0.0]]),
             torch.tensor([[0.1, 0.0, 1.0], [0.2, 0.0, 0.0], [0.3, 0.0, 1.0]])]

    class Fixed(HandwritingModel):
        def sequence_log_likelihood(self, offsets, lengths=None, slope=1.0, oracle=False):
            boundaries = torch.zeros(*offsets.shape[:2], 2)
            valid = torch.arange(offsets.shape[1])[None, :] < lengths[:, None]
            boundaries[..., 0] = valid.float()
            boundaries[lengths == 5, 2, 1] = 1.0  # reads point 1, a pen-up
            boundaries[lengths == 5, 4, 1] = 1.0  # reads point 3, a pen-up
            boundaries[lengths == 3, 2, 1] = 1.0  # reads point 1, not a pen-up
            core = type("Core", (), {"boundaries": boundaries})()
            return torch.zeros(len(offsets)), type("Output", (), {"core": core})()

    result = evaluate_lines(Fixed(HandwritingConfig(hidden_sizes=(4, 4, 4), embedding_size=4, n_mixtures=1)), lines)
    # points read: 4 + 2 (no step reads a line's last point); pen-ups among them: 2 + 1
    assert result.pen_up_rate == pytest.approx(3 / 6)
    # z1 fires at all 8 steps, 3 of them reading a pen-up; z2 fires 3 times, 2 on a pen-up
    assert result.boundary_rate == pytest.approx([8 / 8, 3 / 8])
    assert result.firings_on_pen_up == pytest.approx([3 / 8, 2 / 3])
    assert "firings on a pen-up: z1 37.5%, z2 66.7% (chance: 50.0%" in result.format()


def test_a_detector_that_never_fires_has_no_pen_up_share(prepared, model_file):
    model = copy.deepcopy(model_file[1])  # the fixture's model stays as it is for the other tests
    lines = [item[0] for item in HandwritingDataset(prepared, "train", "paper")][:3]
    with torch.no_grad():
        for layer in model.core.recurrent[:2]:
            layer.bias[-1] = -1e4  # the detector's pre-activation: never above 0
    result = evaluate_lines(model, lines, slope=1.5)
    assert result.boundary_rate == [0.0, 0.0] and result.firings_on_pen_up == [None, None]
    assert "z1 no firings, z2 no firings" in result.format()
