"""The sparse training path with its time loop in C (sparse_loop.c): sparse.py's results, one call per direction.

sparse.py's _SparseHMLSTM dispatches a few hundred small torch operations per time step; on a
2-core CPU that overhead, not the arithmetic the skipped rows save, sets its speed. Here the
loop over steps and layers runs in C, forward and backward, with the few-row products of
few_rows.c; Python lays out the buffers, and turns the pre-activations' gradients that the
loop leaves behind into the weights' gradients with one GEMM per weight over the rows that
used it, as sparse.py does. The mathematics and the order of the random draws are sparse.py's.

It runs where `runs_natively` says: float32 on the CPU, the C library built
(few_rows.library), at most MAX_LAYERS layers. Elsewhere sparse.py's
Python loop runs. Results equal the reference's up to float rounding (tests/handwriting_hm/hmlstm/test_sparse.py).
"""
from __future__ import annotations

import ctypes
import functools
import warnings
from typing import Sequence

import torch
from torch import Tensor

from .few_rows import function, library, times
from .buffers import input_projection, pack_outputs, state_buffers

MAX_LAYERS = 8  # csrc/hmlstm.h's MAX_LAYERS (_mirror_fits checks the struct that it sizes)

_Pointer = ctypes.c_void_p
_Layers = _Pointer * MAX_LAYERS


class _Loop(ctypes.Structure):
    """sparse_loop.c's SparseLoop, field for field."""

    _fields_ = [(name, ctypes.c_int64) for name in ("layers", "batch", "steps", "threads", "bernoulli", "layer_norm",
                                                             "mixed", "boundary_norm", "recompute", "saving")] + [
        ("sizes", ctypes.c_int64 * MAX_LAYERS), ("slope", ctypes.c_float), ("eps", ctypes.c_float),
        ("valid", _Pointer), ("uniforms", _Pointer), ("forced", _Pointer), ("projected", _Pointer),
        ("z", _Pointer)] + [
        (name, _Layers) for name in ("h", "c", "recurrent", "bias", "top_down", "bottom_up", "recurrent_t",
                                     "top_down_t", "bottom_up_t", "norm_weight", "norm_bias", "cached_top_down",
                                     "computed", "activations", "pre_norm", "mean", "inverse_std", "top_down_term",
                                     "boundary_input", "copied", "copy_z_hat", "copy_s", "copy_pre", "copy_mean",
                                     "copy_inverse_std", "copy_cached", "grad_hidden")] + [
        ("grad_boundaries", _Pointer), ("grad_h", _Layers), ("grad_c", _Layers), ("grad_z", _Pointer),
        ("grad_s", _Layers), ("grad_norm_weight", _Layers), ("grad_norm_bias", _Layers)]


@functools.lru_cache(maxsize=1)
def _mirror_fits() -> bool:
    """Whether _Loop's size is the C struct's (sparse_loop_struct_size): a mirror that drifted from hmlstm.h
    would hand the loop wrong addresses, so the sparse path then runs its Python loop, said once on stderr."""
    size = function("sparse_loop_struct_size", [], ctypes.c_size_t)()
    if size != ctypes.sizeof(_Loop):
        warnings.warn(f"the sparse C loop is unused: its struct has {size} bytes, the ctypes mirror "
                      f"{ctypes.sizeof(_Loop)} (csrc/hmlstm.h and sparse_native._Loop differ)", stacklevel=2)
        return False
    return True


def _entry_points() -> tuple[ctypes._CFuncPtr, ctypes._CFuncPtr] | None:
    """sparse_loop_forward and sparse_loop_backward, or None where the C library cannot run here."""
    if library() is None or not _mirror_fits():
        return None
    return tuple(function(name, [ctypes.POINTER(_Loop)], ctypes.c_int)
                 for name in ("sparse_loop_forward", "sparse_loop_backward"))


def runs_natively(x: Tensor, parameters: Sequence[Tensor], num_layers: int) -> bool:
    """Whether hmlstm_sparse can take the C loop for these inputs."""
    return (num_layers <= MAX_LAYERS and x.device.type == "cpu" and x.dtype == torch.float32
            and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in parameters)
            and _entry_points() is not None)


def _address(tensor: Tensor | None) -> int | None:
    return None if tensor is None else tensor.data_ptr()


def _set(loop: _Loop, name: str, tensors: Sequence[Tensor | None]) -> None:
    field = getattr(loop, name)
    for l, tensor in enumerate(tensors):
        field[l] = _address(tensor)


def _call(function: ctypes._CFuncPtr, loop: _Loop) -> None:
    if function(ctypes.byref(loop)) != 0:
        raise MemoryError("the sparse C loop could not allocate its working memory")


def _rows(selected: Tensor) -> Tensor | None:
    """The indices where `selected` (flat) is set; None where it is set everywhere."""
    rows = selected.nonzero()[:, 0]
    return None if rows.numel() == selected.numel() else rows


def _select(tensor: Tensor, rows: Tensor | None) -> Tensor:
    return tensor if rows is None else tensor.index_select(0, rows)


def _weight_gradient(ds: Tensor, inputs: Tensor) -> Tensor:
    """ds^T inputs, (G, I) from ds (N, G) and inputs (N, I): as (inputs^T ds)^T by few_rows.c's tiles, which
    read ds as it lies (1.3x torch's product at N = 3200, G = 1601, I = 400; 5x at I = 3)."""
    return times(inputs.t().contiguous(), ds).t().contiguous()


class SparseLoopHMLSTM(torch.autograd.Function):
    """Inputs as sparse._SparseHMLSTM's, and `saving` (whether a backward pass may follow): sizes, slope, mode,
    mixed (copy_gradient "mixed" or "exact": the choice of COPY passes gradient back), recompute (z_on_copy
    "recompute"), saving, eps, mask (B, T) bool or None, forced_z1 (B, T) or None (layer 1's boundaries, given),
    x (B, T, I), h0 (L), c0 (L), z0 (B, L-1), recurrent weights (L), biases (L), top-down weights (L-1),
    bottom-up weights (L), LayerNorm weights (L or 0), biases (L or 0). Outputs as fused.pack_outputs."""

    @staticmethod
    def forward(ctx, sizes: Sequence[int], slope: float, mode: str, mixed: bool, recompute: bool, saving: bool,
                eps: float, mask: Tensor | None, forced_z1: Tensor | None, x: Tensor,
                *tensors: Tensor):  # type: ignore[override]
        L = len(sizes)
        h0, c0, z0 = tensors[:L], tensors[L:2 * L], tensors[2 * L]
        params = [p.contiguous() for p in tensors[2 * L + 1:]]
        recurrent, biases = params[:L], params[L:2 * L]
        top_down, bottom_up = params[2 * L:3 * L - 1], params[3 * L - 1:4 * L - 1]
        norm_weights, norm_biases = params[4 * L - 1:5 * L - 1], params[5 * L - 1:]
        layer_norm = len(norm_weights) > 0
        batch, steps, _ = x.shape
        gates = [w.shape[0] for w in recurrent]

        h_states, c_states, z_states = state_buffers(x, sizes, h0, c0, z0)
        projected = input_projection(x, bottom_up[0], biases[0])
        # Bernoulli boundaries: one uniform per row and detector at every step, drawn in the order sparse.py draws them
        uniforms = torch.rand(steps, L - 1, batch, dtype=x.dtype, device=x.device) if mode == "bernoulli" else None
        valid = None if mask is None else mask.t().contiguous().to(torch.uint8)
        forced = None if forced_z1 is None else forced_z1.t().contiguous().to(x.dtype)
        # what the backward pass reads, for every step; where none will follow (evaluation, sampling under
        # no_grad) one step's worth, rewritten at every step: at 3x400, B=32 and a 1,900-point line the
        # whole would be about 3 GB
        kept = steps if saving else 1
        saved = {
            "computed": [torch.zeros(kept, batch, dtype=torch.uint8) for _ in sizes],
            "activations": [x.new_empty(kept, batch, 4 * size) for size in sizes],
            "pre_norm": [x.new_empty(kept, batch, g) for g in gates] if layer_norm else [],
            "mean": [x.new_empty(kept, batch) for _ in sizes] if layer_norm else [],
            "inverse_std": [x.new_empty(kept, batch) for _ in sizes] if layer_norm else [],
            "top_down_term": [x.new_empty(kept, batch, g) for g in gates[:-1]],
            "boundary_input": [x.new_empty(kept, batch) for _ in sizes[:-1]],
            # the COPY rows: with mixed, their gates (in "activations") and z^, for the gradient of the choice;
            # with recompute, their z's pre-activation (in "boundary_input")
            "copied": [torch.zeros(kept, batch, dtype=torch.uint8) for _ in sizes] if (mixed or recompute) and saving
            else [],
            "copy_z_hat": [x.new_empty(kept, batch) for _ in sizes[:-1]] if mixed and saving else [],
        }
        cached_top_down = [(h0[l + 1] @ top_down[l].t()).contiguous() for l in range(L - 1)]
        copy_runs = {"copy_s": [x.new_empty(batch, g) for g in gates], "copy_pre": [x.new_empty(batch, g) for g in gates],
                     "copy_mean": [x.new_empty(batch) for _ in sizes], "copy_inverse_std": [x.new_empty(batch) for _ in sizes],
                     "copy_cached": [torch.zeros(batch, dtype=torch.uint8) for _ in sizes]}
        # the products read each weight in either layout, by how many rows they have (sparse_loop.c's product)
        transposed = {"recurrent_t": [w.t().contiguous() for w in recurrent],
                      "top_down_t": [w.t().contiguous() for w in top_down],
                      "bottom_up_t": [None] + [w.t().contiguous() for w in bottom_up[1:]]}

        # the norm covers every pre-activation, or (boundary unit outside it) the 4H gates only
        boundary_norm = not layer_norm or norm_weights[0].shape[0] == gates[0]
        loop = _Loop(layers=L, batch=batch, steps=steps, threads=torch.get_num_threads(),
                     bernoulli=int(mode == "bernoulli"), layer_norm=int(layer_norm), mixed=int(mixed),
                     boundary_norm=int(boundary_norm), recompute=int(recompute),
                     saving=int(saving), slope=slope, eps=eps,
                     valid=_address(valid), uniforms=_address(uniforms), forced=_address(forced),
                     projected=_address(projected),
                     z=_address(z_states))
        for l, size in enumerate(sizes):
            loop.sizes[l] = size
        for name, values in (("h", h_states), ("c", c_states), ("recurrent", recurrent), ("bias", biases),
                             ("top_down", top_down), ("bottom_up", bottom_up), ("norm_weight", norm_weights),
                             ("norm_bias", norm_biases), ("cached_top_down", cached_top_down), *transposed.items(),
                             *saved.items(), *copy_runs.items()):
            _set(loop, name, values)
        _call(_entry_points()[0], loop)

        ctx.sizes, ctx.slope, ctx.loop, ctx.recompute = tuple(sizes), slope, loop, recompute
        ctx.buffers = (h_states, c_states, z_states, saved, transposed, copy_runs, forced)  # the loop's pointers into them stay valid
        ctx.save_for_backward(mask, x, *params)
        keep = None if mask is None else mask.to(x.dtype)
        return pack_outputs(h_states, c_states, z_states, z_states[1:], keep, steps)

    @staticmethod
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        sizes, L, loop = ctx.sizes, len(ctx.sizes), ctx.loop
        mask, x, *params = ctx.saved_tensors
        recurrent, bottom_up = params[:L], params[3 * L - 1:4 * L - 1]
        layer_norm = len(params) > 4 * L - 1
        h_states, c_states, z_states, saved, _, _, _ = ctx.buffers
        batch, steps = loop.batch, loop.steps
        gates = [w.shape[0] for w in recurrent]

        keep = None if mask is None else mask.t().unsqueeze(-1).to(x.dtype)  # (T, B, 1)
        time_major = [g.transpose(0, 1) for g in grads[:L + 1]]
        grad_hidden = [(g if keep is None else g * keep).contiguous() for g in time_major[:L]]
        grad_boundaries = (time_major[L] if keep is None else time_major[L] * keep).contiguous()
        grad_h = [g.clone().contiguous() for g in grads[L + 1:2 * L + 1]]
        grad_c = [g.clone().contiguous() for g in grads[2 * L + 1:3 * L + 1]]
        grad_z = grads[3 * L + 1].clone().contiguous()
        grad_s = [x.new_zeros(steps, batch, g) for g in gates]
        normed = [w.shape[0] for w in params[4 * L - 1:5 * L - 1]]  # what each layer norm covers
        grad_norm_weights = [x.new_zeros(n) for n in normed]
        grad_norm_biases = [x.new_zeros(n) for n in normed]
        loop.grad_boundaries, loop.grad_z = _address(grad_boundaries), _address(grad_z)
        for name, values in (("grad_hidden", grad_hidden), ("grad_h", grad_h), ("grad_c", grad_c),
                             ("grad_s", grad_s), ("grad_norm_weight", grad_norm_weights),
                             ("grad_norm_bias", grad_norm_biases)):
            _set(loop, name, values)
        _call(_entry_points()[1], loop)

        # the parameters' gradients, one GEMM per weight over the rows that used it
        grad_recurrent, grad_biases, grad_top_down, grad_bottom_up = [], [], [], []
        for l, size in enumerate(sizes):
            ds = grad_s[l].view(-1, gates[l])  # zero where the row did not compute
            grad_biases.append(ds.sum(dim=0))
            used = saved["computed"][l].view(-1)
            if ctx.recompute and l < L - 1:  # a COPY row's recomputed z read U h_{t-1} + b
                used = used | saved["copied"][l].view(-1)
            rows = _rows(used)
            ds_rows = _select(ds, rows)
            grad_recurrent.append(_weight_gradient(ds_rows, _select(h_states[l][:-1].reshape(-1, size), rows)))
            if l > 0:  # z^{l-1}_t h^{l-1}_t
                below = _select(h_states[l - 1][1:].reshape(-1, sizes[l - 1]), rows)
                below = below * _select(z_states[1:, :, l - 1].reshape(-1, 1), rows)
                grad_bottom_up.append(_weight_gradient(ds_rows, below))
            if l < L - 1:  # the FLUSH rows: z^l_{t-1} = 1
                flushed = _rows((saved["computed"][l].bool() & (z_states[:-1, :, l] > 0.5)).view(-1))
                grad_top_down.append(_weight_gradient(
                    _select(ds, flushed), _select(h_states[l + 1][:-1].reshape(-1, sizes[l + 1]), flushed)))
        # layer 1 reads x with z^0 = 1: W_0^1 x_t + b, every step; time-major, as grad_s
        ds = grad_s[0].view(-1, gates[0])
        x_time_major = x.transpose(0, 1).reshape(-1, x.shape[2])
        grad_x = (ds @ bottom_up[0]).view(steps, batch, -1).transpose(0, 1).contiguous()
        grad_bottom_up.insert(0, _weight_gradient(ds, x_time_major))
        ctx.loop = ctx.buffers = None
        return (None, None, None, None, None, None, None, None, None, grad_x, *grad_h, *grad_c, grad_z, *grad_recurrent, *grad_biases,
                *grad_top_down, *grad_bottom_up, *grad_norm_weights, *grad_norm_biases)
