"""Generating handwriting one point at a time.

Step t reads the previous point (a zero vector at t = 0), updates the core, and draws point t
from the mixture-density head. The boundaries and operations returned are aligned with the
points: row j says what each layer did while READING point j (one extra core step after the
last point gives the last row), which is what a drawing of the boundaries on the ink needs.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..hmlstm.core import HMLSTM, StackedLSTM, check_slope, operations
from ..hmlstm.stepper import CopySkippingStepper, linear_for, refusal
from .model import HandwritingModel
from ..hmlstm.output import GatedOutput
from ..mixture import MixtureParams, adjust, sample_component, sample_mixture


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
    weight = next(model.parameters())
    core = model.core
    state = core.initial_state(n_samples)
    x = weight.new_zeros(n_samples, 3)
    points, boundaries = [], []
    clocked = model.config.pen_up_clock  # z1 is the pen-up of the point read (HandwritingConfig.layer1_boundaries)
    for t in range(n_points + 1):
        if clocked:
            state, z, _ = core.step_with_preactivations(x, state, slope, forced_z1=x[:, 2:3])
        else:
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


# ----------------------------------------------------------------------------- the fast sampler
#
# generate() does what generate_reference() does, with the reference's own operations in the
# same order; it only leaves out work whose result the reference throws away:
# - a layer that COPYs in every row computes nothing (the reference computes all its gates,
#   then multiplies them by zero);
# - where rows differ, a layer computes only its rows that FLUSH or UPDATE, and its top-down
#   term only for the rows that FLUSH (gathered, computed, scattered back);
# - the output module's W^e_l h^l is recomputed only when layer l's h changed;
# - for a batch, the products of a few rows (the core's, the output module's and the head's) go
#   through few_rows.c (hmlstm/stepper.py), which rounds differently; with one sample
#   they are torch's, as in the reference, so that it stays bit for bit;
# - torch.multinomial's one draw is made the way it makes it (argmax of p / Exp(1)), without
#   its argument checks, which cost more than the rest of the draw at this size.


@torch.inference_mode()
def generate(model: HandwritingModel, n_points: int, n_samples: int = 1, bias: float = 0.0,
             temperature: float = 1.0, slope: float = 1.0,
             generator: torch.Generator | None = None) -> Generated:
    """Sample `n_samples` sequences of `n_points` points; the same contract as generate_reference.

    With step boundaries (the default) the result equals generate_reference's for the same
    model and generator: bit for bit for one sample; for a batch, products over fewer rows may
    round differently (in float64 the points agree to 1e-10 and the boundaries exactly). With Bernoulli boundaries it is the same distribution, but a skipped
    layer draws no boundary, so the global random stream differs. Soft boundaries mix the three
    operations and leave nothing to skip, and the stepper does not recompute z on COPY (stepper.refusal):
    those run the reference loop.
    """
    check_generation_args(n_points, n_samples)
    core = model.core
    if isinstance(core, HMLSTM):
        check_slope(slope)
        if refusal(core) is not None:  # what the stepper does not run, the reference loop does
            return generate_reference(model, n_points, n_samples, bias, temperature, slope, generator)
        stepper: CopySkippingStepper | _LSTMStepper = CopySkippingStepper(core, n_samples, slope)
    else:
        stepper = _LSTMStepper(core, n_samples)
    clocked = model.config.pen_up_clock  # z1 is the pen-up of the point read (an HM-LSTM's only)
    linear = linear_for(n_samples)
    output = _CachedOutput(model.output, stepper, linear)
    head = model.head
    head_weights = (head.linear.weight, head.linear.bias)
    with _intra_op_threads(1):
        points = stepper.hidden.new_empty(n_samples, n_points, 3)
        boundaries = stepper.hidden.new_zeros(n_samples, n_points + 1, core.num_detectors)
        x = stepper.hidden.new_zeros(n_samples, 3)
        for t in range(n_points + 1):
            # step t reads point t-1 (the zero vector at t = 0); with a pen-up clock, z1 is its pen-up
            changed = (stepper.step(x, boundaries[:, t], forced_z1=x[:, 2:3]) if clocked
                       else stepper.step(x, boundaries[:, t]))
            if t == n_points:
                break
            x = _sample_mixture(head.params(linear(output(changed), *head_weights)), bias, temperature, generator)
            points[:, t] = x
    read_points = boundaries[:, 1:].contiguous()
    codes = operations(read_points, initial_z=boundaries[:, 0])
    return Generated(points, read_points, codes, count_operations(codes))


@contextmanager
def _intra_op_threads(count: int) -> Iterator[None]:
    """Run with `count` intra-op threads. The products here are (n, 400) x (400, 1601): too small
    to share between cores, and on a busy machine a second thread that has to wait for a core
    makes every product wait (docs/speed.md has the measurement)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _LSTMStepper:
    """StackedLSTM.step on preallocated state (every layer updates at every step)."""

    def __init__(self, core: StackedLSTM, n_samples: int) -> None:
        weight = core.layers[0].weight_ih_l0
        self.sizes = core.hidden_sizes
        self.hidden = weight.new_zeros(n_samples, sum(self.sizes))
        self.h = list(self.hidden.split(self.sizes, dim=1))
        self.c = [weight.new_zeros(n_samples, size) for size in self.sizes]
        self.layers = [(layer.weight_ih_l0, layer.bias_ih_l0, layer.weight_hh_l0, layer.bias_hh_l0)
                       for layer in core.layers]
        self.norms = None if core.norms is None else [(norm.normalized_shape, norm.weight, norm.bias, norm.eps)
                                                      for norm in core.norms]

    def step(self, x: Tensor, z_t: Tensor) -> list[bool]:
        """Read x (n, 3); z_t (n, 0) has nothing to write. Every layer's h changes."""
        h_below = x
        for l, (weight_ih, bias_ih, weight_hh, bias_hh) in enumerate(self.layers):
            gates = F.linear(h_below, weight_ih, bias_ih) + F.linear(self.h[l], weight_hh, bias_hh)
            if self.norms is not None:
                gates = F.layer_norm(gates, *self.norms[l])
            i, f, g, o = gates.chunk(4, dim=1)
            self.c[l] = torch.sigmoid(f) * self.c[l] + torch.sigmoid(i) * torch.tanh(g)
            self.h[l].copy_(torch.sigmoid(o) * torch.tanh(self.c[l]))
            h_below = self.h[l]
        return [True] * len(self.sizes)


class _CachedOutput:
    """GatedOutput on a stepper's h, recomputing W^e_l h^l only for the layers whose h changed."""

    def __init__(self, output: GatedOutput, stepper: CopySkippingStepper | _LSTMStepper,
                 linear: Callable[..., Tensor] = F.linear) -> None:
        self.stepper = stepper
        self.linear = linear
        self.gate = (output.gate.weight, output.gate.bias)
        self.embed = [(layer.weight, layer.bias) for layer in output.embed]
        self.embedded = [linear(h, *embed) for h, embed in zip(stepper.h, self.embed)]

    def __call__(self, changed: list[bool]) -> Tensor:
        for l, layer_changed in enumerate(changed):
            if layer_changed:
                self.embedded[l] = self.linear(self.stepper.h[l], *self.embed[l])
        gates = torch.sigmoid(F.linear(self.stepper.hidden, *self.gate))  # g^l from all of [h^1; ...; h^L]
        return F.relu(sum(gates[:, l:l + 1] * embedded for l, embedded in enumerate(self.embedded)))


def _sample_mixture(params: MixtureParams, bias: float, temperature: float,
                    generator: torch.Generator | None) -> Tensor:
    """output.sample_mixture with torch.multinomial's draw of one component written out.

    multinomial(p, 1) returns argmax(p / q) with q ~ Exp(1) drawn from the generator (the
    exponential form of the Gumbel-max trick); drawing q the same way consumes the same random
    numbers, so the components, and everything drawn after them, are the same.
    """
    params = adjust(params, bias, temperature)
    probs = torch.softmax(params.logit_pi, dim=-1)
    component = (probs / torch.empty_like(probs).exponential_(1, generator=generator)).argmax(dim=-1)
    return sample_component(params, component, generator)
