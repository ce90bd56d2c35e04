"""The mixture-density head of the handwriting model (Graves 2013 §4.1): M bivariate Gaussians
with correlation for (dx, dy) plus a Bernoulli for end_of_stroke; a numerically stable
log-likelihood, Graves's sampling bias with a temperature, and the draw itself.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MixtureParams(NamedTuple):
    """Parameters of the next-point distribution, each with the leading shape (...) of the input."""

    logit_pi: Tensor  # (..., M) mixture weights before the softmax
    mu: Tensor  # (..., M, 2)
    log_sigma: Tensor  # (..., M, 2)
    rho: Tensor  # (..., M), strictly inside (-1, 1)
    logit_eos: Tensor  # (...) end-of-stroke probability before the sigmoid


# Bounds that keep the density finite whatever the network outputs: |rho| <= 1 - 1e-5 keeps
# 1 - rho^2 >= 2e-5, and log sigma in [-8, 8] keeps 1/sigma and sigma^2 within float32 range.
RHO_BOUND = 1.0 - 1e-5
LOG_SIGMA_MIN, LOG_SIGMA_MAX = -8.0, 8.0
LOG_2PI = math.log(2.0 * math.pi)


class MixtureDensityHead(nn.Module):
    """M bivariate Gaussians and an end-of-stroke Bernoulli (6M + 1 outputs), Graves (2013) Eq. 15-22."""

    def __init__(self, in_features: int, n_mixtures: int = 20) -> None:
        super().__init__()
        if n_mixtures < 1:
            raise ValueError(f"n_mixtures must be >= 1, got {n_mixtures}")
        self.n_mixtures = n_mixtures
        self.linear = nn.Linear(in_features, 6 * n_mixtures + 1)

    def forward(self, h: Tensor) -> MixtureParams:
        """Always in float32 or wider: under bf16 autocast rho = tanh(rho_hat) * (1 - 1e-5) rounds to
        exactly +-1 once |rho_hat| >~ 3.4, and the log-likelihood's log(1 - rho^2) becomes -inf."""
        with torch.autocast(h.device.type, enabled=False):
            return self.params(self.linear(h if h.dtype in (torch.float32, torch.float64) else h.float()))

    def params(self, out: Tensor) -> MixtureParams:
        """The mixture's parameters from the linear layer's output (..., 6M + 1)."""
        M = self.n_mixtures
        logit_pi, mu, log_sigma, rho_hat, logit_eos = out.split([M, 2 * M, 2 * M, M, 1], dim=-1)
        return MixtureParams(
            logit_pi=logit_pi,
            mu=mu.unflatten(-1, (M, 2)),
            log_sigma=log_sigma.unflatten(-1, (M, 2)).clamp(LOG_SIGMA_MIN, LOG_SIGMA_MAX),
            rho=torch.tanh(rho_hat) * RHO_BOUND,
            logit_eos=logit_eos.squeeze(-1),
        )


def mixture_log_likelihood(params: MixtureParams, target: Tensor) -> Tensor:
    """log p(target) in nats for each position: target (..., 3) = (dx, dy, end_of_stroke).

    Computed in log space throughout (log-sum-exp over components, log-sigmoid for the
    Bernoulli), so it stays finite for any finite parameters and targets.
    """
    if target.shape[-1] != 3 or target.shape[:-1] != params.logit_eos.shape:
        raise ValueError(f"target must have shape {tuple(params.logit_eos.shape) + (3,)}, got {tuple(target.shape)}")
    offsets, end_of_stroke = target[..., None, :2], target[..., 2]
    sigma_inv = torch.exp(-params.log_sigma)
    u = ((offsets - params.mu) * sigma_inv).clamp(-1e6, 1e6)  # standardised offsets (..., M, 2)
    u1, u2, rho = u[..., 0], u[..., 1], params.rho
    one_minus_rho2 = 1.0 - rho * rho
    z = u1 * u1 + u2 * u2 - 2.0 * rho * u1 * u2  # Graves Eq. 25
    log_normal = (-LOG_2PI - params.log_sigma.sum(-1) - 0.5 * torch.log(one_minus_rho2)
                  - z / (2.0 * one_minus_rho2))  # Eq. 24, in logs
    log_mixture = torch.logsumexp(F.log_softmax(params.logit_pi, dim=-1) + log_normal, dim=-1)
    log_bernoulli = (end_of_stroke * F.logsigmoid(params.logit_eos)
                     + (1.0 - end_of_stroke) * F.logsigmoid(-params.logit_eos))
    return log_mixture + log_bernoulli


def adjust(params: MixtureParams, bias: float = 0.0, temperature: float = 1.0) -> MixtureParams:
    """Graves's sampling bias (Eq. 61-62) and a temperature.

    bias b: sigma = exp(sigma_hat - b), pi = softmax(pi_hat * (1 + b)). temperature tau divides
    every logit (mixture weights and end of stroke) by tau and multiplies the covariance by tau.
    b = 0 and tau = 1 leave the distribution unchanged.
    """
    if not math.isfinite(bias) or bias < 0:
        raise ValueError(f"bias must be a finite number >= 0, got {bias!r}")
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return MixtureParams(
        logit_pi=params.logit_pi * (1.0 + bias) / temperature,
        mu=params.mu,
        log_sigma=params.log_sigma - bias + 0.5 * math.log(temperature),
        rho=params.rho,
        logit_eos=params.logit_eos / temperature,
    )


def sample_mixture(params: MixtureParams, bias: float = 0.0, temperature: float = 1.0,
                   generator: torch.Generator | None = None) -> Tensor:
    """Draw one (dx, dy, end_of_stroke) per position: returns (..., 3)."""
    params = adjust(params, bias, temperature)
    M = params.logit_pi.shape[-1]
    probs = torch.softmax(params.logit_pi, dim=-1).reshape(-1, M)
    component = torch.multinomial(probs, 1, generator=generator).reshape(params.logit_eos.shape)
    return sample_component(params, component, generator)


def sample_component(params: MixtureParams, component: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Draw (dx, dy, end_of_stroke) from the chosen Gaussian (component: (...) indices) and the
    end-of-stroke Bernoulli of already adjusted parameters: returns (..., 3)."""
    shape = params.logit_eos.shape
    pick = component[..., None]
    mu = params.mu.gather(-2, pick[..., None].expand(*shape, 1, 2)).squeeze(-2)
    sigma = params.log_sigma.gather(-2, pick[..., None].expand(*shape, 1, 2)).squeeze(-2).exp()
    rho = params.rho.gather(-1, pick).squeeze(-1)
    n1, n2 = torch.randn((2, *shape), generator=generator, dtype=mu.dtype, device=mu.device)
    dx = mu[..., 0] + sigma[..., 0] * n1
    dy = mu[..., 1] + sigma[..., 1] * (rho * n1 + torch.sqrt(1.0 - rho * rho) * n2)
    eos_probability = torch.sigmoid(params.logit_eos)
    end_of_stroke = (torch.rand(shape, generator=generator, dtype=mu.dtype, device=mu.device)
                     < eos_probability).to(mu.dtype)
    return torch.stack([dx, dy, end_of_stroke], dim=-1)
