"""The gated output module, the mixture-density head and the softmax head."""
import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from handwriting_hm.hmlstm.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
from handwriting_hm.unconditional.model import (HandwritingConfig, HandwritingModel, load_handwriting_model, shift_inputs)
from handwriting_hm.hmlstm.output import GatedOutput, SoftmaxHead
from handwriting_hm.mixture import (MixtureDensityHead, MixtureParams, adjust,
                                   mixture_log_likelihood, sample_mixture)


def random_params(shape=(5,), M=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return MixtureParams(
        logit_pi=torch.randn(*shape, M, generator=g, dtype=dtype),
        mu=torch.randn(*shape, M, 2, generator=g, dtype=dtype),
        log_sigma=torch.randn(*shape, M, 2, generator=g, dtype=dtype) * 0.5,
        rho=torch.tanh(torch.randn(*shape, M, generator=g, dtype=dtype)),
        logit_eos=torch.randn(*shape, generator=g, dtype=dtype),
    )


def test_log_likelihood_matches_scipy():
    params = random_params(shape=(6,), M=4)
    g = torch.Generator().manual_seed(1)
    target = torch.cat([torch.randn(6, 2, generator=g, dtype=torch.float64),
                        (torch.rand(6, 1, generator=g) > 0.5).double()], dim=1)
    ours = mixture_log_likelihood(params, target)
    for n in range(6):
        pi = torch.softmax(params.logit_pi[n], 0).numpy()
        density = 0.0
        for j in range(4):
            s1, s2 = params.log_sigma[n, j].exp().numpy()
            r = params.rho[n, j].item()
            cov = [[s1 * s1, r * s1 * s2], [r * s1 * s2, s2 * s2]]
            density += pi[j] * multivariate_normal(params.mu[n, j].numpy(), cov).pdf(target[n, :2].numpy())
        e = 1 / (1 + math.exp(-params.logit_eos[n].item()))
        expected = math.log(density) + math.log(e if target[n, 2] == 1 else 1 - e)
        assert ours[n].item() == pytest.approx(expected, rel=1e-9)


def test_log_likelihood_is_finite_on_extreme_inputs():
    M = 3
    head = MixtureDensityHead(4, M)
    with torch.no_grad():
        head.linear.weight.fill_(1e4)  # saturates every output
    params = head(torch.tensor([[1.0, -1.0, 1e3, -1e3], [1e6, 1e6, 1e6, 1e6]]))
    target = torch.tensor([[1e8, -1e8, 1.0], [0.0, 0.0, 0.0]])
    value = mixture_log_likelihood(params, target)
    assert torch.isfinite(value).all()
    extreme = MixtureParams(torch.full((1, M), 1e30), torch.full((1, M, 2), -1e30), torch.full((1, M, 2), -8.0),
                            torch.full((1, M), 1 - 1e-5), torch.full((1,), -1e30))
    assert torch.isfinite(mixture_log_likelihood(extreme, torch.tensor([[1e30, 1e30, 1.0]]))).all()
    loss = -mixture_log_likelihood(head(torch.randn(2, 4) * 1e3), torch.randn(2, 3)).sum()
    loss.backward()
    assert torch.isfinite(head.linear.weight.grad).all()


def test_samples_match_their_parameters():
    M = 1
    params = MixtureParams(torch.zeros(1, M), torch.tensor([[[0.5, -1.0]]]), torch.tensor([[[math.log(2.0), math.log(0.5)]]]),
                           torch.tensor([[0.6]]), torch.tensor([0.4]))
    n = 200_000
    expanded = MixtureParams(*(p.expand(n, *p.shape[1:]) for p in params))
    draws = sample_mixture(expanded, generator=torch.Generator().manual_seed(0)).double().numpy()
    assert draws[:, :2].mean(0) == pytest.approx([0.5, -1.0], abs=0.02)
    cov = np.cov(draws[:, :2].T)
    assert cov == pytest.approx(np.array([[4.0, 0.6 * 2 * 0.5], [0.6 * 2 * 0.5, 0.25]]), abs=0.03)
    assert draws[:, 2].mean() == pytest.approx(1 / (1 + math.exp(-0.4)), abs=0.005)


def test_mixture_weights_pick_components_in_proportion():
    params = MixtureParams(torch.log(torch.tensor([[0.2, 0.8]])), torch.tensor([[[-10.0, 0.0], [10.0, 0.0]]]),
                           torch.full((1, 2, 2), -3.0), torch.zeros(1, 2), torch.zeros(1))
    n = 50_000
    draws = sample_mixture(MixtureParams(*(p.expand(n, *p.shape[1:]) for p in params)),
                           generator=torch.Generator().manual_seed(0))
    assert (draws[:, 0] > 0).double().mean().item() == pytest.approx(0.8, abs=0.01)


def test_no_bias_and_unit_temperature_leave_the_distribution_unchanged():
    params = random_params()
    for original, adjusted in zip(params, adjust(params, 0.0, 1.0)):
        assert torch.equal(original, adjusted)
    a = sample_mixture(params, generator=torch.Generator().manual_seed(3))
    b = sample_mixture(params, 0.0, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_bias_sharpens_as_graves_writes_it():
    params = random_params()
    biased = adjust(params, bias=1.5)
    torch.testing.assert_close(biased.log_sigma, params.log_sigma - 1.5)
    torch.testing.assert_close(torch.softmax(biased.logit_pi, -1), torch.softmax(params.logit_pi * 2.5, -1))
    hot = adjust(params, temperature=2.0)
    torch.testing.assert_close(hot.log_sigma.exp() ** 2, params.log_sigma.exp() ** 2 * 2.0)


@pytest.mark.parametrize("bias, temperature, message", [(-1.0, 1.0, "bias"), (float("nan"), 1.0, "bias"),
                                                        (0.0, 0.0, "temperature"), (0.0, -2.0, "temperature")])
def test_bad_sampling_parameters_are_clear_errors(bias, temperature, message):
    with pytest.raises(ValueError, match=message):
        sample_mixture(random_params(), bias, temperature)


def test_target_shape_is_checked():
    with pytest.raises(ValueError, match="target must have shape"):
        mixture_log_likelihood(random_params(shape=(5,)), torch.zeros(4, 3))


def test_gated_output_is_relu_of_gated_sum():
    torch.manual_seed(0)
    module = GatedOutput((3, 2), 4).double()
    h1, h2 = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    gates = torch.sigmoid(torch.cat([h1, h2], -1) @ module.gate.weight.T + module.gate.bias)
    expected = torch.relu(gates[:, :1] * (h1 @ module.embed[0].weight.T + module.embed[0].bias)
                          + gates[:, 1:] * (h2 @ module.embed[1].weight.T))
    torch.testing.assert_close(module([h1, h2]), expected)
    with pytest.raises(ValueError, match="expected 2 layers"):
        module([h1])


def test_softmax_head_log_likelihood():
    head = SoftmaxHead(4, 6)
    logits = head(torch.randn(2, 3, 4))
    target = torch.randint(0, 6, (2, 3))
    expected = torch.log_softmax(logits, -1).gather(-1, target[..., None]).squeeze(-1)
    torch.testing.assert_close(SoftmaxHead.log_likelihood(logits, target), expected)


# ----------------------------------------------------------------------------- the handwriting model

def small_config(**changes):
    return HandwritingConfig(**{"hidden_sizes": (8, 6, 5), "embedding_size": 7, "n_mixtures": 3, **changes})


def test_sequence_log_likelihood_sums_valid_points_only():
    torch.manual_seed(0)
    model = HandwritingModel(small_config())
    offsets = torch.randn(2, 9, 3)
    offsets[..., 2] = (offsets[..., 2] > 0).float()
    lengths = torch.tensor([9, 4])
    total, _ = model.sequence_log_likelihood(offsets, lengths)
    alone, _ = model.sequence_log_likelihood(offsets[1:, :4])
    torch.testing.assert_close(total[1], alone[0])
    output = model(shift_inputs(offsets[:1]))
    from handwriting_hm.mixture import mixture_log_likelihood as ll
    torch.testing.assert_close(total[0], ll(output.params, offsets[:1]).sum())


def test_first_input_is_a_zero_vector():
    offsets = torch.arange(12.0).view(1, 4, 3)
    shifted = shift_inputs(offsets)
    assert torch.equal(shifted[0, 0], torch.zeros(3)) and torch.equal(shifted[0, 1:], offsets[0, :3])


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["hm-lstm", "lstm"])
def test_model_learns_a_simple_stroke_pattern(cell):
    torch.manual_seed(0)
    model = HandwritingModel(small_config(cell=cell))
    offsets = torch.zeros(4, 30, 3)
    offsets[..., 0] = 1.0  # a straight line, pen lifted every 10 points
    offsets[:, 9::10, 2] = 1.0
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = -model.sequence_log_likelihood(offsets)[0].mean() / 30
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        first = loss.item() if first is None else first
    assert loss.item() < first - 1.0


def test_load_handwriting_model_round_trip_and_errors(tmp_path):
    config = small_config()
    model = HandwritingModel(config)
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "handwriting",
                           "config": config.to_dict(), "model": {k: v.half() for k, v in model.state_dict().items()},
                           "metadata": {"stats": {"mean": [1.0, 2.0], "std": [3.0, 4.0]}, "slope": 2.0}})
    loaded = load_handwriting_model(path)
    assert loaded.stats == {"mean": (1.0, 2.0), "std": (3.0, 4.0)} and loaded.slope == 2.0
    assert not loaded.model.training
    torch.testing.assert_close(loaded.model.head.linear.weight, model.head.linear.weight.half().float())

    with pytest.raises(ValueError, match="missing|not found|no such|does not exist"):
        load_handwriting_model(tmp_path / "absent.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_handwriting_model(tmp_path / "garbage.pt")
    wrong = tmp_path / "wrong.pt"
    save_checkpoint(wrong, {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "handwriting",
                            "config": small_config(hidden_sizes=(4, 4)).to_dict(), "model": model.state_dict(),
                            "metadata": {"stats": {"mean": [0, 0], "std": [1, 1]}}})
    with pytest.raises(ValueError, match="not a usable handwriting model"):
        load_handwriting_model(wrong)


def test_config_round_trips_through_a_plain_dict_and_refuses_unknown_keys():
    config = small_config(cell="lstm")
    stored = config.to_dict()
    assert stored["hidden_sizes"] == [8, 6, 5] and HandwritingConfig.from_dict(stored) == config
    assert HandwritingConfig.from_dict({"n_mixtures": 4}) == HandwritingConfig(n_mixtures=4)
    with pytest.raises(ValueError, match="unknown HandwritingConfig settings: depth"):
        HandwritingConfig.from_dict({**stored, "depth": 3})


def test_mixture_head_under_bf16_autocast_keeps_rho_inside_the_unit_interval():
    """The head runs in float32 under autocast: in bf16, tanh(rho_hat) rounds to exactly +-1 for
    |rho_hat| > ~3.4 and the log-likelihood is -inf / NaN."""
    torch.manual_seed(0)
    head = MixtureDensityHead(8, n_mixtures=2)
    with torch.no_grad():
        head.linear.bias[5 * 2:6 * 2] = 6.0  # rho_hat = 6 for both components
    h = torch.zeros(3, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        params = head(h)
        log_likelihood = mixture_log_likelihood(params, torch.tensor([[0.1, -0.2, 0.0]] * 3))
    assert params.rho.dtype == torch.float32 and bool((params.rho.abs() < 1).all())
    assert torch.isfinite(log_likelihood).all()
