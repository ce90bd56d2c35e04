"""The normalisation of pen offsets: dx and dy less the training split's mean, over its std.

The dataset (`data_prep.dataset`) normalises with `coordinate_scale`; generation and writing turn
the model's offsets back into raw units with `denormalise`. Both live here, beside the models,
so that inference code never imports data_prep.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

import numpy as np
import torch

Offsets = TypeVar("Offsets", np.ndarray, torch.Tensor)


def coordinate_scale(std: Sequence[float]) -> tuple[float, float]:
    """The divisor of dx and dy: the std, except that a constant coordinate (std 0, only in toy
    data) is left unscaled rather than made infinite. A negative or non-finite std is an error:
    statistics like that come from broken data, and every number made with them would be wrong."""
    for name, value in zip(("dx", "dy"), std):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"normalisation std of {name} is {value}: the statistics are broken "
                             "(prepared from data with NaN or infinite values?)")
    return tuple(float(value) if value > 0 else 1.0 for value in std)


def denormalise(offsets: Offsets, stats: Mapping[str, Sequence[float]]) -> Offsets:
    """Normalised (..., 3) offsets (numpy or torch) back to raw units: dx, dy times the std plus the
    mean; end_of_stroke unchanged. The inverse of the dataset's normalisation, zero std included."""
    mean, scale = tuple(map(float, stats["mean"])), coordinate_scale(tuple(map(float, stats["std"])))
    if not all(math.isfinite(value) for value in mean):
        raise ValueError(f"normalisation mean is {list(mean)}: the statistics are broken")
    if isinstance(offsets, torch.Tensor):
        mean_t = torch.tensor(mean, dtype=offsets.dtype, device=offsets.device)
        scale_t = torch.tensor(scale, dtype=offsets.dtype, device=offsets.device)
        return torch.cat([offsets[..., :2] * scale_t + mean_t, offsets[..., 2:]], dim=-1)
    raw = np.array(offsets, copy=True)
    raw[..., :2] = raw[..., :2] * np.asarray(scale, dtype=raw.dtype) + np.asarray(mean, dtype=raw.dtype)
    return raw


def raw_offsets(offsets: np.ndarray, stats: dict[str, tuple[float, float]]) -> np.ndarray:
    """The model's normalised offsets in raw units: dx, dy through `denormalise`, end_of_stroke exactly
    0 or 1."""
    raw = denormalise(offsets, stats)
    raw[..., 2] = (offsets[..., 2] > 0.5).astype(raw.dtype)
    return raw
