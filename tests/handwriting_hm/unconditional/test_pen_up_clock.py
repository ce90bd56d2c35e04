"""A model whose z1 is the pen-up it reads (HandwritingConfig.layer1_boundaries = "pen-ups"): in training,
evaluation and sampling z1 is the pen-ups, the rate loss leaves it out, and people are told it is given."""
from __future__ import annotations

import json

import pytest
import torch

from handwriting_hm.cli import main
from handwriting_hm.hmlstm.detectors import rate_penalty
from handwriting_hm.unconditional.config import layer1_note
from handwriting_hm.unconditional.generate import generate, generate_reference
from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel, pen_ups_read, shift_inputs
from tests.handwriting_hm.test_stroke_boundaries import tiny_training


def clocked_config(**changes) -> HandwritingConfig:
    return HandwritingConfig(hidden_sizes=(6, 6, 6), embedding_size=6, n_mixtures=2, layer1_boundaries="pen-ups",
                             **changes)


def test_the_setting_is_checked_and_stored():
    config = clocked_config()
    assert HandwritingConfig.from_dict(config.to_dict()).pen_up_clock
    assert not HandwritingConfig().pen_up_clock and layer1_note(HandwritingConfig()) == ""
    assert "given, not learned" in layer1_note(config)
    with pytest.raises(ValueError, match="must be one of learned, pen-ups"):
        HandwritingConfig(layer1_boundaries="words")
    with pytest.raises(ValueError, match="which an LSTM has not"):
        HandwritingConfig(cell="lstm", hidden_sizes=(6, 6), layer1_boundaries="pen-ups")


@pytest.mark.parametrize("boundary_norm", [True, False])
def test_every_path_reads_z1_from_the_pen_ups(boundary_norm: bool):
    torch.manual_seed(0)
    offsets = torch.randn(2, 15, 3).clamp(-2, 2)
    offsets[..., 2] = (torch.arange(15) % 4 == 1).float()
    inputs = shift_inputs(offsets)
    clocked = HandwritingModel(clocked_config(boundary_norm=boundary_norm, boundary_bias=-3.0))
    free = HandwritingModel(HandwritingConfig(hidden_sizes=(6, 6, 6), embedding_size=6, n_mixtures=2,
                                              boundary_norm=boundary_norm, boundary_bias=-3.0))
    free.load_state_dict(clocked.state_dict())
    for impl in ("reference", "auto"):
        clocked.core.impl = free.core.impl = impl
        output = clocked(inputs)
        assert torch.equal(output.core.boundaries[..., 0], pen_ups_read(inputs)), impl
        assert not torch.equal(free(inputs).core.boundaries[..., 0], pen_ups_read(inputs)), impl  # bias -3: silent
        assert torch.allclose(output.params.mu, free(inputs, forced_z1=pen_ups_read(inputs)).params.mu), impl


@pytest.mark.parametrize("boundary_norm", [True, False])
def test_sampling_reads_z1_from_the_pen_ups_it_draws(boundary_norm: bool):
    torch.manual_seed(1)
    model = HandwritingModel(clocked_config(boundary_bias=0.5, boundary_norm=boundary_norm)).eval()
    generated = generate(model, 60, 2, generator=torch.Generator().manual_seed(3))
    assert generated.offsets[..., 2].sum() > 0  # the untrained model lifts the pen now and then
    # row j: what the layers did while reading point j
    assert torch.equal(generated.boundaries[..., 0], generated.offsets[..., 2])
    # one sample: the COPY-skipping stepper is bit for bit the reference loop, with the unnormalised boundary too
    fast = generate(model, 60, 1, generator=torch.Generator().manual_seed(4))
    reference = generate_reference(model, 60, 1, generator=torch.Generator().manual_seed(4))
    assert torch.equal(reference.offsets, fast.offsets) and torch.equal(reference.boundaries, fast.boundaries)
    assert fast.boundaries[..., 1].sum() > 0  # z2 fired, so the comparison covers layer 3's UPDATEs


def test_the_rate_loss_leaves_a_given_detector_out():
    torch.manual_seed(0)
    preactivations = torch.randn(2, 9, 2, requires_grad=True)
    boundaries = (torch.rand(2, 9, 2) < 0.5).float()
    boundaries[..., 1] *= boundaries[..., 0]  # z2 only where layer 2 computed
    loss = rate_penalty(preactivations, boundaries, 1.0, [0.3], z_on_copy="recompute", given=1)
    expected = (torch.sigmoid(2.0 * preactivations[..., 1]).mean() - 0.3) ** 2
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert torch.all(preactivations.grad[..., 0] == 0) and preactivations.grad[..., 1].abs().sum() > 0
    with pytest.raises(ValueError, match="2 target rates for 1 learned"):
        rate_penalty(preactivations, boundaries, 1.0, [0.3, 0.1], given=1)


@pytest.mark.slow
def test_a_clocked_run_trains_validates_and_evaluates_with_z1_at_the_pen_ups(tmp_path, capsys):
    common = tiny_training(tmp_path, "--max-steps", "4", "--eval-every", "2", "--impl", "auto",
                           "--layer1-boundaries", "pen-ups")
    run = tmp_path / "clocked"
    assert main([*common, "--run-dir", str(run), "--rate-targets", "0.05", "--rate-weight", "10"]) == 0
    validations = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["type"] == "val"]
    assert validations and all(r["z1_precision"] == 1.0 and r["z1_recall"] == 1.0 for r in validations)
    assert not any("val_oracle" in r for r in validations)  # the model's own regime, compared as usual
    data = common[common.index("--data") + 1]
    assert main(["evaluate", str(run / "best.pt"), "--data", data, "--split", "validation",
                 "--json", str(tmp_path / "eval.json")]) == 0
    assert "z1 is given, not learned" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval.json").read_text())["layer1_boundaries"] == "pen-ups"
    # one line each: rates for z1 too, the oracle beside the clock, the clock on an LSTM
    assert main([*common, "--run-dir", str(tmp_path / "a"), "--rate-targets", "0.05,0.01", "--rate-weight", "1"]) == 2
    assert "give the rates of z2 and above" in capsys.readouterr().err
    assert main([*common, "--run-dir", str(tmp_path / "b"), "--oracle-steps", "2"]) == 2
    assert main([*common, "--run-dir", str(tmp_path / "c"), "--cell", "lstm", "--hidden-sizes", "8,8"]) == 2
    assert "which an LSTM has not" in capsys.readouterr().err


def test_the_app_says_that_z1_is_given():
    from app.main import model_defaults
    from handwriting_hm.unconditional.model import LoadedModel
    torch.manual_seed(1)
    model = HandwritingModel(clocked_config()).eval()
    stats = {"mean": (0.0, 0.0), "std": (1.0, 1.0)}
    clocked = model_defaults(LoadedModel(model, stats, 1.0, {}))
    assert clocked.explain().startswith("z1 is given, not learned")
    free = HandwritingModel(HandwritingConfig(hidden_sizes=(6, 6, 6), embedding_size=6, n_mixtures=2)).eval()
    assert "given" not in model_defaults(LoadedModel(free, stats, 1.0, {})).explain()


def test_the_hard_rate_estimate_counts_firings_and_passes_the_soft_gradient():
    # every pre-activation just below the threshold: p = sigmoid(-0.2) = 0.45 everywhere, and nothing fires
    preactivations = torch.full((1, 10, 1), -0.1, requires_grad=True)
    boundaries = torch.zeros(1, 10, 1)
    soft = rate_penalty(preactivations, boundaries, 1.0, [0.45], z_on_copy="recompute")
    assert soft.item() < 1e-4  # the soft rate meets its target with no firing at all
    hard = rate_penalty(preactivations, boundaries, 1.0, [0.45], z_on_copy="recompute", estimate="hard")
    assert hard.item() == pytest.approx(0.45 ** 2)
    hard.backward()
    assert torch.all(preactivations.grad < 0)  # descent raises s_z towards firing
    with pytest.raises(ValueError, match="estimate must be one of soft, hard"):
        rate_penalty(preactivations, boundaries, 1.0, [0.45], estimate="exact")
