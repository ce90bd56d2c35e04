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

from ..hmlstm.core import HMLSTM, StackedLSTM, check_slope, hard_sigmoid, operations
from ..hmlstm.paths.few_rows import times, times_transposed
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
#   through few_rows.c (hmlstm/few_rows.py), which rounds differently; with one sample
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
    operations and leave nothing to skip: they run the reference loop.
    """
    check_generation_args(n_points, n_samples)
    core = model.core
    if isinstance(core, HMLSTM):
        check_slope(slope)
        if core.boundary_mode == "soft":
            return generate_reference(model, n_points, n_samples, bias, temperature, slope, generator)
        stepper: _HMLSTMStepper | _LSTMStepper = _HMLSTMStepper(core, n_samples, slope)
    else:
        stepper = _LSTMStepper(core, n_samples)
    linear = _linear_for(n_samples)
    output = _CachedOutput(model.output, stepper, linear)
    head = model.head
    head_weights = (head.linear.weight, head.linear.bias)
    with _intra_op_threads(1):
        points = stepper.hidden.new_empty(n_samples, n_points, 3)
        boundaries = stepper.hidden.new_zeros(n_samples, n_points + 1, core.num_detectors)
        x = stepper.hidden.new_zeros(n_samples, 3)
        for t in range(n_points + 1):
            changed = stepper.step(x, boundaries[:, t])  # step t reads point t-1 (the zero vector at t = 0)
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


class _HMLSTMStepper:
    """HMLSTM.step on preallocated state, computing nothing for a layer that COPYs in every row."""

    def __init__(self, core: HMLSTM, n_samples: int, slope: float) -> None:
        weight = core.recurrent[0].weight
        self.sizes = core.hidden_sizes
        self.slope = slope
        self.mode = core.boundary_mode
        # every layer's h side by side, as the output module's gate reads them; h[l] are views
        self.hidden = weight.new_zeros(n_samples, sum(self.sizes))
        self.h = list(self.hidden.split(self.sizes, dim=1))
        self.c = [weight.new_zeros(n_samples, size) for size in self.sizes]
        self.z = weight.new_zeros(n_samples, core.num_detectors)
        self.fired = [(False, False)] * core.num_detectors  # per detector: any row fired, every row fired
        # the weights, read once: attribute look-ups on modules cost as much as a small product
        self.recurrent = [(layer.weight, layer.bias) for layer in core.recurrent]
        self.top_down = [layer.weight for layer in core.top_down]
        self.bottom_up = [layer.weight for layer in core.bottom_up]
        self.norms = None if core.norms is None else [(norm.normalized_shape, norm.weight, norm.bias, norm.eps)
                                                      for norm in core.norms]
        self.linear = _linear_for(n_samples)

    def step(self, x: Tensor, z_t: Tensor) -> list[bool]:
        """Read x (n, 3); write z_t (n, L-1), zeros on entry. Returns, per layer, whether its h may have changed."""
        changed, fired = [], []
        h_below, z_below = x, None  # h^0 = x_t, z^0 = 1 (None: ones)
        below_any = below_all = True  # whether any / every row's z_t^{l-1} is 1
        for l, size in enumerate(self.sizes):
            top = l == len(self.sizes) - 1  # the top layer has no z
            z_prev = None if top else self.z[:, l:l + 1]
            prev_any, prev_all = (False, False) if top else self.fired[l]
            if not prev_any and not below_any:  # COPY in every row: h, c and z (= 0) stay as they are
                changed.append(False)
                fired.append((False, False))
                h_below, z_below = self.h[l], z_t[:, l:l + 1]
                continue
            # the rows that compute: all, or, where rows differ, those that FLUSH (z^l_{t-1} = 1) or
            # UPDATE (z^{l-1}_t = 1); the others COPY and keep h, c and z (= 0) as they are
            rows = None if prev_all or below_all else (z_below if top else z_prev + z_below).flatten().nonzero().flatten()
            pick = (lambda t: t) if rows is None else (lambda t: t.index_select(0, rows))
            # Eq. 5, term by term as in HMLSTM.step; a term gated by zero adds zero, so it is computed
            # only for the rows whose gate is one
            linear = self.linear
            s = linear(pick(self.h[l]), *self.recurrent[l])
            if prev_all:
                s = s + linear(self.h[l + 1], self.top_down[l])
            elif prev_any:
                flushing = pick(z_prev).flatten().nonzero().flatten()
                s.index_add_(0, flushing, linear(pick(self.h[l + 1]).index_select(0, flushing), self.top_down[l]))
            bottom_up = linear(pick(h_below), self.bottom_up[l])
            s = s + (bottom_up if z_below is None else pick(z_below) * bottom_up)
            if self.norms is not None:
                s = F.layer_norm(s, *self.norms[l])
            f, i, o, g = s[:, :4 * size].chunk(4, dim=1)
            f, i, o, g = torch.sigmoid(f), torch.sigmoid(i), torch.sigmoid(o), torch.tanh(g)
            if prev_all:  # Eq. 2, FLUSH
                c = i * g
            elif not prev_any:  # UPDATE in every computing row
                c = f * pick(self.c[l]) + i * g
            else:  # FLUSH where z^l_{t-1} = 1, UPDATE in the other computing rows
                flush = pick(z_prev)
                c = flush * (i * g) + (1 - flush) * (f * pick(self.c[l]) + i * g)
            h = o * torch.tanh(c)  # Eq. 3
            changed.append(True)
            if not top:
                z_tilde = hard_sigmoid(self.slope * s[:, 4 * size:])  # Eq. 8-9
                z = (z_tilde > 0.5).to(z_tilde.dtype) if self.mode == "step" else torch.bernoulli(z_tilde)
                if rows is None:
                    z_t[:, l:l + 1] = z
                else:  # the COPY rows keep z = 0, as z_t already holds
                    z_t[:, l:l + 1].index_copy_(0, rows, z)
                fired.append(_any_all(z_t[:, l:l + 1]))
                below_any, below_all = fired[-1]
                h_below, z_below = self.h[l], z_t[:, l:l + 1]
            if rows is None:
                self.c[l] = c
                self.h[l].copy_(h)
            else:
                self.c[l].index_copy_(0, rows, c)
                self.h[l].index_copy_(0, rows, h)
        self.z, self.fired = z_t, fired
        return changed


def _few_row_linear() -> Callable[..., Tensor]:
    """F.linear through few_rows.c: its tiles from three rows (with each weight's transpose, made on first use),
    its 2-row kernel below (hmlstm/few_rows.py)."""
    transposed: dict[int, Tensor] = {}

    def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        if x.shape[0] >= 3:
            weight_t = transposed.get(weight.data_ptr())
            if weight_t is None:
                weight_t = transposed[weight.data_ptr()] = weight.t().contiguous()
            y = times(x, weight_t)
        else:
            y = times_transposed(x, weight)
        return y if bias is None else y.add_(bias)
    return linear


def _linear_for(n_samples: int) -> Callable[..., Tensor]:
    """torch's F.linear for one sample (bit for bit with generate_reference), else few_rows.c's products."""
    return F.linear if n_samples == 1 else _few_row_linear()


def _any_all(z: Tensor) -> tuple[bool, bool]:
    """Whether any and whether every row's boundary fired: one read of z for both."""
    values = z.flatten().tolist()
    return any(values), all(values)


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

    def __init__(self, output: GatedOutput, stepper: _HMLSTMStepper | _LSTMStepper,
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
