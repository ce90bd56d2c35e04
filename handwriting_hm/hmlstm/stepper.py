"""Sampling one step at a time without the work of COPY rows: the library's COPY-skipping stepper, and the
few-row products it runs on (for a batch of samples torch's CPU products of a few rows are slow; few_rows.c's
are not). A client with an input of its own passes it through the stepper's hook (see CopySkippingStepper)."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .cell_types import HMLSTMLike, HMLSTMState, hard_sigmoid
from .paths.few_rows import times, times_transposed


class CopySkippingStepper:
    """HMLSTM.step on preallocated state, for sampling (no autograd): a layer that COPYs in every row computes
    nothing, and where rows differ a layer computes only its rows that FLUSH or UPDATE, and its top-down term
    only for the rows that FLUSH (gathered, computed, scattered back). The reference's own operations in the
    same order otherwise, so with torch's products (`linear_for(1)`) it is bit for bit HMLSTM.step.

    `hidden` holds every layer's h side by side (h[l] are views of it), as a gated output module reads them.
    The hook for a client's extra input: `step`'s extra_bottom_up(l, rows) gives layer l's extra bottom-up
    term (already multiplied by its weights) for the rows that compute (None: all), or None where layer l has
    none. It is added to the bottom-up term as HMLSTM.layer_step adds its extra_bottom_up, so it is computed
    only for the rows that read it; when it is asked for layer l, the h of the layers below l are this step's.
    state: where to start (zeros if None), e.g. after a primer read by the model's forward.
    """

    def __init__(self, core: HMLSTMLike, n_samples: int, slope: float,
                 linear: Callable[..., Tensor] | None = None, state: HMLSTMState | None = None) -> None:
        reason = refusal(core)
        if reason is not None:
            raise ValueError(f"the COPY-skipping stepper cannot run this core ({reason}): step with HMLSTM.step")
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
        if state is not None:  # copied, as the stepper writes its state in place
            self.hidden.copy_(torch.cat(state.h, dim=1))
            self.c = [c.clone() for c in state.c]
            self.z = state.z.clone()
            self.fired = [any_all(self.z[:, l:l + 1]) for l in range(core.num_detectors)]
        # the weights, read once: attribute look-ups on modules cost as much as a small product
        self.recurrent = [(layer.weight, layer.bias) for layer in core.recurrent]
        self.top_down = [layer.weight for layer in core.top_down]
        self.bottom_up = [layer.weight for layer in core.bottom_up]
        self.norms = None if core.norms is None else [(norm.normalized_shape, norm.weight, norm.bias, norm.eps)
                                                      for norm in core.norms]
        # whether the layer norm leaves a layer's boundary unit out (it keeps its raw sum and its own bias)
        self.raw_boundary = [core.boundary_outside_norm and l < len(self.sizes) - 1 for l in range(len(self.sizes))]
        self.linear = linear_for(n_samples) if linear is None else linear

    def step(self, x: Tensor, z_t: Tensor,
             extra_bottom_up: Callable[[int, Tensor | None], Tensor] | None = None,
             forced_z1: Tensor | None = None) -> list[bool]:
        """Read x (n, input_size); write z_t (n, L-1), zeros on entry. Returns, per layer, whether its h may have
        changed. extra_bottom_up: see the class. forced_z1 (n, 1), if given, is layer 1's z_t (as in
        HMLSTM.step_with_preactivations)."""
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
            extra = None if extra_bottom_up is None else extra_bottom_up(l, rows)
            if extra is not None:
                bottom_up = bottom_up + extra
            s = s + (bottom_up if z_below is None else pick(z_below) * bottom_up)
            if self.norms is not None:
                if self.raw_boundary[l]:
                    s = torch.cat([F.layer_norm(s[:, :4 * size], *self.norms[l]), s[:, 4 * size:]], dim=1)
                else:
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
                if l == 0 and forced_z1 is not None:  # every row computes layer 1
                    z = forced_z1.to(z.dtype)
                if rows is None:
                    z_t[:, l:l + 1] = z
                else:  # the COPY rows keep z = 0, as z_t already holds
                    z_t[:, l:l + 1].index_copy_(0, rows, z)
                fired.append(any_all(z_t[:, l:l + 1]))
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


def refusal(core: HMLSTMLike) -> str | None:
    """Why the stepper cannot run this core, in a few words (None: it can). It runs binary boundaries that a
    COPY row keeps, inside the layer norm or outside it: soft boundaries mix the three operations and leave
    nothing to skip, and a z recomputed on COPY is work it does not do."""
    if core.boundary_mode == "soft":
        return "soft boundaries leave nothing to skip"
    if core.z_on_copy != "keep":
        return f"it does not compute z_on_copy={core.z_on_copy!r}"
    return None


def few_row_linear() -> Callable[..., Tensor]:
    """F.linear through few_rows.c: its tiles from three rows (with each weight's transpose, made on first use),
    its 2-row kernel below (paths/few_rows.py)."""
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


def linear_for(n_samples: int) -> Callable[..., Tensor]:
    """torch's F.linear for one sample (bit for bit with generate_reference), else few_rows.c's products."""
    return F.linear if n_samples == 1 else few_row_linear()


def any_all(z: Tensor) -> tuple[bool, bool]:
    """Whether any and whether every row's boundary fired: one read of z for both."""
    values = z.flatten().tolist()
    return any(values), all(values)
