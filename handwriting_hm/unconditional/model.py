"""The handwriting model: recurrent core -> gated output module -> mixture-density head.

It predicts each pen offset from the ones before it (Graves 2013 §4; HM-LSTM paper §4.2).
Inputs and targets are (dx, dy, end_of_stroke) offsets, dx and dy normalised with the training
set's mean and std. The input at step t is the offset at t-1, and the first input is a zero
vector, so every point of a sequence, the first included, is predicted and scored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ..hmlstm.checkpoint import load_model
from ..hmlstm.core import HMLSTMOutput, HMLSTMState, Slope
from ..hmlstm.recipes import core_from_config, with_preactivations
from ..hmlstm.output import GatedOutput
from ..shipped import DEFAULT_MODEL
from ..mixture import MixtureDensityHead, MixtureParams, mixture_log_likelihood
from .config import KIND, HandwritingConfig  # defined without torch (for the parsers); clients import them here too


class HandwritingOutput(NamedTuple):
    params: MixtureParams  # next-point distribution at each step, leading shape (B, T)
    core: HMLSTMOutput  # every layer's h, the boundaries, the final state


class HandwritingModel(nn.Module):
    """Next-offset prediction with an HM-LSTM (or LSTM) core and a mixture-density head."""

    input_size = 3

    def __init__(self, config: HandwritingConfig, impl: str = "reference") -> None:
        """impl: how an HM-LSTM core runs ("reference", "fused", "auto"); not part of the config,
        since it changes the speed, not the model."""
        super().__init__()
        self.config = config
        self.core = core_from_config(config, self.input_size, impl)
        self.output = GatedOutput(config.hidden_sizes, config.embedding_size)
        self.head = MixtureDensityHead(config.embedding_size, config.n_mixtures)

    def forward(self, inputs: Tensor, state: HMLSTMState | None = None, lengths: Tensor | None = None,
                slope: Slope = 1.0, boundary_mode: str | None = None, forced_z1: Tensor | None = None,
                preactivations: bool = False) -> HandwritingOutput:
        """inputs: (B, T, 3) offsets already shifted (see `shift_inputs`); slope a number or a tensor (core.Slope);
        boundary_mode: the core's for this call (HM-LSTM only); forced_z1 (B, T): layer 1's boundaries, given
        (the oracle, see `pen_ups_read`; HM-LSTM only; a model whose config says layer1_boundaries="pen-ups"
        gives them itself); preactivations: make sure the core's output carries the boundary pre-activations,
        recomputed where the path that ran gives none."""
        extra = {} if boundary_mode is None else {"boundary_mode": boundary_mode}
        if forced_z1 is None and self.config.pen_up_clock:
            forced_z1 = pen_ups_read(inputs)
        if forced_z1 is not None:
            if not self.core.num_detectors:
                raise ValueError("forced layer-1 boundaries need an HM-LSTM core; this model's is an LSTM")
            extra["forced_z1"] = forced_z1
        core = self.core(inputs, state=state, lengths=lengths, slope=slope, **extra)
        if preactivations:
            core = with_preactivations(self.core, inputs, core, state)
        return HandwritingOutput(self.head(self.output(core.hidden)), core)

    def sequence_log_likelihood(self, offsets: Tensor, lengths: Tensor | None = None, slope: Slope = 1.0,
                                oracle: bool = False) -> tuple[Tensor, HandwritingOutput]:
        """Total log-likelihood (nats) of each sequence: offsets (B, T, 3) -> (B,).

        Padded steps (beyond `lengths`) count nothing. oracle: layer 1's boundaries forced to the pen-ups.
        """
        inputs = shift_inputs(offsets)
        output = self(inputs, lengths=lengths, slope=slope, forced_z1=pen_ups_read(inputs) if oracle else None)
        per_step = mixture_log_likelihood(output.params, offsets)
        if lengths is not None:
            valid = torch.arange(offsets.shape[1], device=offsets.device)[None, :] < lengths.to(offsets.device)[:, None]
            per_step = per_step * valid
        return per_step.sum(dim=1), output


def shift_inputs(offsets: Tensor, previous: Tensor | None = None) -> Tensor:
    """The inputs that predict `offsets`: the point before the first (`previous` (B, 3), for a later
    chunk of the lines; a zero vector at their start), then every offset but the last."""
    if offsets.dim() != 3 or offsets.shape[-1] != 3:
        raise ValueError(f"expected offsets of shape (batch, time, 3), got {tuple(offsets.shape)}")
    first = offsets.new_zeros(offsets.shape[0], 3) if previous is None else previous
    return torch.cat([first[:, None], offsets[:, :-1]], dim=1)


def pen_ups_read(inputs: Tensor) -> Tensor:
    """(B, T) float: 1 where the point read (inputs, shifted) ends a stroke. The oracle forces layer 1's
    boundaries there, so that layer 2 updates once per stroke, with the stroke just written, as the
    word separators do for the language model."""
    return inputs[..., 2].float()


# ----------------------------------------------------------------------------- loading

class LoadedModel(NamedTuple):
    model: HandwritingModel  # in eval mode, float32
    stats: dict[str, tuple[float, float]]  # {"mean": (dx, dy), "std": (dx, dy)}: raw units of the training data
    slope: float  # the boundary slope at the time of the checkpoint
    metadata: dict[str, Any]


def load_handwriting_model(path: str | Path | None = None, map_location: Any = "cpu") -> LoadedModel:
    """Load a handwriting checkpoint (a training run's .pt or an exported model) for inference.

    path None means the model shipped with the package. Raises ValueError with one line for a
    missing, corrupt or incompatible file.
    """
    path = DEFAULT_MODEL if path is None else Path(path)
    loaded = load_model(path, KIND, HandwritingConfig, HandwritingModel, "handwriting model",
                        lambda metadata, model: read_stats(metadata["stats"]), map_location)
    return LoadedModel(loaded.model, loaded.read, loaded.slope, loaded.metadata)


def read_stats(stats: dict) -> dict[str, tuple[float, float]]:
    """A checkpoint's normalisation statistics as {"mean": (dx, dy), "std": (dx, dy)} of floats."""
    return {"mean": tuple(map(float, stats["mean"])), "std": tuple(map(float, stats["std"]))}
