"""The HM-LSTM's fused training path: the same model as core.HMLSTM, with a hand-written backward.

core.HMLSTM.forward (impl="fused") calls `hmlstm_fused`. The forward pass runs the reference's
equations (see core's docstring) with fewer, larger operations, and saves what its backward
needs; the backward pass is back-propagation through time written out, with the same
straight-through estimator on z as core._BoundaryFunction. What is fused:

- one GEMM per layer and step, over the concatenated inputs [h^l_{t-1}, z^l_{t-1} h^{l+1}_{t-1},
  z^{l-1}_t h^{l-1}_t] and the weights [U_l^l, U_{l+1}^l, W_{l-1}^l] concatenated once per call;
- layer 1's input projection W_0^1 x_t for all steps in one GEMM before the loop (z^0 = 1);
- weight, bias and layer-norm gradients as one GEMM (or sum) per layer after the time loop,
  over every step's saved inputs and pre-activation gradients, instead of one per step;
- no autograd graph: the loop allocates nothing autograd has to track.

The results equal the reference's up to float rounding (tests/handwriting_hm/hmlstm/test_fused.py checks outputs,
final state and every gradient). Layer norm here is computed by hand (to keep x-hat and 1/std
for the backward), so it differs from nn.LayerNorm by rounding only.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..cell_types import HMLSTMLike, HMLSTMOutput, HMLSTMState, hard_sigmoid
from .buffers import concatenated_weights, norm_parameters, pack_outputs, unpack_inputs, unpack_outputs


def hmlstm_fused(core: HMLSTMLike, x: Tensor, state: HMLSTMState, mask: Tensor | None, slope: float,
                 mode: str) -> HMLSTMOutput:
    """core.HMLSTM.forward with already checked arguments, computed by _FusedHMLSTM."""
    L = core.num_layers
    norm_weights, norm_biases, eps = norm_parameters(core)
    valid = None if mask is None else mask.to(x.dtype)
    outputs = _FusedHMLSTM.apply(core.hidden_sizes, slope, mode, core.copy_gradient == "straight", eps, valid, x,
                                 core.bottom_up[0].weight, *state.h, *state.c, state.z, *concatenated_weights(core),
                                 *[layer.bias for layer in core.recurrent], *norm_weights, *norm_biases)
    return unpack_outputs(outputs, L)


class _FusedHMLSTM(torch.autograd.Function):
    """Inputs: sizes, slope, mode, straight (copy_gradient == "straight"), eps, valid (B, T) or None, x (B, T, I), W_0^1, h0 (L), c0 (L),
    z0 (B, L-1), concatenated weights (L), biases (L), LayerNorm weights (L or 0), biases (L or 0).
    Outputs: hidden (L, each (B, T, H_l)), boundaries (B, T, L-1), h (L), c (L), z (B, L-1)."""

    @staticmethod
    def forward(ctx, sizes: Sequence[int], slope: float, mode: str, straight: bool, eps: float, valid: Tensor | None,
                x: Tensor, input_weight: Tensor, *tensors: Tensor):  # type: ignore[override]
        L = len(sizes)
        h0, c0, z0, weights, biases, norm_weights, norm_biases = unpack_inputs(tensors, L)
        layer_norm = len(norm_weights) > 0
        batch, steps, _ = x.shape
        time_major_valid = None if valid is None else valid.t().unsqueeze(-1)  # (T, B, 1)

        # saved per layer and step: the state before and after, the GEMM's input, the gates
        h_states = [x.new_empty(steps + 1, batch, size) for size in sizes]
        c_states = [x.new_empty(steps + 1, batch, size) for size in sizes]
        z_states = x.new_empty(steps + 1, batch, L - 1)
        z_steps = x.new_empty(steps, batch, L - 1)  # z_t before masking
        z_hats = x.new_empty(steps, batch, L - 1)  # the detector's output, kept even where a COPY discards it
        inputs = [x.new_empty(steps, batch, w.shape[1]) for w in weights]
        activations = [x.new_empty(steps, batch, 4 * size) for size in sizes]  # f, i, o, g
        boundary_inputs = x.new_empty(steps, batch, max(L - 1, 1))
        normalised = [x.new_empty(steps, batch, w.shape[0]) for w in weights] if layer_norm else []
        inverse_std = [x.new_empty(steps, batch, 1) for _ in sizes] if layer_norm else []
        for l in range(L):
            h_states[l][0] = h0[l]
            c_states[l][0] = c0[l]
        z_states[0] = z0
        projected = (x @ input_weight.t()).transpose(0, 1)  # W_0^1 x_t for every t, (T, B, 4H+1)

        for t in range(steps):
            h_below, z_below = None, None  # layer 1: x_t (projected) with z^0 = 1
            for l, size in enumerate(sizes):
                top = l == L - 1
                z_prev = None if top else z_states[t, :, l:l + 1]
                a = inputs[l][t]
                a[:, :size] = h_states[l][t]
                if not top:
                    torch.mul(z_prev, h_states[l + 1][t], out=a[:, size:size + sizes[l + 1]])
                if l > 0:
                    torch.mul(z_below, h_below, out=a[:, a.shape[1] - sizes[l - 1]:])
                s = torch.addmm(biases[l], a, weights[l].t())
                if l == 0:
                    s += projected[t]
                if layer_norm:  # over the whole pre-activation, the boundary's included
                    mean = s.mean(dim=1, keepdim=True)
                    rstd = torch.rsqrt(s.var(dim=1, unbiased=False, keepdim=True) + eps)
                    x_hat = (s - mean) * rstd
                    normalised[l][t], inverse_std[l][t] = x_hat, rstd
                    s = x_hat * norm_weights[l] + norm_biases[l]
                gates = s[:, :4 * size]
                act = activations[l][t]
                torch.sigmoid(gates[:, :3 * size], out=act[:, :3 * size])
                torch.tanh(gates[:, 3 * size:], out=act[:, 3 * size:])
                f, i, o, g = act.chunk(4, dim=1)
                flush, update, copy = _operations(z_prev, z_below)
                c_prev, h_prev = c_states[l][t], h_states[l][t]
                c = flush * (i * g) + update * (f * c_prev + i * g) + copy * c_prev
                h = copy * h_prev + (1 - copy) * (o * torch.tanh(c))
                if not top:
                    boundary_inputs[t, :, l:l + 1] = s[:, 4 * size:]
                    z_tilde = hard_sigmoid(slope * s[:, 4 * size:])  # Eq. 8-9, as core._BoundaryFunction
                    if mode == "step":
                        z_hat = (z_tilde > 0.5).to(z_tilde.dtype)
                    elif mode == "bernoulli":  # as core._BoundaryFunction: one uniform per row
                        z_hat = (torch.rand_like(z_tilde) < z_tilde).to(z_tilde.dtype)
                    else:
                        z_hat = z_tilde
                    z = copy * z_prev + (1 - copy) * z_hat
                    z_steps[t, :, l:l + 1], z_hats[t, :, l:l + 1] = z, z_hat
                if time_major_valid is None:
                    h_states[l][t + 1], c_states[l][t + 1] = h, c
                else:
                    keep = time_major_valid[t] > 0
                    h_states[l][t + 1] = torch.where(keep, h, h_prev)
                    c_states[l][t + 1] = torch.where(keep, c, c_prev)
                if not top:
                    h_below, z_below = h, z
            z_states[t + 1] = z_steps[t] if time_major_valid is None else torch.where(
                time_major_valid[t] > 0, z_steps[t], z_states[t])

        ctx.sizes, ctx.slope, ctx.eps, ctx.straight = tuple(sizes), slope, eps, straight
        ctx.save_for_backward(time_major_valid, x, input_weight, z_states, z_steps, z_hats, boundary_inputs,
                              *h_states, *c_states, *inputs, *activations, *weights, *norm_weights,
                              *normalised, *inverse_std)
        return pack_outputs(h_states, c_states, z_states, z_steps, valid, steps)

    @staticmethod
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        sizes, slope, L, straight = ctx.sizes, ctx.slope, len(ctx.sizes), ctx.straight
        saved = list(ctx.saved_tensors)
        valid, x, input_weight, z_states, z_steps, z_hats, boundary_inputs = saved[:7]
        rest = saved[7:]
        h_states, c_states, inputs, activations, weights = (rest[k * L:(k + 1) * L] for k in range(5))
        rest = rest[5 * L:]
        layer_norm = len(rest) > 0
        norm_weights, normalised, inverse_std = (rest[k * L:(k + 1) * L] for k in range(3)) if layer_norm else ((), (), ())
        grad_hidden = [g.transpose(0, 1) for g in grads[:L]]  # (T, B, H)
        grad_boundaries = grads[L].transpose(0, 1)
        steps, batch = z_steps.shape[:2]
        if valid is not None:
            grad_hidden = [g * valid for g in grad_hidden]
            grad_boundaries = grad_boundaries * valid

        # gradients with respect to the state after step t, carried backwards
        grad_h = [g.clone() for g in grads[L + 1:2 * L + 1]]
        grad_c = [g.clone() for g in grads[2 * L + 1:3 * L + 1]]
        grad_z = grads[3 * L + 1].clone()
        grad_s = [x.new_empty(steps, batch, w.shape[0]) for w in weights]  # d loss / d s, every step
        grad_normalised = [x.new_empty(steps, batch, w.shape[0]) for w in weights] if layer_norm else []
        ones = x.new_ones(batch, 1)

        for t in reversed(range(steps)):
            for l in range(L):
                grad_h[l] = grad_h[l] + grad_hidden[l][t]
            grad_z = grad_z + grad_boundaries[t]
            if valid is None:
                new_h, new_c, new_z = grad_h, grad_c, grad_z
                grad_h = [torch.zeros_like(g) for g in grad_h]
                grad_c = [torch.zeros_like(g) for g in grad_c]
                grad_z = torch.zeros_like(grad_z)
            else:  # a padded step passes the state through unchanged
                keep = valid[t]
                new_h, new_c, new_z = [g * keep for g in grad_h], [g * keep for g in grad_c], grad_z * keep
                grad_h = [g * (1 - keep) for g in grad_h]
                grad_c = [g * (1 - keep) for g in grad_c]
                grad_z = grad_z * (1 - keep)
            from_above_h, from_above_z = None, None
            for l in reversed(range(L)):
                size, top = sizes[l], l == L - 1
                z_prev = None if top else z_states[t, :, l:l + 1]
                z_below = None if l == 0 else z_steps[t, :, l - 1:l]
                flush, update, copy = _operations(z_prev, z_below)
                f, i, o, g = activations[l][t].chunk(4, dim=1)
                h_prev, c_prev = h_states[l][t], c_states[l][t]
                c = flush * (i * g) + update * (f * c_prev + i * g) + copy * c_prev  # recomputed: cheaper than saved
                tanh_c = torch.tanh(c)
                dh = new_h[l] if from_above_h is None else new_h[l] + from_above_h
                # Eq. 3: h = copy h_prev + (1 - copy) o tanh(c)
                d_copy = (dh * (h_prev - o * tanh_c)).sum(dim=1, keepdim=True)
                grad_h[l] = grad_h[l] + copy * dh
                d_o_tanh = (1 - copy) * dh
                do = d_o_tanh * tanh_c
                dc = new_c[l] + d_o_tanh * o * (1 - tanh_c * tanh_c)
                # Eq. 2 as one sum: c = flush i g + update (f c_prev + i g) + copy c_prev
                ig = i * g
                d_flush = (dc * ig).sum(dim=1, keepdim=True)
                d_update = (dc * (f * c_prev + ig)).sum(dim=1, keepdim=True)
                d_copy = d_copy + (dc * c_prev).sum(dim=1, keepdim=True)
                d_ig = dc * (flush + update)
                df = dc * update * c_prev
                grad_c[l] = grad_c[l] + dc * (update * f + copy)
                di, dg = d_ig * g, d_ig * i
                ds = grad_s[l][t]
                ds[:, :4 * size] = torch.cat([df * f * (1 - f), di * i * (1 - i), do * o * (1 - o),
                                              dg * (1 - g * g)], dim=1)
                if top:
                    d_z_prev = None
                else:
                    # z = copy z_prev + (1 - copy) z_hat; z_hat straight-through: a/2 inside |a s| < 1
                    dz = new_z[:, l:l + 1] if from_above_z is None else new_z[:, l:l + 1] + from_above_z
                    s_z = boundary_inputs[t, :, l:l + 1]
                    d_copy = d_copy + (dz * (z_prev - z_hats[t, :, l:l + 1])).sum(dim=1, keepdim=True)
                    ds[:, 4 * size:] = dz * (1 - copy) * ((slope * s_z).abs() < 1).to(dz.dtype) * (slope / 2.0)
                    d_z_prev = dz * copy if straight else 0.0  # "mixed": the kept z passes none (core.py)
                if straight and isinstance(copy, Tensor):  # see HMLSTM.step: a COPY row passes no gradient to its z's
                    computed = (copy < 1).to(ds.dtype)
                    d_flush, d_update, d_copy = d_flush * computed, d_update * computed, d_copy * computed
                if layer_norm:  # y = x_hat * gamma + beta, x_hat = (s - mean) / std
                    grad_normalised[l][t] = ds
                    d_hat = ds * norm_weights[l]
                    x_hat = normalised[l][t]
                    ds.copy_(inverse_std[l][t] * (d_hat - d_hat.mean(dim=1, keepdim=True)
                                                  - x_hat * (d_hat * x_hat).mean(dim=1, keepdim=True)))
                da = ds @ weights[l]
                grad_h[l] = grad_h[l] + da[:, :size]
                # flush = z_prev, update = (1 - z_prev) z_below, copy = (1 - z_prev)(1 - z_below)
                below = ones if z_below is None else z_below
                if not top:
                    da_top = da[:, size:size + sizes[l + 1]]
                    grad_h[l + 1] = grad_h[l + 1] + z_prev * da_top
                    d_z_prev = (d_z_prev + d_flush - d_update * below - d_copy * (1 - below)
                                + (da_top * h_states[l + 1][t]).sum(dim=1, keepdim=True))
                    grad_z[:, l:l + 1] = grad_z[:, l:l + 1] + d_z_prev
                if l > 0:
                    not_flush = 1 - (0 if z_prev is None else z_prev)
                    da_below = da[:, da.shape[1] - sizes[l - 1]:]
                    h_below = h_states[l - 1][t + 1]  # equal to the step's h^{l-1} wherever it matters
                    from_above_h = z_below * da_below
                    from_above_z = (d_update * not_flush - d_copy * not_flush
                                    + (da_below * h_below).sum(dim=1, keepdim=True))

        # the parameters' gradients, one GEMM (or sum) per layer over all steps
        grad_weights = [ds.flatten(0, 1).t() @ a.flatten(0, 1) for ds, a in zip(grad_s, inputs)]
        grad_biases = [ds.sum(dim=(0, 1)) for ds in grad_s]
        grad_projected = grad_s[0].transpose(0, 1)  # (B, T, 4H+1): layer 1 reads x with z^0 = 1
        grad_x = grad_projected @ input_weight
        # (x^T g)^T, not g^T x: with I = 3 inputs the latter is a skinny product 20x slower on the CPU
        grad_input_weight = (x.flatten(0, 1).t() @ grad_projected.flatten(0, 1)).t().contiguous()
        grad_norm_weights = [(d * x_hat).sum(dim=(0, 1)) for d, x_hat in zip(grad_normalised, normalised)]
        grad_norm_biases = [d.sum(dim=(0, 1)) for d in grad_normalised]
        return (None, None, None, None, None, None, grad_x, grad_input_weight, *grad_h, *grad_c, grad_z,
                *grad_weights, *grad_biases, *grad_norm_weights, *grad_norm_biases)


def _operations(z_prev: Tensor | None, z_below: Tensor | None) -> tuple[Tensor | float, Tensor | float, Tensor | float]:
    """flush, update, copy (Eq. 2) from z_{t-1}^l (None: the top layer, 0) and z_t^{l-1} (None: layer 1, 1)."""
    if z_prev is None and z_below is None:
        return 0.0, 1.0, 0.0
    if z_below is None:
        return z_prev, 1 - z_prev, 0.0
    if z_prev is None:
        return 0.0, z_below, 1 - z_below
    return z_prev, (1 - z_prev) * z_below, (1 - z_prev) * (1 - z_below)
