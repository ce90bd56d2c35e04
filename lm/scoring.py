"""Scoring a character stream: bits per character with the state carried (`split_bpc`, the method is
lm/evaluate.py's), and what the detectors did on the way (`BoundaryRecorder`)."""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from handwriting_hm.hmlstm.detectors import DetectorHealth
from handwriting_hm.hmlstm.output import SoftmaxHead

from .batches import evaluation_rows


@torch.no_grad()
def split_bpc(model: nn.Module, ids, rows: int = 1, bptt: int = 100, slope: float = 1.0,
              progress: bool = False, on_output: Callable | None = None,
              forced_z1_of: Callable | None = None) -> tuple[float, int]:
    """(bits per character, symbols scored) of `model` on the stream `ids` (see the module docstring).
    `progress` shows a bar of windows read on stderr; `on_output(output, inputs, valid, state)`, if given,
    sees each window's LMOutput (with the boundary pre-activations, recomputed where the path gives none), its
    (R, T) inputs and valid steps, and the state it started from;
    `forced_z1_of(inputs)`, if given, gives layer 1's boundaries for each window (the oracle)."""
    device = next(model.parameters()).device
    inputs, targets, mask = (tensor.to(device) for tensor in evaluation_rows(ids, rows))
    was_training = model.training
    model.eval()
    state, total_nats, scored = None, 0.0, int(mask.sum())
    for start in tqdm(range(0, inputs.shape[1], bptt), unit="window", desc="scoring", disable=not progress,
                      dynamic_ncols=True):
        window = slice(start, start + bptt)
        valid = mask[:, window]
        forced = {} if forced_z1_of is None else {"forced_z1": forced_z1_of(inputs[:, window])}
        output = model(inputs[:, window], state=state, mask=None if bool(valid.all()) else valid, slope=slope,
                       preactivations=on_output is not None, **forced)
        log_p = SoftmaxHead.log_likelihood(output.logits.float(), targets[:, window])
        total_nats -= float((log_p * valid).sum())
        if on_output is not None:
            on_output(output, inputs[:, window], valid, state)
        state = output.core.state.carried()
    model.train(was_training)
    return total_nats / scored / math.log(2.0), scored


class BoundaryRecorder:
    """Collects, from split_bpc's windows, the boundaries in stream order and the detectors' health."""

    def __init__(self, num_layers: int, slope: float, z_on_copy: str = "keep") -> None:
        self.health = DetectorHealth(num_layers, z_on_copy)
        self.slope = slope
        self.boundaries: list[torch.Tensor] = []
        self.inputs: list[torch.Tensor] = []
        self.valid: list[torch.Tensor] = []

    def __call__(self, output, inputs: torch.Tensor, valid: torch.Tensor, state) -> None:
        core = output.core
        self.health.add(core.boundaries, core.preactivations, self.slope,
                        None if state is None else state.z, valid)
        self.boundaries.append(core.boundaries.detach().cpu())
        self.inputs.append(inputs.cpu())
        self.valid.append(valid.cpu())

    def stream(self) -> tuple[np.ndarray, np.ndarray]:
        """(boundaries (N, L-1), ids (N,)) of the valid steps in stream order (row after row)."""
        valid = torch.cat(self.valid, dim=1).flatten()
        boundaries = torch.cat(self.boundaries, dim=1).flatten(0, 1)[valid]
        return boundaries.numpy(), torch.cat(self.inputs, dim=1).flatten()[valid].numpy()
