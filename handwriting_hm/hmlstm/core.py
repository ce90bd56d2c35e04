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
  full gradient. With "straight" training skips COPY rows altogether (paths/sparse.py); with "mixed"
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

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cell_types import (BOUNDARY_MODES, COPY, COPY_GRADIENTS, FLUSH, GRADIENTS_FOR, OPERATION_NAMES, UPDATE,
                         Z_ON_COPY, HMLSTMOutput, HMLSTMState, RecurrentCore, Slope, boundary, check_boundary_mode,
                         check_copy_gradient, check_input, check_slope, hard_sigmoid, mask_state, operations,
                         resolve_mask, slope_value, stack_time)
from .dispatch import (IMPLEMENTATIONS, SPARSE_BELOW, STEPWISE_IMPLEMENTATIONS, check_impl,
                       check_stepwise_impl, impl_choice, resolve_impl, run_path, stepwise_choice)
from .lstm import StackedLSTM
from .settings import LEARNING_ONLY, SLOPE_PRESETS, SlopeSchedule

# `handwriting_hm.hmlstm.core` is where the library's clients import the cell's types, settings and checks from,
# whichever module of the library defines them.
__all__ = ["BOUNDARY_MODES", "CELLS", "COPY", "COPY_GRADIENTS", "FLUSH", "GRADIENTS_FOR", "HMLSTM", "HMLSTMOutput",
           "HMLSTMState", "IMPLEMENTATIONS", "LEARNING_ONLY", "OPERATION_NAMES", "SLOPE_PRESETS", "UPDATE", "Z_ON_COPY",
           "RecurrentCore", "Slope", "SlopeSchedule", "StackedLSTM", "boundary", "check_boundary_mode",
           "check_copy_gradient", "check_impl", "check_input", "check_slope", "hard_sigmoid", "impl_choice",
           "make_core", "mask_state", "operations", "resolve_impl", "resolve_mask", "slope_value", "stack_time",
           "SPARSE_BELOW", "STEPWISE_IMPLEMENTATIONS", "check_stepwise_impl", "stepwise_choice"]


class HMLSTM(RecurrentCore):
    """A stack of HM-LSTM layers (the reference loop).

    input_size: features of x_t; hidden_sizes: H_l per layer (at least 2 layers: with one there
    is no hierarchy); layer_norm: see the module docstring; boundary_mode: "step", "bernoulli"
    or "soft" (can be overridden per call); impl: "reference" (this loop), "fused" (paths/fused.py: the
    same results, a hand-written backward), "sparse" (paths/sparse.py: only the rows that do not COPY,
    binary boundaries), "triton" (paths/triton_cell.py: Triton kernels, CUDA
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

        A training path (autograd runs through it): the synthesis model's sparse step (SynthesisModel.sparse_step)
        runs on it. Sampling, which keeps no graph, runs on the COPY-skipping stepper (stepper.py).
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
        path = resolve_impl(impl or self.impl, x.device, mode, self.copy_gradient, c_loop_only)
        if path != "reference":
            return run_path(path, self, x, state, mask, slope, mode, forced_z1)

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
