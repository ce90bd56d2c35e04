"""Generating handwriting one point at a time.

Step t reads the previous point (a zero vector at t = 0), updates the core, and draws point t
from the mixture-density head. The boundaries and operations returned are aligned with the
points: row j says what each layer did while READING point j (one extra core step after the
last point gives the last row), which is what a drawing of the boundaries on the ink needs.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .core import operations
from .model import HandwritingModel
from .output import sample_mixture


class Generated(NamedTuple):
    offsets: Tensor  # (N, T, 3): dx, dy (normalised, as the model sees them) and end_of_stroke
    boundaries: Tensor  # (N, T, L-1): z of layers 1..L-1 while reading point t
    operations: Tensor  # (N, T, L): COPY / UPDATE / FLUSH codes of every layer while reading point t
    counts: Tensor  # (N, L, 3): how many COPY, UPDATE and FLUSH each layer did over the T points


def check_generation_args(n_points: int, n_samples: int) -> None:
    if not isinstance(n_points, int) or n_points < 1:
        raise ValueError(f"n_points must be a whole number >= 1, got {n_points!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a whole number >= 1, got {n_samples!r}")


def count_operations(codes: Tensor) -> Tensor:
    """(N, T, L) operation codes -> (N, L, 3) counts of COPY, UPDATE, FLUSH."""
    return torch.nn.functional.one_hot(codes, 3).sum(dim=1)


@torch.no_grad()
def generate_reference(model: HandwritingModel, n_points: int, n_samples: int = 1, bias: float = 0.0,
                       temperature: float = 1.0, slope: float = 1.0,
                       generator: torch.Generator | None = None) -> Generated:
    """The plain loop: every gate of every layer at every step. The specification for faster samplers."""
    check_generation_args(n_points, n_samples)
    device = next(model.parameters()).device
    core = model.core
    state = core.initial_state(n_samples, device=device)
    x = torch.zeros(n_samples, 3, device=device)
    points, boundaries = [], []
    for t in range(n_points + 1):
        state, z = core.step(x, state, slope)
        boundaries.append(z)  # step t reads point t-1 (the zero vector at t = 0)
        if t == n_points:
            break
        x = sample_mixture(model.head(model.output(state.h)), bias, temperature, generator)
        points.append(x)
    read_zero, *read_points = boundaries
    boundaries_t = torch.stack(read_points, dim=1)
    codes = operations(boundaries_t, initial_z=read_zero)
    return Generated(torch.stack(points, dim=1), boundaries_t, codes, count_operations(codes))


generate = generate_reference  # the public entry point; the COPY-skipping sampler replaces it
