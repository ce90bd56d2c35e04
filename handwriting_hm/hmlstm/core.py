"""The Hierarchical Multiscale LSTM (Chung, Ahn & Bengio, ICLR 2017, §3), written to read like the paper.

This is the reference implementation: a plain loop over time and layers, every equation
visible. It is the specification that faster paths are tested against.

Layer l = 1..L at step t (Eq. 1) computes

    h_t^l, c_t^l, z_t^l = f(c_{t-1}^l, h_{t-1}^l, h_t^{l-1}, h_{t-1}^{l+1}, z_{t-1}^l, z_t^{l-1})

and does one of three operations, chosen by two binary boundary states:

    FLUSH   z_{t-1}^l = 1                    c = i*g                (a segment just ended here: start anew)
    UPDATE  z_{t-1}^l = 0, z_t^{l-1} = 1     c = f*c + i*g          (the layer below finished a segment)
    COPY    z_{t-1}^l = 0, z_t^{l-1} = 0     c, h (and z) unchanged (nothing to read yet)

Layer 1 reads h^0 = x_t with z^0 = 1, so it never COPYs. The top layer has no boundary
detector (its z is always 0), so it never FLUSHes and has no top-down input.

Three choices the paper leaves open, made here:
- A COPY step computes nothing, so it also keeps its boundary: z_t^l = z_{t-1}^l = 0. (Every
  public implementation recomputes z on COPY; that makes COPY cost as much as UPDATE, which is
  against the paper's point.) This does not tie a layer's boundaries to those of the layer
  below: on a FLUSH step z is recomputed whatever the layer below did, so a layer can end a
  segment at a step where the layer below did not end one.
- Layer normalisation, when on, normalises the whole pre-activation s_t^l of Eq. 5 (one
  LayerNorm over its 4*H + 1 outputs, after the three terms are added), the boundary's included.
  Normalising the boundary pre-activation keeps it at unit scale, so the straight-through window
  |a*s| < 1 selects: left raw, s_z stays tiny, every z passes gradient at every step, and on
  IAM-OnDB the gradient norm of a layer-normalised 3x128 model grew to 4e5 in the first step
  and overflowed by the tenth (with it normalised: 1.5, and training proceeds).
- What a COPY row passes back (`copy_gradient`). Eq. 2 is written here as one sum,
  c = flush*(i*g) + update*(f*c + i*g) + copy*c, so that the straight-through gradient reaches
  the boundaries through the choice of operation. "mixed" differentiates that sum at every row,
  which on a COPY row needs the gates it never computed. "straight" (the default) follows the
  paper's "COPY needs none of the gates": a row that COPYs exactly passes its gradient straight
  to its previous state and none to the boundaries that chose COPY; every other row keeps the
  full gradient. With "straight" training skips COPY rows altogether (sparse.py); with "mixed"
  a COPY row still runs its recurrent product, forward only. The forward pass is the same
  either way, so a model trained with one runs with the other.
  With "mixed", the z a COPY row keeps (z_t = copy*z_{t-1} + (1-copy)*z^_t) passes no gradient
  back to z_{t-1} through its first term. With binary z that term is 0 in the forward pass
  (COPY needs z_{t-1} = 0), so only the gradient changes: left in, a COPY row with z^_t = 1
  gives d z_t / d z_{t-1} = copy + z^_t = 2, which doubles the gradient at every such step. On
  IAM-OnDB (3x256, 200-point windows, one Adam step from the initial weights) that made the
  gradient norm 4e9 instead of 1.3 and every 3x256 "mixed" run diverged; the boundaries still
  learn from the choice of operation, whose gradient is unchanged.

What a COPY row does with z (`z_on_copy`) and the gradient estimators, one line each:
- "keep" + "straight": z_t = z_{t-1} on COPY; a COPY row passes gradient only to its previous state.
- "keep" + "mixed": as "straight" forward; backward, the choice of COPY passes gradient to the z's
  that made it (the kept z's own chain is cut, see above).
- "recompute" + "exact": the paper's Eq. 5-9 as written: z_t = binarise(hard_sigm(a*s_t)) at every
  step, on a COPY row from s_t = U_l^l h_{t-1} + b (both gated terms are off); backward, the exact
  derivative of Eq. 2-9 with the straight-through estimator. No z chain runs along a COPY run, so
  nothing doubles.
- "recompute" + "straight": z recomputed as in "exact"; a COPY row passes no gradient to the z's
  that chose it.
The reference loop and the sparse path's C loop run "recompute"; the C loop computes a COPY row's
s = U_l^l h_{t-1} + b once per COPY run (h_{t-1} does not change along it) and its z at every step.

The boundary unit may also sit outside the layer norm (`boundary_norm=False`): the LayerNorm then
covers the 4*H gate pre-activations only and the boundary pre-activation keeps its raw sum and
its own bias (the recurrent map's last bias, started at `boundary_bias`). Adam moves a normalised
unit's bias by about the learning rate per step, so it can leave the straight-through window
within a few thousand steps and never come back; the raw unit's scale is the weights' own. The
reference loop and the sparse path's C loop run it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .paths.few_rows import library as few_rows_library

BOUNDARY_MODES = ("step", "bernoulli", "soft")
IMPLEMENTATIONS = ("reference", "fused", "sparse", "triton", "auto")  # how HMLSTM.forward runs; see resolve_impl
COPY_GRADIENTS = ("straight", "mixed", "exact")  # what a COPY row passes back: see the module docstring
Z_ON_COPY = ("keep", "recompute")  # what a COPY row does with its boundary: see the module docstring
GRADIENTS_FOR = {"keep": ("straight", "mixed"), "recompute": ("straight", "exact")}
LEARNING_ONLY = ("copy_gradient", "boundary_bias")  # settings that change the gradient or the init, not the function: a run may start
                                    # from weights trained with another value (--init-from)
COPY, UPDATE, FLUSH = 0, 1, 2
OPERATION_NAMES = ("COPY", "UPDATE", "FLUSH")

# A slope is a number, or a one-element tensor on the input's device. The tensor is for a training step
# replayed from a CUDA graph: the graph reads the tensor, which the trainer refills before each replay,
# where a number would be frozen into the graph at capture.
Slope = Union[float, Tensor]


# ----------------------------------------------------------------------------- boundary detector

def hard_sigmoid(x: Tensor) -> Tensor:
    """hard_sigm(x) = max(0, min(1, (x + 1) / 2)) (Eq. 8, with the slope already applied)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


class _BoundaryFunction(torch.autograd.Function):
    """z = binarise(hard_sigm(a*s)) forward; the hard sigmoid's gradient backward (straight-through).

    The backward pass is the same in all three modes: d z / d s = a/2 where |a*s| < 1, else 0.
    Only the forward pass differs: step (z~ > 0.5), Bernoulli sample, or soft (z~ itself).
    """

    @staticmethod
    def forward(ctx, s: Tensor, slope: Slope, mode: str) -> Tensor:  # type: ignore[override]
        z_tilde = hard_sigmoid(slope * s)  # Eq. 8
        if mode == "step":
            z = (z_tilde > 0.5).to(s.dtype)  # Eq. 9, deterministic
        elif mode == "bernoulli":  # Eq. 9, sampled: one uniform per row, which faster paths draw alike
            z = (torch.rand_like(z_tilde) < z_tilde).to(s.dtype)
        else:
            z = z_tilde  # soft boundaries: no binarisation
        ctx.save_for_backward(s)
        ctx.slope = slope
        return z

    @staticmethod
    def backward(ctx, grad_z: Tensor):  # type: ignore[override]
        (s,) = ctx.saved_tensors
        inside = ((ctx.slope * s).abs() < 1.0).to(grad_z.dtype)
        return grad_z * inside * (ctx.slope / 2.0), None, None


def boundary(s: Tensor, slope: Slope, mode: str = "step") -> Tensor:
    """The boundary state z from its pre-activation s (Eq. 8-9) with the straight-through estimator."""
    check_slope(slope)
    check_boundary_mode(mode)
    return _BoundaryFunction.apply(s, slope if isinstance(slope, Tensor) else float(slope), mode)


def check_slope(slope: Slope) -> None:
    """A slope must be a finite number > 0 (the hard sigmoid is flat or reversed otherwise). A tensor slope
    must hold one floating-point value; its value is not read here (that would wait for the device), so
    whoever fills it checks it."""
    if isinstance(slope, Tensor):
        if slope.numel() != 1 or not slope.is_floating_point():
            raise ValueError(f"a slope tensor must hold one floating-point value, got {slope.dtype} of shape "
                             f"{tuple(slope.shape)}")
        return
    if not isinstance(slope, (int, float)) or not math.isfinite(slope) or slope <= 0:
        raise ValueError(f"slope must be a finite number > 0, got {slope!r}")


def slope_value(slope: Slope) -> float:
    """The slope as a number, for paths that take it as a constant (reading a device tensor waits for it)."""
    return float(slope.item()) if isinstance(slope, Tensor) else float(slope)


def check_boundary_mode(mode: str) -> None:
    if mode not in BOUNDARY_MODES:
        raise ValueError(f"unknown boundary mode {mode!r}: choose one of {', '.join(BOUNDARY_MODES)}")


@dataclass(frozen=True)
class SlopeSchedule:
    """Slope annealing (§3.3): a = min(max_slope, 1 + rate * epoch)."""

    rate: float
    max_slope: float

    def __call__(self, epoch: float) -> float:
        return min(self.max_slope, 1.0 + self.rate * epoch)


# The paper's two schedules. "epoch" is the caller's unit: the trainers document theirs.
SLOPE_PRESETS: dict[str, SlopeSchedule] = {
    "constant": SlopeSchedule(rate=0.0, max_slope=1.0),
    "ptb": SlopeSchedule(rate=0.04, max_slope=5.0),
    "handwriting": SlopeSchedule(rate=0.004, max_slope=3.0),
}


# ----------------------------------------------------------------------------- state and output

class HMLSTMState(NamedTuple):
    """The recurrent state between steps (and between batches, for truncated BPTT)."""

    h: tuple[Tensor, ...]  # per layer, (B, H_l)
    c: tuple[Tensor, ...]  # per layer, (B, H_l)
    z: Tensor  # (B, L-1): z_{t-1}^l of layers 1..L-1 (the top layer has none)

    def detach(self) -> "HMLSTMState":
        return HMLSTMState(tuple(h.detach() for h in self.h), tuple(c.detach() for c in self.c), self.z.detach())

    def carried(self) -> "HMLSTMState":
        """The state to hand to the next window: cut from the graph (truncated BPTT), in float32."""
        return HMLSTMState(tuple(h.detach().float() for h in self.h), tuple(c.detach().float() for c in self.c),
                           self.z.detach().float())

    def to(self, device: torch.device | str) -> "HMLSTMState":
        return HMLSTMState(tuple(h.to(device) for h in self.h), tuple(c.to(device) for c in self.c), self.z.to(device))

    def is_finite(self) -> bool:
        """Whether every h and c is finite: a state that is not would poison every window after it."""
        return all(bool(torch.isfinite(t).all()) for t in (*self.h, *self.c))

    def saved(self) -> dict:
        """The state as a checkpoint keeps it (CPU tensors in lists; `from_saved` reads it back)."""
        return {"h": [h.cpu() for h in self.h], "c": [c.cpu() for c in self.c], "z": self.z.cpu()}

    @classmethod
    def from_saved(cls, saved: dict) -> "HMLSTMState":
        return cls(tuple(saved["h"]), tuple(saved["c"]), saved["z"])


class HMLSTMOutput(NamedTuple):
    hidden: tuple[Tensor, ...]  # per layer, (B, T, H_l); zeros at padded steps
    boundaries: Tensor  # (B, T, L-1): z_t^l of layers 1..L-1; zeros at padded steps
    state: HMLSTMState  # after each row's last valid step
    # (B, T, L-1): the s_z^l that each step's hard sigmoid read (Eq. 8, before the slope), with its
    # gradient; zeros at padded steps. The reference loop gives it; faster paths give None.
    preactivations: Tensor | None = None


def operations(boundaries: Tensor, initial_z: Tensor | None = None) -> Tensor:
    """The operation (COPY / UPDATE / FLUSH) each layer did at each step, from the boundaries.

    boundaries: (B, T, L-1) as returned by forward; initial_z: (B, L-1), the z carried in
    (zeros by default). Returns (B, T, L) integer codes. Soft boundaries are read as z > 0.5.
    """
    if boundaries.dim() != 3:
        raise ValueError(f"boundaries must be (batch, time, layers-1), got shape {tuple(boundaries.shape)}")
    batch, steps, n_detectors = boundaries.shape
    fired = boundaries > 0.5
    if initial_z is None:
        previous_first = torch.zeros(batch, 1, n_detectors, dtype=torch.bool, device=boundaries.device)
    else:
        previous_first = (initial_z > 0.5).unsqueeze(1)
    no_detector = torch.zeros(batch, steps, 1, dtype=torch.bool, device=boundaries.device)
    # z_{t-1}^l for every layer (the top layer's is always 0) and z_t^{l-1} (layer 0's is always 1)
    z_previous = torch.cat([torch.cat([previous_first, fired[:, :-1]], dim=1), no_detector], dim=2)
    z_below = torch.cat([~no_detector, fired], dim=2)
    codes = torch.full((batch, steps, n_detectors + 1), COPY, dtype=torch.long, device=boundaries.device)
    codes[z_below] = UPDATE
    codes[z_previous] = FLUSH
    return codes


# ----------------------------------------------------------------------------- the HM-LSTM

class RecurrentCore(nn.Module):
    """What the HM-LSTM and the LSTM baseline share: their state's shape and its checks."""

    hidden_sizes: tuple[int, ...]
    num_detectors: int  # layers with a boundary detector: L-1 for the HM-LSTM, 0 for the LSTM

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> HMLSTMState:
        """Zeros everywhere: no boundary before the first step."""
        weight = next(self.parameters())
        device, dtype = device or weight.device, dtype or weight.dtype
        zeros = tuple(torch.zeros(batch_size, h, device=device, dtype=dtype) for h in self.hidden_sizes)
        return HMLSTMState(zeros, tuple(torch.zeros_like(h) for h in zeros),
                           torch.zeros(batch_size, self.num_detectors, device=device, dtype=dtype))

    def check_state(self, state: HMLSTMState, batch_size: int) -> None:
        """Raise ValueError unless `state` fits this model and batch size."""
        expected = [(batch_size, h) for h in self.hidden_sizes]
        if (len(state.h) != len(expected) or len(state.c) != len(expected)
                or [tuple(h.shape) for h in state.h] != expected or [tuple(c.shape) for c in state.c] != expected
                or tuple(state.z.shape) != (batch_size, self.num_detectors)):
            raise ValueError(
                f"state does not fit: expected h and c of shapes {expected} and z of shape "
                f"{(batch_size, self.num_detectors)}, got h {[tuple(h.shape) for h in state.h]}, "
                f"c {[tuple(c.shape) for c in state.c]}, z {tuple(state.z.shape)}")


class HMLSTM(RecurrentCore):
    """A stack of HM-LSTM layers (the reference loop).

    input_size: features of x_t; hidden_sizes: H_l per layer (at least 2 layers: with one there
    is no hierarchy); layer_norm: see the module docstring; boundary_mode: "step", "bernoulli"
    or "soft" (can be overridden per call); impl: "reference" (this loop), "fused" (fused.py: the
    same results, a hand-written backward), "sparse" (sparse.py: only the rows that do not COPY,
    binary boundaries), "triton" (triton_cell.py: Triton kernels, CUDA
    or Triton's interpreter) or "auto" (see impl_choice), also overridable per call;
    copy_gradient and z_on_copy: see the module docstring ("keep" with "straight" or "mixed";
    "recompute" with "straight" or "exact"); boundary_norm: whether the layer norm covers the
    boundary pre-activation; boundary_bias: the boundary unit's initial bias (None: the usual init).
    """

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], layer_norm: bool = False,
                 boundary_mode: str = "step", impl: str = "reference", copy_gradient: str = "straight",
                 z_on_copy: str = "keep", boundary_norm: bool = True, boundary_bias: float | None = None) -> None:
        super().__init__()
        hidden_sizes = tuple(int(size) for size in hidden_sizes)
        check_copy_gradient(copy_gradient, z_on_copy)
        if input_size < 1 or len(hidden_sizes) < 2 or min(hidden_sizes) < 1:
            raise ValueError(f"need input_size >= 1 and at least 2 layers of size >= 1, "
                             f"got input_size={input_size}, hidden_sizes={hidden_sizes}")
        check_boundary_mode(boundary_mode)
        check_impl(impl)
        self.input_size = input_size
        self.hidden_sizes = hidden_sizes
        self.num_layers = len(hidden_sizes)
        self.num_detectors = self.num_layers - 1
        self.layer_norm = layer_norm
        self.boundary_mode = boundary_mode
        self.impl = impl
        self.copy_gradient = copy_gradient
        self.z_on_copy = z_on_copy
        self.boundary_norm = boundary_norm
        below_sizes = (input_size,) + hidden_sizes[:-1]
        # Eq. 5: each layer maps three terms to 4*H (f, i, o, g) + 1 boundary pre-activation;
        # the top layer has no boundary detector and no top-down input.
        outputs = [4 * size + (1 if l < self.num_layers - 1 else 0) for l, size in enumerate(hidden_sizes)]
        self.recurrent = nn.ModuleList(nn.Linear(h, n) for h, n in zip(hidden_sizes, outputs))  # U_l^l, bias b
        self.top_down = nn.ModuleList(nn.Linear(hidden_sizes[l + 1], outputs[l], bias=False)  # U_{l+1}^l
                                      for l in range(self.num_layers - 1))
        self.bottom_up = nn.ModuleList(nn.Linear(b, n, bias=False) for b, n in zip(below_sizes, outputs))  # W_{l-1}^l
        normalised = outputs if boundary_norm else [4 * size for size in hidden_sizes]
        self.norms = nn.ModuleList(nn.LayerNorm(n) for n in normalised) if layer_norm else None
        with torch.no_grad():  # forget gates start open (Gers et al. 2000), as is usual for LSTMs
            for layer, size in zip(self.recurrent, hidden_sizes):
                layer.bias[:size].fill_(1.0)
            if boundary_bias is not None:  # the last additive term of each boundary pre-activation
                for l, size in enumerate(hidden_sizes[:-1]):
                    inside_norm = layer_norm and boundary_norm
                    (self.norms[l] if inside_norm else self.recurrent[l]).bias[4 * size].fill_(float(boundary_bias))

    @property
    def reference_only(self) -> str | None:
        """Why only the reference loop can run this core's settings here, or None if another path can."""
        if self.c_loop_only is not None and few_rows_library() is None:
            return f"{self.c_loop_only} without the C loop"
        return None

    @property
    def c_loop_only(self) -> str | None:
        """The setting that only the reference loop and the sparse path's C loop run, or None."""
        if self.z_on_copy != "keep":
            return f"z_on_copy={self.z_on_copy!r}"
        if self.layer_norm and not self.boundary_norm:
            return "the boundary unit outside the layer norm"
        return None

    @property
    def boundary_outside_norm(self) -> bool:
        """Whether the layer norm leaves the boundary unit out."""
        return self.layer_norm and not self.boundary_norm

    # -- one step

    def step(self, x: Tensor, state: HMLSTMState, slope: Slope = 1.0,
             boundary_mode: str | None = None) -> tuple[HMLSTMState, Tensor]:
        """One time step through all layers. x: (B, input_size). Returns the new state and z_t (B, L-1)."""
        new_state, z_t, _ = self.step_with_preactivations(x, state, slope, boundary_mode)
        return new_state, z_t

    def step_with_preactivations(self, x: Tensor, state: HMLSTMState, slope: Slope = 1.0,
                                 boundary_mode: str | None = None,
                                 forced_z1: Tensor | None = None) -> tuple[HMLSTMState, Tensor, Tensor]:
        """`step`, also returning each detector's s_z (B, L-1). forced_z1 (B, 1), if given, replaces
        layer 1's z_t (no gradient reaches it): the oracle that ties layer 1's boundaries to given positions."""
        mode = boundary_mode or self.boundary_mode
        h_below, z_below = x, x.new_ones(x.shape[0], 1)  # h^0 = x_t, z^0 = 1
        new_h, new_c, new_z, new_s = [], [], [], []
        for l in range(self.num_layers):
            h, c, z, s_z = self._layer_step(l, h_below, z_below, state, slope, mode)
            if l == 0 and forced_z1 is not None:
                z = forced_z1.to(z.dtype)
            new_h.append(h)
            new_c.append(c)
            if z is not None:
                new_z.append(z)
                new_s.append(s_z)
                h_below, z_below = h, z
        z_t = torch.cat(new_z, dim=1)
        return HMLSTMState(tuple(new_h), tuple(new_c), z_t), z_t, torch.cat(new_s, dim=1)

    def layer_step(self, l: int, h_below: Tensor, z_below: Tensor, state: HMLSTMState, slope: Slope,
                   mode: str, extra_bottom_up: Tensor | None = None,
                   top_down: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Layer l (0-based) at one step, Eq. 2-9: returns its h_t, c_t and z_t ((B, 1); None for the top layer).

        h_below, z_below: h_t^{l-1} and z_t^{l-1} (x_t and ones for layer 0); state: every
        layer's state at t-1, as h_{t-1}^{l+1} is read from it. extra_bottom_up (B, 4H+1), if
        given, is one more input from below, already multiplied by its weights (a client's
        extra input, e.g. the synthesis window): it is added to the bottom-up term, so the
        layer reads it, like h_t^{l-1}, only when z_t^{l-1} = 1. top_down (B, 4H+1), if given,
        is U_{l+1}^l h_{t-1}^{l+1}, ungated, from a caller that keeps it (see sparse_layer_step).
        """
        return self._layer_step(l, h_below, z_below, state, slope, mode, extra_bottom_up, top_down)[:3]

    def _layer_step(self, l: int, h_below: Tensor, z_below: Tensor, state: HMLSTMState, slope: Slope,
                    mode: str, extra_bottom_up: Tensor | None = None,
                    top_down: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """layer_step, also returning the boundary pre-activation s_z (B, 1) (None for the top layer)."""
        size, top = self.hidden_sizes[l], l == self.num_layers - 1
        h_prev, c_prev = state.h[l], state.c[l]
        z_prev = h_prev.new_zeros(h_prev.shape[0], 1) if top else state.z[:, l:l + 1]

        # Eq. 5: the three terms. Recurrent is always on; top-down only right after this
        # layer's own boundary (z_{t-1}^l); bottom-up only when the layer below fires now (z_t^{l-1}).
        s = self.recurrent[l](h_prev)
        if not top:
            s = s + z_prev * (self.top_down[l](state.h[l + 1]) if top_down is None else top_down)
        bottom_up = self.bottom_up[l](h_below)
        if extra_bottom_up is not None:
            bottom_up = bottom_up + extra_bottom_up
        s = s + z_below * bottom_up

        if self.norms is not None:
            if self.boundary_norm or top:
                s = self.norms[l](s)
            else:  # the boundary unit keeps its raw sum and its own bias
                s = torch.cat([self.norms[l](s[:, :4 * size]), s[:, 4 * size:]], dim=1)
        f, i, o, g = s[:, :4 * size].chunk(4, dim=1)
        f, i, o, g = torch.sigmoid(f), torch.sigmoid(i), torch.sigmoid(o), torch.tanh(g)  # Eq. 6

        # Eq. 2 as one sum, so that gradients reach the boundary detectors through z
        # (straight-through); with binary z exactly one term is 1, and COPY is bit-exact.
        flush = z_prev
        update = (1 - z_prev) * z_below
        copy = (1 - z_prev) * (1 - z_below)
        if self.copy_gradient == "straight":  # a COPY row passes no gradient to the z's that chose it
            computed = copy.detach() < 1
            flush, update, copy = (torch.where(computed, w, w.detach()) for w in (flush, update, copy))
        c = flush * (i * g) + update * (f * c_prev + i * g) + copy * c_prev
        h = copy * h_prev + (1 - copy) * (o * torch.tanh(c))  # Eq. 3
        if top:
            return h, c, None, None
        s_z = s[:, 4 * size:]
        z_hat = boundary(s_z, slope, mode)  # Eq. 7-9
        if self.z_on_copy == "recompute":  # Eq. 5-9 as written: z from s_t at every step
            return h, c, z_hat, s_z
        if self.copy_gradient == "mixed":  # the kept z passes no gradient back along the COPY run: see below
            z_prev = z_prev.detach()
        return h, c, copy * z_prev + (1 - copy) * z_hat, s_z  # COPY keeps its z (= 0)

    def sparse_layer_step(self, l: int, h_below: Tensor, z_below: Tensor, state: HMLSTMState, slope: float,
                          mode: str, top_down: Tensor | None = None,
                          extra_bottom_up: Callable[[Tensor | None], Tensor] | None = None,
                          valid: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """layer_step computing only the rows that do not COPY (gathered, then scattered back into
        the state); returns h_t, c_t, z_t and the indices of the rows that computed (None: all).

        For binary boundaries and copy_gradient "straight" the results and gradients are
        layer_step's up to rounding: a COPY row's h, c and z are its previous ones, and its gradient
        goes to them alone (layer_step multiplies everything else by a detached zero). Soft
        boundaries and "mixed" make every row compute: those run layer_step itself.

        top_down: as in layer_step, for every row (a caller that keeps U_{l+1}^l h^{l+1} updates it
        where layer l+1 computed, and saves the product for the rest). extra_bottom_up: a function
        from row indices (None: all) to those rows' extra bottom-up input, so that it is computed
        only for the rows that compute. valid (B, 1) bool: rows at a padded step compute nothing.
        """
        top = l == self.num_layers - 1
        z_prev = None if top else state.z[:, l:l + 1]
        computing = z_below if top else torch.maximum(z_below, z_prev)  # UPDATE or FLUSH
        if valid is not None:
            computing = computing * valid
        count, batch = int(computing.sum()), computing.shape[0]  # one read of the boundaries
        if count == batch or mode == "soft" or self.copy_gradient != "straight" or self.z_on_copy != "keep":
            extra = None if extra_bottom_up is None else extra_bottom_up(None)
            return (*self.layer_step(l, h_below, z_below, state, slope, mode, extra, top_down), None)
        rows = computing.flatten().nonzero().flatten()
        if count == 0:  # COPY in every row
            return state.h[l], state.c[l], z_prev, rows

        def pick(t: Tensor) -> Tensor:
            return t.index_select(0, rows)

        gathered = HMLSTMState(tuple(pick(h) for h in state.h), tuple(pick(c) for c in state.c), pick(state.z))
        h, c, z = self.layer_step(l, pick(h_below), pick(z_below), gathered, slope, mode,
                                  None if extra_bottom_up is None else extra_bottom_up(rows),
                                  None if top_down is None else pick(top_down))
        return (state.h[l].index_copy(0, rows, h), state.c[l].index_copy(0, rows, c),
                None if top else z_prev.index_copy(0, rows, z), rows)

    def boundary_preactivations(self, x: Tensor, output: HMLSTMOutput, state: HMLSTMState | None = None) -> Tensor:
        """(B, T, L-1): each step's s_z (Eq. 5, and the layer norm where it covers the boundary unit),
        recomputed from x and a forward pass's output over it from `state` (zeros if None), whatever path
        ran it; gradients reach the weights and, through the output, the pass itself. Exact at every step
        of an unpadded sequence; on a COPY step with z kept it is the s_z the step would have read."""
        batch, steps = check_input(x, self.input_size)
        if state is None:
            state = self.initial_state(batch, x.device, x.dtype)
        boundaries = output.boundaries
        z_previous = torch.cat([state.z.unsqueeze(1).to(boundaries.dtype), boundaries[:, :-1]], dim=1)
        result = []
        for l in range(self.num_detectors):
            size = self.hidden_sizes[l]
            h_previous = torch.cat([state.h[l].unsqueeze(1), output.hidden[l][:, :-1]], dim=1)
            above_previous = torch.cat([state.h[l + 1].unsqueeze(1), output.hidden[l + 1][:, :-1]], dim=1)
            h_below = x if l == 0 else output.hidden[l - 1]
            z_below = x.new_ones(batch, steps, 1) if l == 0 else boundaries[..., l - 1:l]
            z_prev = z_previous[..., l:l + 1]
            if self.norms is None or not self.boundary_norm:  # the boundary row alone
                row = slice(4 * size, 4 * size + 1)
                s_z = (F.linear(h_previous, self.recurrent[l].weight[row], self.recurrent[l].bias[row])
                       + z_prev * F.linear(above_previous, self.top_down[l].weight[row])
                       + z_below * F.linear(h_below, self.bottom_up[l].weight[row]))
            else:  # the norm needs the whole pre-activation
                s_z = self.norms[l](self.recurrent[l](h_previous) + z_prev * self.top_down[l](above_previous)
                                    + z_below * self.bottom_up[l](h_below))[..., 4 * size:]
            result.append(s_z)
        return torch.cat(result, dim=-1)

    # -- a whole sequence

    def forward(self, x: Tensor, state: HMLSTMState | None = None, lengths: Tensor | None = None,
                mask: Tensor | None = None, slope: Slope = 1.0,
                boundary_mode: str | None = None, impl: str | None = None,
                forced_z1: Tensor | None = None) -> HMLSTMOutput:
        """Run the stack over x: (B, T, input_size).

        state: carried from a previous call (truncated BPTT), zeros if None.
        lengths (B,) or mask (B, T) bool: padded steps leave the state untouched and output zeros,
        so padding never changes a valid step's result. slope: the hard sigmoid's slope a, a number
        or a one-element tensor (see Slope). impl: overrides the constructor's choice for this call.
        forced_z1 (B, T), if given, replaces layer 1's boundaries (the oracle; the reference loop and the sparse
        C loop run it: "auto" picks one of them).
        """
        mode = boundary_mode or self.boundary_mode
        check_slope(slope)
        check_boundary_mode(mode)
        batch, steps = check_input(x, self.input_size)
        mask = resolve_mask(lengths, mask, batch, steps, x.device)
        if state is None:
            state = self.initial_state(batch, x.device, x.dtype)
        self.check_state(state, batch)
        if forced_z1 is not None and tuple(forced_z1.shape) != (batch, steps):
            raise ValueError(f"forced_z1 must have shape {(batch, steps)}, got {tuple(forced_z1.shape)}")
        c_loop_only = self.c_loop_only or (None if forced_z1 is None else "forced layer-1 boundaries")
        reference_only = self.reference_only or (None if forced_z1 is None or few_rows_library() is not None
                                                 else "forced layer-1 boundaries without the C loop")
        path = resolve_impl(impl or self.impl, x.device, mode, self.copy_gradient, reference_only, c_loop_only)
        if path == "fused":  # the fast paths are imported here: they build on this module
            from .paths.fused import hmlstm_fused
            return hmlstm_fused(self, x, state, mask, slope_value(slope), mode)
        if path == "sparse":
            from .paths.sparse import hmlstm_sparse
            return hmlstm_sparse(self, x, state, mask, slope_value(slope), mode, forced_z1)
        if path == "triton":
            from .paths.triton_cell import hmlstm_triton
            return hmlstm_triton(self, x, state, mask, slope, mode)

        hidden: list[list[Tensor]] = [[] for _ in range(self.num_layers)]
        boundaries: list[Tensor] = []
        preactivations: list[Tensor] = []
        for t in range(steps):
            forced = None if forced_z1 is None else forced_z1[:, t:t + 1]
            new_state, z_t, s_z = self.step_with_preactivations(x[:, t], state, slope, mode, forced)
            if mask is not None:
                valid = mask[:, t:t + 1]
                new_state = mask_state(valid, new_state, state)
                z_t, s_z = z_t * valid, s_z * valid
            state = new_state
            for l in range(self.num_layers):
                hidden[l].append(state.h[l] if mask is None else state.h[l] * valid)
            boundaries.append(z_t)
            preactivations.append(s_z)
        stacked = stack_time([boundaries, preactivations], x, (self.num_detectors,) * 2)
        return HMLSTMOutput(stack_time(hidden, x, self.hidden_sizes), stacked[0], state, stacked[1])


def check_copy_gradient(copy_gradient: str, z_on_copy: str = "keep") -> None:
    """Raise ValueError unless the pair is one of GRADIENTS_FOR's."""
    if z_on_copy not in Z_ON_COPY:
        raise ValueError(f"unknown z_on_copy {z_on_copy!r}: choose one of {', '.join(Z_ON_COPY)}")
    if copy_gradient not in COPY_GRADIENTS:
        raise ValueError(f"unknown copy_gradient {copy_gradient!r}: choose one of {', '.join(COPY_GRADIENTS)}")
    if copy_gradient not in GRADIENTS_FOR[z_on_copy]:
        raise ValueError(f"copy_gradient={copy_gradient!r} does not go with z_on_copy={z_on_copy!r}: choose one of "
                         f"{', '.join(GRADIENTS_FOR[z_on_copy])}")


def check_impl(impl: str) -> None:
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown impl {impl!r}: choose one of {', '.join(IMPLEMENTATIONS)}")


def resolve_impl(impl: str, device: torch.device | str = "cpu", boundary_mode: str = "step",
                 copy_gradient: str = "straight", reference_only: str | None = None,
                 c_loop_only: str | None = None) -> str:
    """The path that runs: `impl` itself, or for "auto" the fastest that can run here (impl_choice says why)."""
    return impl_choice(impl, device, boundary_mode, copy_gradient, reference_only, c_loop_only)[0]


def impl_choice(impl: str, device: torch.device | str = "cpu", boundary_mode: str = "step",
                copy_gradient: str = "straight", reference_only: str | None = None,
                c_loop_only: str | None = None) -> tuple[str, str]:
    """(path, one line saying why). "auto" picks, per device, what handwriting_hm.bench measured fastest:
    on the CPU the sparse path where it can run (binary boundaries), else the fused path; on a GPU the
    Triton kernels where triton is installed, else the fused path. `reference_only` (HMLSTM.reference_only)
    names a setting that only the reference loop runs: "auto" then picks it, and a faster path is refused.
    `c_loop_only` (HMLSTM.c_loop_only) names one that only the reference loop and the sparse C loop run."""
    check_impl(impl)
    if reference_only is not None:
        if impl == "auto":
            return "reference", f"auto: the reference loop, the only path that runs {reference_only}"
        if impl != "reference":
            raise ValueError(f"impl={impl!r} cannot run {reference_only}: use impl='reference' or 'auto'")
    if c_loop_only is not None:
        if impl in ("fused", "triton"):
            raise ValueError(f"impl={impl!r} cannot run {c_loop_only}: use impl='sparse' (the C loop, float32 on the "
                             f"CPU), 'reference' or 'auto'")
        if impl == "auto":
            if torch.device(device).type == "cpu" and boundary_mode in ("step", "bernoulli"):
                return "sparse", (f"auto on the CPU: the sparse path's C loop, which skips the work of COPY rows and "
                                  f"runs {c_loop_only}")
            return "reference", f"auto: the reference loop, as {c_loop_only} runs there and in the sparse C loop only"
    if impl == "sparse" and boundary_mode == "soft":
        raise ValueError("impl='sparse' needs binary boundaries (here 'soft'): use impl='fused' or 'auto'")
    if impl != "auto":
        return impl, f"impl={impl!r} was asked for"
    device = torch.device(device)
    if device.type == "cuda":
        from .paths.triton_cell import triton_available  # imported here: it imports triton when installed
        if triton_available(device):
            return "triton", "auto on CUDA: the Triton kernels (one kernel per layer-step and direction)"
        return "fused", "auto on CUDA without triton: the fused path"
    if boundary_mode in ("step", "bernoulli"):
        how = ("its time loop in C for float32 (sparse_loop.c)" if few_rows_library() is not None
               else "its Python loop through torch's products (the C library is unavailable)")
        return "sparse", (f"auto on the CPU: the sparse path, which skips the work of COPY rows "
                          f"(copy_gradient={copy_gradient!r}), {how}")
    return "fused", "auto on the CPU: the fused path, as the sparse one needs binary boundaries (here 'soft')"


def check_input(x: Tensor, input_size: int) -> tuple[int, int]:
    """Raise ValueError unless x is (batch, time, input_size) floating point; return (batch, time)."""
    if x.dim() != 3 or x.shape[2] != input_size:
        raise ValueError(f"expected input of shape (batch, time, {input_size}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point input, got {x.dtype}")
    return x.shape[0], x.shape[1]


def resolve_mask(lengths: Tensor | None, mask: Tensor | None, batch: int, steps: int,
                 device: torch.device) -> Tensor | None:
    """A (B, T) bool mask of valid steps from lengths or mask (at most one), or None if all are valid."""
    if lengths is not None and mask is not None:
        raise ValueError("give lengths or mask, not both")
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=device)
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise ValueError(f"lengths must be {batch} integers (one per sequence), got shape {tuple(lengths.shape)}")
        if bool((lengths < 0).any()) or bool((lengths > steps).any()):
            raise ValueError(f"lengths must lie in [0, {steps}], got {lengths.tolist()}")
        return torch.arange(steps, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    if mask is not None:
        if tuple(mask.shape) != (batch, steps):
            raise ValueError(f"mask must have shape {(batch, steps)}, got {tuple(mask.shape)}")
        return mask.to(device=device, dtype=torch.bool)
    return None


def mask_state(valid: Tensor, new: HMLSTMState, old: HMLSTMState) -> HMLSTMState:
    """Keep `old` where valid (B, 1) is False: a padded step changes nothing."""
    return HMLSTMState(tuple(torch.where(valid, n, o) for n, o in zip(new.h, old.h)),
                       tuple(torch.where(valid, n, o) for n, o in zip(new.c, old.c)),
                       torch.where(valid, new.z, old.z))


# ----------------------------------------------------------------------------- the LSTM baseline

class StackedLSTM(RecurrentCore):
    """A standard stacked LSTM with the HM-LSTM's interface, for baselines in the same harness.

    Without layer normalisation it runs torch.nn.LSTM (cuDNN on a GPU), one per layer, so that
    every layer's h is available to the output module. With layer normalisation it runs a loop
    with the same placement as the HM-LSTM (one LayerNorm over the summed gate pre-activation).
    Boundaries are empty (B, T, 0); `slope` and `boundary_mode` are accepted and ignored.
    """

    def __init__(self, input_size: int, hidden_sizes: Sequence[int], layer_norm: bool = False,
                 boundary_mode: str = "step") -> None:
        super().__init__()
        hidden_sizes = tuple(int(size) for size in hidden_sizes)
        if input_size < 1 or len(hidden_sizes) < 1 or min(hidden_sizes) < 1:
            raise ValueError(f"need input_size >= 1 and layers of size >= 1, got {input_size}, {hidden_sizes}")
        self.input_size = input_size
        self.hidden_sizes = hidden_sizes
        self.num_layers = len(hidden_sizes)
        self.num_detectors = 0
        self.layer_norm = layer_norm
        below_sizes = (input_size,) + hidden_sizes[:-1]
        self.layers = nn.ModuleList(nn.LSTM(b, h, batch_first=True) for b, h in zip(below_sizes, hidden_sizes))
        self.norms = nn.ModuleList(nn.LayerNorm(4 * h) for h in hidden_sizes) if layer_norm else None
        with torch.no_grad():
            for layer, size in zip(self.layers, hidden_sizes):
                layer.bias_hh_l0[size:2 * size].fill_(1.0)  # torch's gate order is i, f, g, o
                layer.bias_ih_l0[size:2 * size].zero_()

    def step(self, x: Tensor, state: HMLSTMState, slope: Slope = 1.0,
             boundary_mode: str | None = None) -> tuple[HMLSTMState, Tensor]:
        """One time step through all layers; returns the new state and an empty (B, 0) boundary."""
        h_below, new_h, new_c = x, [], []
        for l, layer in enumerate(self.layers):
            gates = (F.linear(h_below, layer.weight_ih_l0, layer.bias_ih_l0)
                     + F.linear(state.h[l], layer.weight_hh_l0, layer.bias_hh_l0))
            if self.norms is not None:
                gates = self.norms[l](gates)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * state.c[l] + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            new_h.append(h)
            new_c.append(c)
            h_below = h
        return HMLSTMState(tuple(new_h), tuple(new_c), state.z), state.z

    def forward(self, x: Tensor, state: HMLSTMState | None = None, lengths: Tensor | None = None,
                mask: Tensor | None = None, slope: Slope = 1.0,
                boundary_mode: str | None = None) -> HMLSTMOutput:
        """Same contract as HMLSTM.forward."""
        batch, steps = check_input(x, self.input_size)
        mask = resolve_mask(lengths, mask, batch, steps, x.device)
        if state is None:
            state = self.initial_state(batch, x.device, x.dtype)
        self.check_state(state, batch)
        empty = x.new_zeros(batch, steps, 0)
        if self.norms is None and mask is None:
            return self._forward_cudnn(x, state, empty)
        hidden = [[] for _ in range(self.num_layers)]
        for t in range(steps):
            new_state, _ = self.step(x[:, t], state)
            if mask is not None:
                valid = mask[:, t:t + 1]
                new_state = mask_state(valid, new_state, state)
            state = new_state
            for l in range(self.num_layers):
                hidden[l].append(state.h[l] if mask is None else state.h[l] * valid)
        return HMLSTMOutput(stack_time(hidden, x, self.hidden_sizes), empty, state)

    def _forward_cudnn(self, x: Tensor, state: HMLSTMState, empty: Tensor) -> HMLSTMOutput:
        hidden, new_h, new_c, below = [], [], [], x
        for l, layer in enumerate(self.layers):
            below, (h, c) = layer(below, (state.h[l].unsqueeze(0).contiguous(), state.c[l].unsqueeze(0).contiguous()))
            hidden.append(below)
            new_h.append(h.squeeze(0))
            new_c.append(c.squeeze(0))
        return HMLSTMOutput(tuple(hidden), empty, HMLSTMState(tuple(new_h), tuple(new_c), state.z))


def stack_time(per_step: list[list[Tensor]], x: Tensor, sizes: Sequence[int]) -> tuple[Tensor, ...]:
    """Stack lists of (B, size) tensors along a new time axis; (B, 0, size) for an empty sequence."""
    return tuple(torch.stack(steps, dim=1) if steps else x.new_zeros(x.shape[0], 0, size)
                 for steps, size in zip(per_step, sizes))


CELLS = {"hm-lstm": HMLSTM, "lstm": StackedLSTM}


def make_core(cell: str, input_size: int, hidden_sizes: Sequence[int], layer_norm: bool = False,
              boundary_mode: str = "step", impl: str = "reference", copy_gradient: str = "straight",
              z_on_copy: str = "keep", boundary_norm: bool = True,
              boundary_bias: float | None = None) -> HMLSTM | StackedLSTM:
    """Build the recurrent core by name: "hm-lstm" or "lstm". `impl`, `copy_gradient`, `z_on_copy`,
    `boundary_norm` and `boundary_bias` say how an HM-LSTM runs and learns (see HMLSTM); the LSTM has
    one way only, so they are checked and otherwise unused there."""
    if cell not in CELLS:
        raise ValueError(f"unknown cell {cell!r}: choose one of {', '.join(CELLS)}")
    check_impl(impl)
    check_copy_gradient(copy_gradient, z_on_copy)
    if cell == "hm-lstm":
        return HMLSTM(input_size, hidden_sizes, layer_norm=layer_norm, boundary_mode=boundary_mode, impl=impl,
                      copy_gradient=copy_gradient, z_on_copy=z_on_copy, boundary_norm=boundary_norm,
                      boundary_bias=boundary_bias)
    return CELLS[cell](input_size, hidden_sizes, layer_norm=layer_norm, boundary_mode=boundary_mode)
