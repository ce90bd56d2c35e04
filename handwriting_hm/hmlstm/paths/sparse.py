"""The HM-LSTM's sparse training path: each layer-step computes only the rows that do not COPY.

core.HMLSTM.forward (impl="sparse") calls `hmlstm_sparse`. With copy_gradient="straight" (see
the core's module docstring) a COPY row computes nothing, forward or backward, and its gradient
goes straight to the previous state. That is the paper's computational argument made into
speed: with boundaries as sparse as the paper's (z^1 at about 17 % of the steps, z^2 at about
3 %) layers 2 and 3 are idle most of the time.

With copy_gradient="mixed" a COPY row also passes gradient to the two boundaries that chose
COPY, through what UPDATE or FLUSH would have given: that needs its gates, so the row runs the
recurrent product U_l^l h^l_{t-1} + b (its top-down and bottom-up terms are gated off), the
layer norm and the non-linearities, and keeps the activations. Nothing else: the row's state
is untouched and its pre-activation gets no gradient (every gate is multiplied by 1 - copy = 0
or flush + update = 0), so it adds no GEMM to the backward pass, only a few row sums.

Forward, per layer and step:
- the rows that compute are gathered (UPDATE: z^{l-1}_t = 1, FLUSH: z^l_{t-1} = 1; a padded
  step changes nothing, so padded rows never compute); layer 1 never COPYs and runs on all rows
  without a gather, its input projection W_0^1 x_t done for all steps before the loop;
- s = U_l^l h^l_{t-1} + z^{l-1}_t W_{l-1}^l h^{l-1}_t + b as GEMMs over those rows, plus the
  top-down term z^l_{t-1} U_{l+1}^l h^{l+1}_{t-1} read from a cache: h^{l+1} changes only where
  layer l+1 computes, so U_{l+1}^l h^{l+1} is recomputed for those rows only (the cached value
  also gives the straight-through gradient of z^l_{t-1} through the top-down gate);
- the cell's results are scattered back into the state; every other row keeps its h, c and z.
Backward, per layer and step in reverse: the rows that computed get the fused path's gradient
(the straight-through estimator through the operation mix and the gates); every other row
passes its gradient straight through, which in place means doing nothing. Weight gradients are
one GEMM per weight over all the rows that used it, after the time loop.

Binary boundaries only ("step" or "bernoulli"): with soft boundaries every row mixes all three
operations and nothing can be skipped (the fused path runs those). Results equal the
reference's up to float rounding (tests/handwriting_hm/hmlstm/test_sparse.py).

For float32 on the CPU the same loop runs in C
(sparse_native.py, sparse_loop.c) where the C library builds: the Python loop below dispatches a
few hundred small torch operations per time step, and on a 2-core CPU that overhead, not the
arithmetic, set its speed. This file stays the readable statement of what the C loop does.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from ..cell_types import HMLSTMLike, HMLSTMOutput, HMLSTMState, hard_sigmoid
from .buffers import input_projection, norm_parameters, pack_outputs, state_buffers, unpack_outputs
from .few_rows import available_for, times_transposed
from .sparse_native import SparseLoopHMLSTM, runs_natively

BINARY_MODES = ("step", "bernoulli")


def hmlstm_sparse(core: HMLSTMLike, x: Tensor, state: HMLSTMState, mask: Tensor | None, slope: float,
                  mode: str, forced_z1: Tensor | None = None) -> HMLSTMOutput:
    """core.HMLSTM.forward with already checked arguments and binary boundaries, computed by _SparseHMLSTM;
    forced_z1 (B, T): layer 1's boundaries, given (the C loop only)."""
    if mode not in BINARY_MODES:
        raise ValueError(f"the sparse path needs binary boundaries (step or bernoulli), got {mode!r}")
    L = core.num_layers
    norm_weights, norm_biases, eps = norm_parameters(core)
    mixed = core.copy_gradient in ("mixed", "exact")  # the choice of COPY passes gradient back
    recompute = core.z_on_copy == "recompute"
    parameters = [*[layer.weight for layer in core.recurrent], *[layer.bias for layer in core.recurrent],
                  *[layer.weight for layer in core.top_down], *[layer.weight for layer in core.bottom_up],
                  *norm_weights, *norm_biases]
    with torch.autocast(x.device.type, enabled=False):  # the state and every product in x's dtype
        if runs_natively(x, parameters, L):  # the same loop in C (sparse_native.py)
            inputs = [x, *state.h, *state.c, state.z, *parameters]
            saving = torch.is_grad_enabled() and any(tensor.requires_grad for tensor in inputs)
            outputs = SparseLoopHMLSTM.apply(core.hidden_sizes, slope, mode, mixed, recompute, saving, eps, mask,
                                             forced_z1, *inputs)
        else:
            if forced_z1 is not None:
                raise ValueError("the sparse path forces layer 1's boundaries only in its C loop: use impl='reference'")
            if core.boundary_outside_norm or recompute:
                raise ValueError("the sparse path runs z_on_copy='recompute' and the boundary unit outside the layer "
                                 "norm only in its C loop (float32 on the CPU, a C compiler): use impl='reference' "
                                 "or 'auto'")
            outputs = _SparseHMLSTM.apply(core.hidden_sizes, slope, mode, mixed, eps, mask, x, *state.h, *state.c,
                                          state.z, *parameters)
    return unpack_outputs(outputs, L)


class _Saved(NamedTuple):
    """What one layer-step keeps for the backward pass, for the rows that computed."""

    rows: Tensor | None  # their indices; None: all rows
    h_prev: Tensor  # h^l_{t-1} (n, H)
    below: Tensor | None  # z^{l-1}_t h^{l-1}_t (n, H_{l-1}), the bottom-up GEMM's input; None for layer 1
    top_down: Tensor | None  # U_{l+1}^l h^{l+1}_{t-1} (n, 4H+1), ungated; None for the top layer
    activations: Tensor  # f, i, o, g (n, 4H)
    z_hat: Tensor | None  # the detector's output (n, 1); None for the top layer
    boundary_input: Tensor | None  # s_z after layer norm (n, 1)
    pre_norm: Tensor | None  # s before layer norm (n, 4H+1), its mean and 1/std (n, 1)
    mean: Tensor | None
    inverse_std: Tensor | None


class _SavedCopy(NamedTuple):
    """What a layer-step keeps of its COPY rows for copy_gradient="mixed"."""

    rows: Tensor  # their indices
    activations: Tensor  # f, i, o, g (n, 4H) as UPDATE would have had them
    z_hat: Tensor | None  # the detector's output (n, 1); None for the top layer


def _gather(tensor: Tensor, rows: Tensor | None) -> Tensor:
    return tensor if rows is None else tensor.index_select(0, rows)


def _scatter(target: Tensor, rows: Tensor | None, values: Tensor) -> None:
    if rows is None:
        target.copy_(values)
    else:
        target.index_copy_(0, rows, values)


def _scatter_add(target: Tensor, rows: Tensor | None, values: Tensor) -> None:
    if rows is None:
        target.add_(values)
    else:
        target.index_add_(0, rows, values)


def _row_sum(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=1, keepdim=True)


def _tanh(x: Tensor) -> Tensor:
    """tanh(x) = 2 sigmoid(2x) - 1: on the CPU torch's sigmoid is several times faster than its tanh."""
    return torch.sigmoid(x * 2).mul_(2).sub_(1)


class _SparseHMLSTM(torch.autograd.Function):
    """Inputs: sizes, slope, mode, mixed (copy_gradient == "mixed"), eps, mask (B, T) bool or None, x (B, T, I),
    h0 (L), c0 (L), z0 (B, L-1),
    recurrent weights U_l^l (L), biases (L), top-down weights U_{l+1}^l (L-1), bottom-up weights
    W_{l-1}^l (L), LayerNorm weights (L or 0), biases (L or 0). Outputs as fused._FusedHMLSTM's."""

    @staticmethod
    def forward(ctx, sizes: Sequence[int], slope: float, mode: str, mixed: bool, eps: float, mask: Tensor | None,
                x: Tensor, *tensors: Tensor):  # type: ignore[override]
        L = len(sizes)
        h0, c0, z0 = tensors[:L], tensors[L:2 * L], tensors[2 * L]
        params = tensors[2 * L + 1:]
        recurrent, biases = params[:L], params[L:2 * L]
        top_down, bottom_up = params[2 * L:3 * L - 1], params[3 * L - 1:4 * L - 1]
        norm_weights, norm_biases = params[4 * L - 1:5 * L - 1], params[5 * L - 1:]
        layer_norm = len(norm_weights) > 0
        batch, steps, _ = x.shape
        all_rows = torch.arange(batch, device=x.device)

        # the state after every step (index t + 1), every row: outputs, and the backward's h_{t-1}, c_{t-1}
        h_states, c_states, z_states = state_buffers(x, sizes, h0, c0, z0)
        projected = input_projection(x, bottom_up[0], biases[0]).view(steps, batch, -1)
        cached_top_down = [h0[l + 1] @ top_down[l].t() for l in range(L - 1)]  # U_{l+1}^l h^{l+1}, per row
        valid = None if mask is None else mask.t()  # (T, B)
        saved: list[list[_Saved | None]] = [[None] * L for _ in range(steps)]
        saved_copies: list[list[_SavedCopy | None]] = [[None] * L for _ in range(steps)]

        for t in range(steps):
            z_t = z_states[t + 1]
            z_t.copy_(z_states[t])  # rows that do not compute keep their z
            for l, size in enumerate(sizes):
                top = l == L - 1
                # Bernoulli boundaries draw one uniform per row and detector at every step, as the reference does
                uniforms = torch.rand(batch, 1, dtype=x.dtype, device=x.device) if mode == "bernoulli" and not top else None
                # the rows that compute: in layer 1 all valid rows; above, those that UPDATE or FLUSH
                if l == 0:
                    computing = None if valid is None else valid[t]
                else:
                    computing = z_t[:, l - 1] > 0.5
                    if not top:
                        computing = computing | (z_states[t, :, l] > 0.5)
                    if valid is not None:
                        computing = computing & valid[t]
                rows = None if computing is None else all_rows[computing]
                if rows is not None and rows.numel() == batch:
                    rows = None
                if mixed and l > 0:  # the valid rows that COPY: their gates, for the gradient of the choice
                    copying = ~computing if valid is None else ~computing & valid[t]
                    copy_rows = all_rows[copying]
                    if copy_rows.numel():
                        saved_copies[t][l] = _copy_gates(
                            copy_rows, h_states[l][t], recurrent[l], biases[l], size, top, slope, mode,
                            None if uniforms is None else uniforms.index_select(0, copy_rows),
                            norm_weights[l] if layer_norm else None, norm_biases[l] if layer_norm else None, eps)
                h_new_all, c_new_all = h_states[l][t + 1], c_states[l][t + 1]
                if rows is not None:
                    h_new_all.copy_(h_states[l][t])
                    c_new_all.copy_(c_states[l][t])
                    if rows.numel() == 0:
                        continue

                # Eq. 5 for these rows
                h_prev = _gather(h_states[l][t], rows)
                below = None
                if l == 0:
                    s = torch.addmm(_gather(projected[t], rows), h_prev, recurrent[0].t())
                else:
                    below = _gather(z_t[:, l - 1:l], rows) * _gather(h_states[l - 1][t + 1], rows)
                    s = times_transposed(h_prev, recurrent[l]).add_(biases[l])
                    s += times_transposed(below, bottom_up[l])
                z_prev = top_down_term = None
                if not top:
                    z_prev = _gather(z_states[t, :, l:l + 1], rows)
                    # a copy: the cache changes in place when layer l+1 computes
                    top_down_term = cached_top_down[l].clone() if rows is None else cached_top_down[l].index_select(0, rows)
                    s.addcmul_(z_prev, top_down_term)
                pre_norm = mean = inverse_std = None
                if layer_norm:  # over the whole pre-activation, the boundary's included
                    pre_norm = s
                    s, mean, inverse_std = torch.native_layer_norm(s, [s.shape[1]], norm_weights[l], norm_biases[l], eps)
                act = _gate_activations(s, size)
                f, i, o, g = act.chunk(4, dim=1)
                # no COPY here: FLUSH c = i g where z_{t-1} = 1, UPDATE c = f c_{t-1} + i g elsewhere
                fc = f * _gather(c_states[l][t], rows)
                c = torch.add(i * g, fc) if top else torch.addcmul(i * g, fc, 1 - z_prev)
                h = o * _tanh(c)
                _scatter(h_new_all, rows, h)
                _scatter(c_new_all, rows, c)
                if l > 0:  # h^l changed for these rows: refresh layer l-1's top-down term
                    _scatter(cached_top_down[l - 1], rows, times_transposed(h, top_down[l - 1]))
                z_hat = boundary_input = None
                if not top:
                    boundary_input = s[:, 4 * size:]
                    z_hat = _detector(boundary_input, slope, mode, None if uniforms is None else _gather(uniforms, rows))
                    _scatter(z_t[:, l], rows, z_hat[:, 0])
                saved[t][l] = _Saved(rows, h_prev, below, top_down_term, act, z_hat, boundary_input,
                                     pre_norm, mean, inverse_std)

        ctx.sizes, ctx.slope, ctx.batch = tuple(sizes), slope, batch
        ctx.saved, ctx.saved_copies = saved, saved_copies
        ctx.save_for_backward(mask, x, z_states, *h_states, *c_states, *recurrent, *top_down, *bottom_up,
                              *norm_weights)
        keep = None if mask is None else mask.to(x.dtype)
        return pack_outputs(h_states, c_states, z_states, z_states[1:], keep, steps)

    @staticmethod
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        sizes, slope, L, batch = ctx.sizes, ctx.slope, len(ctx.sizes), ctx.batch
        mask, x, z_states, *rest = ctx.saved_tensors
        h_states, c_states, recurrent = rest[:L], rest[L:2 * L], rest[2 * L:3 * L]
        top_down, bottom_up, norm_weights = rest[3 * L:4 * L - 1], rest[4 * L - 1:5 * L - 1], rest[5 * L - 1:]
        layer_norm = len(norm_weights) > 0
        # the weights as the few-row products of the backward pass read them, d s @ W = d s @ (W^T)^T
        transposed = (lambda w: w.t().contiguous()) if available_for(x) else (lambda w: w.t())
        recurrent_t, top_down_t, bottom_up_t = ([transposed(w) for w in weights]
                                                for weights in (recurrent, top_down, bottom_up))
        saved: list[list[_Saved | None]] = ctx.saved
        saved_copies: list[list[_SavedCopy | None]] = ctx.saved_copies
        steps = z_states.shape[0] - 1
        keep = None if mask is None else mask.t().unsqueeze(-1).to(x.dtype)  # (T, B, 1)
        grad_hidden = [g.transpose(0, 1) for g in grads[:L]]  # (T, B, H)
        grad_boundaries = grads[L].transpose(0, 1)

        # gradients with respect to the state after step t; a row that does not compute passes its own back
        grad_h = [g.clone() for g in grads[L + 1:2 * L + 1]]
        grad_c = [g.clone() for g in grads[2 * L + 1:3 * L + 1]]
        grad_z = grads[3 * L + 1].clone()
        grad_s: list[list[Tensor]] = [[] for _ in range(L)]  # d loss / d s of the computing rows, newest first
        grad_normed: list[list[Tensor]] = [[] for _ in range(L)]  # the same after layer norm
        flushed: list[list[tuple[Tensor, Tensor]]] = [[] for _ in range(L - 1)]  # (d s, h^{l+1}) of FLUSH rows
        grad_projected = x.new_zeros(steps, batch, recurrent[0].shape[0])

        for t in reversed(range(steps)):
            for l in range(L):
                grad_h[l] += grad_hidden[l][t] if keep is None else grad_hidden[l][t] * keep[t]
            grad_z += grad_boundaries[t] if keep is None else grad_boundaries[t] * keep[t]
            for l in reversed(range(L)):
                if saved_copies[t][l] is not None:
                    _copy_backward(saved_copies[t][l], l, L, h_states[l][t], c_states[l][t], grad_h[l], grad_c[l],
                                   grad_z)
                step = saved[t][l]
                if step is None:
                    continue
                size, top, rows = sizes[l], l == L - 1, step.rows
                f, i, o, g = step.activations.chunk(4, dim=1)
                c_prev = _gather(c_states[l][t], rows)
                z_prev = None if top else _gather(z_states[t, :, l:l + 1], rows)
                update = None if top else 1 - z_prev  # no row here COPYs: flush + update = 1
                ig, fc = i * g, f * c_prev
                c = torch.add(ig, fc) if top else torch.addcmul(ig, fc, update)  # recomputed: cheaper than saved
                tanh_c = _tanh(c)
                dh, dc = _gather(grad_h[l], rows), _gather(grad_c[l], rows)
                d_act = torch.empty_like(step.activations)  # d f, d i, d o, d g
                torch.mul(dh, tanh_c, out=d_act[:, 2 * size:3 * size])
                # Eq. 3: h = copy h_prev + (1 - copy) o tanh(c), at copy = 0
                d_copy = _row_sum(dh, step.h_prev - o * tanh_c)
                dc = dc + torch.ops.aten.tanh_backward(dh * o, tanh_c)
                # Eq. 2 as one sum: c = flush i g + update (f c_prev + i g) + copy c_prev
                d_flush = _row_sum(dc, ig)
                d_update = d_flush + _row_sum(dc, fc)
                d_copy += _row_sum(dc, c_prev)
                dc_update = dc if top else dc * update
                torch.mul(dc_update, c_prev, out=d_act[:, :size])
                torch.mul(dc, g, out=d_act[:, size:2 * size])
                torch.mul(dc, i, out=d_act[:, 3 * size:])
                _scatter(grad_c[l], rows, dc_update * f)
                ds = x.new_empty(d_act.shape[0], recurrent[l].shape[0])
                torch.ops.aten.sigmoid_backward.grad_input(d_act[:, :3 * size], step.activations[:, :3 * size],
                                                           grad_input=ds[:, :3 * size])
                torch.ops.aten.tanh_backward.grad_input(d_act[:, 3 * size:], g, grad_input=ds[:, 3 * size:4 * size])
                if not top:
                    # z = z_hat here; z_hat straight-through: a/2 inside |a s| < 1
                    dz = _gather(grad_z[:, l:l + 1], rows)
                    d_copy += dz * (z_prev - step.z_hat)
                    torch.mul(dz * (slope / 2.0), (slope * step.boundary_input).abs() < 1, out=ds[:, 4 * size:])
                if layer_norm:  # y = x_hat * gamma + beta
                    grad_normed[l].append(ds)
                    ds = torch.ops.aten.native_layer_norm_backward(ds, step.pre_norm, [ds.shape[1]], step.mean,
                                                                   step.inverse_std, norm_weights[l], None,
                                                                   [True, False, False])[0]
                grad_s[l].append(ds)
                _scatter(grad_h[l], rows, times_transposed(ds, recurrent_t[l]))
                below = 1.0 if l == 0 else _gather(z_states[t + 1, :, l - 1:l], rows)
                if l == 0:
                    _scatter(grad_projected[t], rows, ds)
                if not top:
                    # flush = z_prev, update = (1 - z_prev) z_below, copy = (1 - z_prev)(1 - z_below);
                    # top-down: s += z_prev U h^{l+1}, so d z_prev gets d s . (U h^{l+1}), the cached term
                    d_z_prev = d_flush - d_update * below - d_copy * (1 - below) + _row_sum(ds, step.top_down)
                    _scatter(grad_z[:, l], rows, d_z_prev[:, 0])
                    flush_rows = (z_prev[:, 0] > 0.5).nonzero()[:, 0]
                    if flush_rows.numel():
                        ds_flush = ds.index_select(0, flush_rows)
                        above_rows = flush_rows if rows is None else rows.index_select(0, flush_rows)
                        grad_h[l + 1].index_add_(0, above_rows, times_transposed(ds_flush, top_down_t[l]))
                        flushed[l].append((ds_flush, h_states[l + 1][t].index_select(0, above_rows)))
                if l > 0:
                    da_below = times_transposed(ds, bottom_up_t[l])
                    h_below = _gather(h_states[l - 1][t + 1], rows)
                    _scatter_add(grad_h[l - 1], rows, below * da_below)
                    from_above = _row_sum(da_below, h_below)
                    if not top:
                        from_above += (d_update - d_copy) * update
                    else:
                        from_above += d_update - d_copy
                    _scatter_add(grad_z[:, l - 1], rows, from_above[:, 0])

        # the parameters' gradients, one GEMM (or sum) per weight over every row that used it
        grad_recurrent, grad_biases, grad_top_down, grad_bottom_up, grad_norm_weights, grad_norm_biases = \
            [], [], [], [], [], []
        for l in range(L):
            computed = [saved[t][l] for t in range(steps) if saved[t][l] is not None]
            width = recurrent[l].shape[0]
            if not computed:
                ds_all = x.new_zeros(0, width)
                computed_h = x.new_zeros(0, sizes[l])
            else:
                ds_all = torch.cat(grad_s[l][::-1])  # filled backwards in time: reversed to pair with `computed`
                computed_h = torch.cat([s.h_prev for s in computed])
            grad_recurrent.append(ds_all.t() @ computed_h)
            grad_biases.append(ds_all.sum(dim=0))
            if l > 0:
                below_all = torch.cat([s.below for s in computed]) if computed else x.new_zeros(0, sizes[l - 1])
                grad_bottom_up.append(ds_all.t() @ below_all)
            if l < L - 1:
                if flushed[l]:
                    grad_top_down.append(torch.cat([d for d, _ in flushed[l]]).t() @ torch.cat([h for _, h in flushed[l]]))
                else:
                    grad_top_down.append(torch.zeros_like(top_down[l]))
            if layer_norm:
                if computed:
                    dn_all = torch.cat(grad_normed[l][::-1])
                    x_hat = ((torch.cat([s.pre_norm for s in computed]) - torch.cat([s.mean for s in computed]))
                             * torch.cat([s.inverse_std for s in computed]))
                    grad_norm_weights.append((dn_all * x_hat).sum(dim=0))
                    grad_norm_biases.append(dn_all.sum(dim=0))
                else:
                    grad_norm_weights.append(x.new_zeros(width))
                    grad_norm_biases.append(x.new_zeros(width))
        # layer 1 reads x with z^0 = 1: W_0^1 x_t + b, every step
        grad_projected = grad_projected.transpose(0, 1).flatten(0, 1)  # (B*T, 4H+1)
        grad_x = (grad_projected @ bottom_up[0]).view_as(x)
        # (x^T g)^T, not g^T x: with I = 3 inputs the latter is a skinny product 20x slower on the CPU
        grad_bottom_up.insert(0, (x.flatten(0, 1).t() @ grad_projected).t().contiguous())
        ctx.saved = ctx.saved_copies = None
        return (None, None, None, None, None, None, grad_x, *grad_h, *grad_c, grad_z,
                *grad_recurrent, *grad_biases, *grad_top_down, *grad_bottom_up, *grad_norm_weights, *grad_norm_biases)


def _gate_activations(s: Tensor, size: int) -> Tensor:
    """Eq. 6, f, i, o, g (n, 4H) through one sigmoid: g = tanh(s_g) = 2 sigmoid(2 s_g) - 1 (s_g is doubled in place)."""
    s[:, 3 * size:4 * size] *= 2
    act = torch.sigmoid(s[:, :4 * size])
    act[:, 3 * size:].mul_(2).sub_(1)
    return act


def _detector(boundary_input: Tensor, slope: float, mode: str, uniforms: Tensor | None) -> Tensor:
    """z^ (n, 1) from the boundary pre-activation, Eq. 8-9 as core._BoundaryFunction: a step, or for
    Bernoulli boundaries the rows' own uniform draws (`uniforms`, (n, 1))."""
    z_tilde = hard_sigmoid(slope * boundary_input)
    return (z_tilde > 0.5 if mode == "step" else uniforms < z_tilde).to(boundary_input.dtype)


def _copy_gates(rows: Tensor, h_prev: Tensor, recurrent: Tensor, bias: Tensor, size: int, top: bool, slope: float,
                mode: str, uniforms: Tensor | None, norm_weight: Tensor | None, norm_bias: Tensor | None,
                eps: float) -> _SavedCopy:
    """The gates (and z^) a COPY row would have had: s = U_l^l h^l_{t-1} + b, its top-down and bottom-up
    terms gated off by z^l_{t-1} = z^{l-1}_t = 0 (Eq. 5). Forward only: the row's state stays as it is."""
    s = torch.addmm(bias, h_prev.index_select(0, rows), recurrent.t())
    if norm_weight is not None:
        s = torch.native_layer_norm(s, [s.shape[1]], norm_weight, norm_bias, eps)[0]
    act = _gate_activations(s, size)
    return _SavedCopy(rows, act, None if top else _detector(s[:, 4 * size:], slope, mode, uniforms))


def _copy_backward(copied: _SavedCopy, l: int, L: int, h_prev_all: Tensor, c_prev_all: Tensor, grad_h: Tensor,
                   grad_c: Tensor, grad_z: Tensor) -> None:
    """copy_gradient="mixed" on layer l's COPY rows at one step: what the choice of COPY passes back.

    With flush = z_prev, update = (1 - z_prev) z_below, copy = (1 - z_prev)(1 - z_below) and
    z_prev = z_below = 0 on these rows, d z_prev = d flush - d copy and d z_below = d update - d copy.
    The state's own gradients (grad_h, grad_c) pass through unchanged, as COPY is the identity;
    the z the row keeps passes none back (core.py), so its gradient is replaced, not added to.
    """
    rows, top = copied.rows, l == L - 1
    f, i, o, g = copied.activations.chunk(4, dim=1)
    h_prev, c_prev = h_prev_all.index_select(0, rows), c_prev_all.index_select(0, rows)
    dh, dc = grad_h.index_select(0, rows), grad_c.index_select(0, rows)
    ig = i * g
    d_flush = _row_sum(dc, ig)  # Eq. 2: c = flush i g + update (f c_prev + i g) + copy c_prev
    d_update = d_flush + _row_sum(dc, f * c_prev)
    d_copy = _row_sum(dc, c_prev) + _row_sum(dh, h_prev - o * _tanh(c_prev))  # Eq. 3, c = c_prev here
    if not top:  # z = copy z_prev + (1 - copy) z^, z_prev = 0
        d_copy -= grad_z[:, l:l + 1].index_select(0, rows) * copied.z_hat
        grad_z[:, l].index_copy_(0, rows, (d_flush - d_copy)[:, 0])
    grad_z[:, l - 1].index_add_(0, rows, (d_update - d_copy)[:, 0])
