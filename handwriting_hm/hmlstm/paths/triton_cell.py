"""The HM-LSTM's training path with Triton kernels: fused.py's structure, one kernel per layer-step.

`hmlstm_triton` takes the arguments of fused.hmlstm_fused and returns the same HMLSTMOutput.
Per layer and step the forward pass runs one torch GEMM over the concatenated inputs
[h^l_{t-1}, z^l_{t-1} h^{l+1}_{t-1}, z^{l-1}_t h^{l-1}_t] (layer 1's input projection for all
steps at once, before the loop) and one Triton kernel (triton_kernels.hmlstm_forward_kernel)
for everything element-wise: bias, layer norm, gates, UPDATE/COPY/FLUSH, c and h, the boundary,
padding, and the next GEMMs' input slots. The backward pass mirrors it: one kernel per
layer-step, one GEMM for the input gradient, and after the time loop one GEMM per layer for
the weights. The state lives in fp32 (or the input's dtype); only the GEMMs may run in a
lower precision (`matmul_dtype`, or the autocast dtype when called under autocast).

Bernoulli boundaries use uniforms drawn up front from the global generator with the very calls
the reference makes (core._BoundaryFunction: torch.rand_like(z~), z~ of shape (B, 1)): one
torch.rand(B, 1) per step and detector layer, in the order step t, layer l, in x's dtype and
device, read as z = 1 where u < z~. So with the same seed the samples are the reference's.

core.copy_gradient ("straight" or "mixed", see HMLSTM.step) selects the backward kernel's
STRAIGHT_COPY: with "straight" a row that COPYs exactly passes no gradient through the choice
of operation (to z_prev or z_below); the forward pass is the same in both.
"""
from __future__ import annotations


import torch
from torch import Tensor

from ..cell_types import COPY_GRADIENTS, HMLSTMLike, HMLSTMOutput, HMLSTMState, Slope
from .buffers import concatenated_weights, norm_parameters, pack_outputs, unpack_inputs, unpack_outputs

try:  # the kernels need triton; without it the path reports itself unavailable
    import triton
    from . import triton_kernels as kernels
except ImportError:
    triton = kernels = None

_MODES = {"step": 0, "bernoulli": 1, "soft": 2}  # the kernels' MODE


def triton_available(device: torch.device | str) -> bool:
    """Whether hmlstm_triton can run on `device`: a CUDA device with triton importable, or the
    CPU with the kernels decorated under TRITON_INTERPRET=1 (set before this module's import)."""
    if kernels is None:
        return False
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and kernels.INTERPRETED


def hmlstm_triton(core: HMLSTMLike, x: Tensor, state: HMLSTMState, mask: Tensor | None, slope: Slope,
                  mode: str, matmul_dtype: torch.dtype | None = None) -> HMLSTMOutput:
    """core.HMLSTM.forward with already checked arguments, computed by _TritonHMLSTM.

    matmul_dtype: the GEMMs' dtype (e.g. torch.bfloat16); None takes autocast's dtype when
    autocast is on for x's device, else x's dtype (with TF32 as torch's matmul settings say).
    """
    if not triton_available(x.device):
        raise RuntimeError(f"the Triton path cannot run on {x.device}: check triton_available() first")
    device_type = x.device.type
    if matmul_dtype is None and torch.is_autocast_enabled(device_type):
        matmul_dtype = torch.get_autocast_dtype(device_type)
    L = core.num_layers
    concatenated = concatenated_weights(core)
    biases = [layer.bias for layer in core.recurrent]
    norm_weights, norm_biases, eps = norm_parameters(core)
    valid = None if mask is None else mask.to(x.dtype)
    uniforms = None  # Bernoulli draws: the reference's torch.rand_like(z~) calls, in its order (t, then l)
    if mode == "bernoulli":
        batch, steps = x.shape[0], x.shape[1]
        uniforms = torch.stack([torch.rand(batch, 1, dtype=x.dtype, device=x.device)[:, 0]
                                for _ in range(steps * (L - 1))]).view(steps, L - 1, batch)
    if core.copy_gradient not in COPY_GRADIENTS:
        raise ValueError(f"unknown copy_gradient {core.copy_gradient!r}")
    straight = core.copy_gradient == "straight"
    # the kernels read the slope from device memory (a number becomes a tensor here, without a host wait)
    slope = slope.reshape(1).to(x.dtype) if isinstance(slope, Tensor) else x.new_full((1,), float(slope))
    with torch.autocast(device_type, enabled=False):  # the GEMMs' precision is matmul_dtype's
        outputs = _TritonHMLSTM.apply(core.hidden_sizes, slope, mode, straight, eps, valid, uniforms, matmul_dtype, x,
                                      core.bottom_up[0].weight, *state.h, *state.c, state.z, *concatenated,
                                      *biases, *norm_weights, *norm_biases)
    return unpack_outputs(outputs, L)


def _matmul(a: Tensor, b: Tensor, dtype: torch.dtype | None, out: Tensor | None = None) -> Tensor:
    """a @ b (2-D) computed in `dtype` (None: as given), returned in a's dtype, into `out` if given.
    A lower-precision product is cast back: the kernels and the state only ever see a's dtype."""
    if dtype is None or dtype == a.dtype:
        return torch.mm(a, b, out=out)
    product = torch.mm(a.to(dtype), b.to(dtype))
    return product.to(a.dtype) if out is None else out.copy_(product)


def _launch(kernel, batch: int, size: int, *args, **flags) -> None:
    """Run `kernel` over all rows: each program takes BLOCK_B rows of BLOCK_H >= H lanes per
    gate, BLOCK_B chosen so that a gate's tile holds about 1024 elements (one row at H = 1024)."""
    block_h = triton.next_power_of_2(size)
    block_b = max(1, min(triton.next_power_of_2(batch), 1024 // block_h))
    kernel[(triton.cdiv(batch, block_b),)](*args, B=batch, H=size, BLOCK_B=block_b, BLOCK_H=block_h,
                                            num_warps=4 if block_b * block_h <= 512 else 8, **flags)


class _TritonHMLSTM(torch.autograd.Function):
    """Inputs: sizes, slope (a one-element tensor), mode, straight (copy_gradient == "straight"), eps, valid (B, T) or None,
    uniforms (T, L-1, B) or None,
    matmul_dtype, x (B, T, I), W_0^1, h0 (L), c0 (L), z0 (B, L-1), concatenated weights (L),
    biases (L), LayerNorm weights (L or 0), biases (L or 0). Outputs as fused._FusedHMLSTM."""

    @staticmethod
    def forward(ctx, sizes, slope, mode, straight, eps, valid, uniforms, matmul_dtype,  # type: ignore[override]
                x, input_weight, *tensors):
        L = len(sizes)
        h0, c0, z0, weights, biases, norm_weights, norm_biases = unpack_inputs(tensors, L)
        layer_norm = len(norm_weights) > 0
        batch, steps, _ = x.shape
        time_major_valid = None if valid is None else valid.t().contiguous()  # (T, B)

        # The GEMMs' inputs for steps 0..T; the state h^l is their first H_l columns, so the
        # kernels write h where the next step's GEMM reads it.
        inputs = [x.new_zeros(steps + 1, batch, w.shape[1]) for w in weights]
        h_states = [a[:, :, :size] for a, size in zip(inputs, sizes)]
        c_states = [x.new_empty(steps + 1, batch, size) for size in sizes]
        z_states = x.new_empty(steps + 1, batch, L - 1)
        z_steps = x.new_empty(steps, batch, L - 1)  # z_t before masking
        z_hats = x.new_empty(steps, batch, L - 1)  # the detector's output, kept where a COPY discards it
        boundary_inputs = x.new_empty(steps, batch, L - 1)
        activations = [x.new_empty(steps, batch, 4 * size) for size in sizes]  # f, i, o, g
        normalised = [x.new_empty(steps, batch, w.shape[0]) for w in weights] if layer_norm else []
        inverse_std = [x.new_empty(steps, batch) for _ in sizes] if layer_norm else []
        for l, size in enumerate(sizes):
            h_states[l][0] = h0[l]
            c_states[l][0] = c0[l]
            if l < L - 1:
                inputs[l][0, :, size:size + sizes[l + 1]] = z0[:, l:l + 1] * h0[l + 1]
        z_states[0] = z0
        projected = _matmul(x.flatten(0, 1), input_weight.t(), matmul_dtype).view(batch, steps, -1)
        projected = (projected + biases[0]).transpose(0, 1).contiguous()  # W_0^1 x_t + b, (T, B, 4H+1)
        gemm_weights = [(w if matmul_dtype is None else w.to(matmul_dtype)).t() for w in weights]  # cast once
        products = [x.new_empty(batch, w.shape[0]) for w in weights]

        for t in range(steps):
            for l, size in enumerate(sizes):
                top, bottom = l == L - 1, l == 0
                s = _matmul(inputs[l][t], gemm_weights[l], matmul_dtype, out=products[l])
                add = projected[t] if bottom else biases[l]  # the kernel adds the bias (and layer 1's input)
                unused = s  # any tensor, for the pointers that a flag switches off
                _launch(kernels.hmlstm_forward_kernel, batch, size,
                    s, s.stride(0), add, add.stride(0) if bottom else 0,
                    norm_weights[l] if layer_norm else unused, norm_biases[l] if layer_norm else unused, eps,
                    h_states[l][t], h_states[l][t + 1], inputs[l].stride(1),
                    c_states[l][t], c_states[l][t + 1], size,
                    z_states[t, :, l] if not top else unused, z_steps[t, :, l - 1] if not bottom else unused,
                    z_states[t + 1, :, l] if not top else unused, z_steps[t, :, l] if not top else unused,
                    z_hats[t, :, l] if not top else unused, boundary_inputs[t, :, l] if not top else unused, L - 1,
                    time_major_valid[t] if valid is not None else unused,
                    uniforms[t, l] if uniforms is not None and not top else unused, slope,
                    activations[l][t], 4 * size,
                    normalised[l][t] if layer_norm else unused, weights[l].shape[0],
                    inverse_std[l][t] if layer_norm else unused,
                    inputs[l + 1][t, :, -size:] if not top else unused, inputs[l + 1].stride(1) if not top else 0,
                    inputs[l - 1][t + 1, :, sizes[l - 1]:sizes[l - 1] + size] if not bottom else unused,
                    inputs[l - 1].stride(1) if not bottom else 0,
                    z_states[t + 1, :, l - 1] if not bottom else unused,
                    IS_BOTTOM=bottom, IS_TOP=top, LAYER_NORM=layer_norm, HAS_MASK=valid is not None,
                    MODE=_MODES[mode])

        ctx.sizes, ctx.matmul_dtype, ctx.straight = tuple(sizes), matmul_dtype, bool(straight)
        ctx.save_for_backward(slope, time_major_valid, x, input_weight, z_states, z_steps, z_hats, boundary_inputs,
                              *inputs, *c_states, *activations, *weights, *norm_weights, *normalised, *inverse_std)
        return pack_outputs(h_states, c_states, z_states, z_steps, valid, steps)

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        sizes, matmul_dtype, L = ctx.sizes, ctx.matmul_dtype, len(ctx.sizes)
        slope, *saved = ctx.saved_tensors
        valid, x, input_weight, z_states, z_steps, z_hats, boundary_inputs = saved[:7]
        rest = saved[7:]
        inputs, c_states, activations, weights = (rest[k * L:(k + 1) * L] for k in range(4))
        rest = rest[4 * L:]
        layer_norm = len(rest) > 0
        norm_weights, normalised, inverse_std = (rest[k * L:(k + 1) * L] for k in range(3))
        h_states = [a[:, :, :size] for a, size in zip(inputs, sizes)]
        steps, batch = z_steps.shape[:2]
        with torch.autocast(x.device.type, enabled=False):
            gemm_weights = weights if matmul_dtype is None else [w.to(matmul_dtype) for w in weights]
            grad_hidden = [g.contiguous() for g in grads[:L]]  # (B, T, H), read at step t by stride
            grad_boundaries = grads[L].contiguous()
            # the element-wise part of the gradients w.r.t. the state after step t, updated in place
            grad_h = [g.clone(memory_format=torch.contiguous_format) for g in grads[L + 1:2 * L + 1]]
            grad_c = [g.clone(memory_format=torch.contiguous_format) for g in grads[2 * L + 1:3 * L + 1]]
            grad_z = grads[3 * L + 1].clone(memory_format=torch.contiguous_format)
            # the GEMMs' part: d loss / d (GEMM input) of the step just done (zeros after the last)
            grad_inputs = [x.new_zeros(batch, w.shape[1]) for w in weights]
            # written by layer l+1 for layer l at each step: d loss / d z^l_t through the layer
            # above's bottom-up slot (for the step's z), and through this layer's top-down slot
            # at step t+1 (for the state after step t)
            grad_z_below = [x.new_zeros(batch) for _ in sizes]
            grad_z_state = [x.new_zeros(batch) for _ in sizes]
            grad_s = [x.new_empty(steps, batch, w.shape[0]) for w in weights]  # d loss / d s, every step
            grad_y = [x.new_empty(steps, batch, w.shape[0]) for w in weights] if layer_norm else grad_s

            for t in reversed(range(steps)):
                for l in reversed(range(L)):
                    size, top, bottom = sizes[l], l == L - 1, l == 0
                    ds = grad_s[l][t]
                    unused = ds  # any tensor, for pointers a flag switches off
                    _launch(kernels.hmlstm_backward_kernel, batch, size,
                        grad_h[l], grad_c[l], size, grad_z[:, l] if not top else unused,
                        grad_hidden[l][:, t], grad_hidden[l].stride(0),
                        grad_boundaries[:, t, l] if not top else unused, grad_boundaries.stride(0),
                        valid[t] if valid is not None else unused,
                        grad_inputs[l], grad_inputs[l].stride(0),
                        grad_inputs[l - 1][:, sizes[l - 1]:] if not bottom else unused,
                        grad_inputs[l - 1].stride(0) if not bottom else 0,
                        z_states[t + 1, :, l - 1] if not bottom else unused,
                        grad_inputs[l + 1][:, -size:] if not top else unused,
                        grad_inputs[l + 1].stride(0) if not top else 0,
                        grad_z_below[l + 1] if not top else unused, grad_z_below[l],
                        grad_z_state[l], grad_z_state[l - 1] if not bottom else unused,
                        h_states[l][t], h_states[l][t + 1], inputs[l].stride(1), c_states[l][t], size,
                        z_states[t, :, l] if not top else unused, z_steps[t, :, l - 1] if not bottom else unused,
                        z_steps[t, :, l] if not top else unused, z_hats[t, :, l] if not top else unused,
                        boundary_inputs[t, :, l] if not top else unused, L - 1,
                        activations[l][t], 4 * size,
                        normalised[l][t] if layer_norm else unused, weights[l].shape[0],
                        inverse_std[l][t] if layer_norm else unused, norm_weights[l] if layer_norm else unused,
                        ds, grad_y[l][t], weights[l].shape[0], slope,
                        IS_BOTTOM=bottom, IS_TOP=top, LAYER_NORM=layer_norm, HAS_MASK=valid is not None,
                        STRAIGHT_COPY=ctx.straight)
                    _matmul(ds, gemm_weights[l], matmul_dtype, out=grad_inputs[l])

            # the initial state: the element-wise part plus step 0's GEMM inputs
            grad_h0, grad_z0 = [], grad_z
            for l, size in enumerate(sizes):
                g = grad_h[l] + grad_inputs[l][:, :size]
                if l > 0:
                    g = g + z_states[0, :, l - 1:l] * grad_inputs[l - 1][:, sizes[l - 1]:sizes[l - 1] + size]
                if l < L - 1:
                    top_down = grad_inputs[l][:, size:size + sizes[l + 1]]
                    grad_z0[:, l] += (top_down * h_states[l + 1][0]).sum(dim=1)
                grad_h0.append(g)

            # the parameters' gradients, one GEMM (or sum) per layer over all steps
            grad_weights = [_matmul(ds.flatten(0, 1).t(), a[:steps].flatten(0, 1), matmul_dtype)
                            for ds, a in zip(grad_s, inputs)]
            grad_biases = [ds.sum(dim=(0, 1)) for ds in grad_s]
            grad_projected = grad_s[0].transpose(0, 1)  # (B, T, 4H+1): layer 1 reads x with z^0 = 1
            grad_x = _matmul(grad_projected.flatten(0, 1), input_weight, matmul_dtype).view(batch, steps, -1)
            grad_input_weight = _matmul(grad_projected.flatten(0, 1).t(), x.flatten(0, 1), matmul_dtype)
            if layer_norm:
                grad_norm_weights = [(d * x_hat).sum(dim=(0, 1)) for d, x_hat in zip(grad_y, normalised)]
                grad_norm_biases = [d.sum(dim=(0, 1)) for d in grad_y]
            else:
                grad_norm_weights, grad_norm_biases = [], []
        return (None, None, None, None, None, None, None, None, grad_x, grad_input_weight, *grad_h0, *grad_c, grad_z0,
                *grad_weights, *grad_biases, *grad_norm_weights, *grad_norm_biases)
