"""The LSTM baseline: a standard stacked LSTM with the HM-LSTM's interface (state, output, step), so that the
same models, trainer and tools run it for comparison."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cell_types import HMLSTMOutput, HMLSTMState, RecurrentCore, Slope, check_input, mask_state, resolve_mask, stack_time


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
