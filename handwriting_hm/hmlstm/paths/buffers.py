"""What the fast paths share: the buffers of the states over time, layer 1's input projection, the weights as
one GEMM reads them, and the packing of an autograd Function's outputs and inputs (autograd Functions take and
return flat tuples of tensors; these name their parts)."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from ..cell_types import HMLSTMLike, HMLSTMOutput, HMLSTMState


def pack_outputs(h_states: Sequence[Tensor], c_states: Sequence[Tensor], z_states: Tensor, boundaries: Tensor,
                 keep: Tensor | None, steps: int) -> tuple[Tensor, ...]:
    """What the fast paths' autograd Functions return, from their time-major tensors (the states hold steps
    0..T, `boundaries` (T, B, L-1) z_1..z_T): every layer's h and the boundaries batch-first, zero where
    keep (B, T) is 0 (padding), then the final h, c and z."""
    hidden = [h[1:].transpose(0, 1) for h in h_states]
    boundaries = boundaries.transpose(0, 1)
    if keep is not None:
        hidden = [h * keep.unsqueeze(-1) for h in hidden]
        boundaries = boundaries * keep.unsqueeze(-1)
    return (*[h.contiguous() for h in hidden], boundaries.contiguous(),
            *[h[steps].clone() for h in h_states], *[c[steps].clone() for c in c_states], z_states[steps].clone())


def state_buffers(x: Tensor, sizes: Sequence[int], h0: Sequence[Tensor], c0: Sequence[Tensor],
                  z0: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
    """The sparse paths' time-major h, c (T+1, B, H_l) and z (T+1, B, L-1) after every step, step 0 the given state."""
    steps, batch = x.shape[1], x.shape[0]
    h_states = [x.new_empty(steps + 1, batch, size) for size in sizes]
    c_states = [x.new_empty(steps + 1, batch, size) for size in sizes]
    z_states = x.new_empty(steps + 1, batch, len(sizes) - 1)
    for l in range(len(sizes)):
        h_states[l][0], c_states[l][0] = h0[l], c0[l]
    z_states[0] = z0
    return h_states, c_states, z_states


def input_projection(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Layer 1's W_0^1 x_t + b for every step at once, time-major: (T*B, 4H+1)."""
    return torch.addmm(bias, x.transpose(0, 1).reshape(-1, x.shape[2]), weight.t())


def unpack_outputs(outputs: Sequence[Tensor], L: int) -> HMLSTMOutput:
    """pack_outputs' tuple, as returned by an autograd Function of L layers, as an HMLSTMOutput."""
    hidden, boundaries = outputs[:L], outputs[L]
    h, c, z = outputs[L + 1:2 * L + 1], outputs[2 * L + 1:3 * L + 1], outputs[3 * L + 1]
    return HMLSTMOutput(tuple(hidden), boundaries, HMLSTMState(tuple(h), tuple(c), z))


def concatenated_weights(core: HMLSTMLike) -> list[Tensor]:
    """Per layer [U_l^l | U_{l+1}^l | W_{l-1}^l], the weights of one GEMM per layer-step (layer 1's
    W_0^1 x_t is left out: it is computed for all steps at once)."""
    concatenated = []
    for l in range(core.num_layers):
        parts = [core.recurrent[l].weight]
        if l < core.num_layers - 1:
            parts.append(core.top_down[l].weight)
        if l > 0:
            parts.append(core.bottom_up[l].weight)
        concatenated.append(torch.cat(parts, dim=1))
    return concatenated


def norm_parameters(core: HMLSTMLike) -> tuple[list[Tensor], list[Tensor], float]:
    """The layer norms' weights, biases and epsilon; empty lists and 0 without layer norm."""
    if core.norms is None:
        return [], [], 0.0
    return [norm.weight for norm in core.norms], [norm.bias for norm in core.norms], core.norms[0].eps


class PackedInputs(NamedTuple):
    """The tensors after W_0^1 in the fused and Triton Functions' inputs, by name."""

    h0: Sequence[Tensor]  # (L)
    c0: Sequence[Tensor]  # (L)
    z0: Tensor  # (B, L-1)
    weights: Sequence[Tensor]  # concatenated weights (L)
    biases: Sequence[Tensor]  # (L)
    norm_weights: Sequence[Tensor]  # (L, or none without layer norm)
    norm_biases: Sequence[Tensor]


def unpack_inputs(tensors: Sequence[Tensor], L: int) -> PackedInputs:
    """Split h0 (L), c0 (L), z0, weights (L), biases (L), LayerNorm weights and biases (L each, or none)."""
    layer_norm = len(tensors) > 4 * L + 1
    return PackedInputs(tensors[:L], tensors[L:2 * L], tensors[2 * L], tensors[2 * L + 1:3 * L + 1],
                        tensors[3 * L + 1:4 * L + 1], tensors[4 * L + 1:5 * L + 1] if layer_norm else (),
                        tensors[5 * L + 1:] if layer_norm else ())
