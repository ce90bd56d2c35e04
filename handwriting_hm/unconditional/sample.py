"""Sampling handwriting from a trained model, for people rather than for tensors.

`sample_handwriting` wraps `generate.generate` for people rather than for tensors: it checks
the parameters against LIMITS, seeds its own generator (same seed, same drawing), and turns
the model's normalised offsets back into the raw units of the training data with the
checkpoint's stats. Each Sample keeps, for every point, what each layer's boundary detector
did and which operation (COPY / UPDATE / FLUSH) each layer performed.

`handwriting-hm sample` (sample_command.py) writes every sample of a request into one SVG, PNG or
JSON file through `drawing.records.save_samples`, the writer the app's downloads use: the same seed
gives the same file.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..normalisation import denormalise, raw_offsets

from . import generate
from ..hmlstm.core import OPERATION_NAMES, COPY
from ..hmlstm.detectors import event_alignment
from ..scoring import PEN_UP_WINDOW
from .model import DEFAULT_MODEL, LoadedModel, load_handwriting_model

# What one request may ask for: long enough for a line of handwriting, small enough that a
# laptop answers in seconds and a burst of requests cannot exhaust memory.
LIMITS: dict[str, tuple[float, float]] = {
    "n_points": (1, 2000),
    "n_samples": (1, 8),
    "bias": (0.0, 10.0),
    "temperature": (0.05, 2.0),
    "seed": (0, 2**63 - 1),
}
INTEGER_PARAMETERS = ("n_points", "n_samples", "seed")


@dataclass(frozen=True)
class Sample:
    """One generated pen sequence and what the hierarchy did while reading it."""

    offsets: np.ndarray  # (T, 3) float64: dx, dy in the training data's raw units, end_of_stroke 0/1
    boundaries: np.ndarray  # (T, L-1) int64 0/1: layer k+1 fired while reading point t
    operations: np.ndarray  # (T, L) int64: COPY / UPDATE / FLUSH code of every layer at point t
    counts: np.ndarray  # (L, 3) int64: how many COPY, UPDATE, FLUSH each layer did (OPERATION_NAMES order)

    def operation_counts(self) -> dict[str, dict[str, int]]:
        """{"layer1": {"UPDATE": n, "COPY": n, "FLUSH": n}, ...}."""
        return {
            f"layer{layer + 1}": {name: int(self.counts[layer, code]) for code, name in enumerate(OPERATION_NAMES)}
            for layer in range(self.counts.shape[0])
        }

    def copied_fraction(self) -> float:
        """The share of layer-steps the HM-LSTM skipped (COPY) that a stacked LSTM would compute."""
        return float(self.counts[:, COPY].sum() / max(int(self.counts.sum()), 1))

    def firings(self) -> list[int]:
        """How often each boundary detector (layers 1..L-1) fired in this sample."""
        return self.boundaries.sum(axis=0).astype(int).tolist()

    def pen_up_alignment(self, window: int = PEN_UP_WINDOW) -> list[dict[str, float]]:
        """Per detector, where its firings fall against this sample's pen-ups, within `window` points
        (hmlstm.detectors.event_alignment: rate, precision, recall, lift, ...)."""
        pen_ups = self.offsets[:, 2] > 0.5
        return [event_alignment(self.boundaries[:, l] > 0, pen_ups, window, window)
                for l in range(self.boundaries.shape[1])]


def learned_colouring(firings: Sequence[int]) -> tuple[str, int]:
    """The colouring that shows what a model learned: the highest layer (up to 2, the colour modes') whose
    detector fired, with its firings marked; pen-up strokes and no markers when none fired."""
    fired = [k for k, n in enumerate(firings, start=1) if n > 0 and k <= 2]
    layer = max(fired, default=0)
    return (f"layer{layer}" if layer else "strokes"), layer


def sampling_parameters(n_points: int, n_samples: int, bias: float, temperature: float,
                        seed: int) -> dict[str, int | float]:
    """A request's parameters, checked, as `sample_handwriting` takes them and the JSON file records them."""
    check_sampling_args(n_points, n_samples, bias, temperature, seed)
    return {"n_points": int(n_points), "n_samples": int(n_samples), "bias": float(bias),
            "temperature": float(temperature), "seed": int(seed)}


def check_sampling_args(n_points: int, n_samples: int, bias: float, temperature: float, seed: int) -> None:
    """Raise ValueError, with one line naming the parameter and its range, for anything outside LIMITS."""
    values = {"n_points": n_points, "n_samples": n_samples, "bias": bias, "temperature": temperature, "seed": seed}
    for name, value in values.items():
        low, high = LIMITS[name]
        whole = name in INTEGER_PARAMETERS
        kind = "a whole number" if whole else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, np.integer) if whole else (int, float, np.number)):
            raise ValueError(f"{name} must be {kind} between {low} and {high}, got {value!r}")
        if not low <= value <= high:  # also refuses NaN
            raise ValueError(f"{name} must be between {low} and {high}, got {value}")


def sample_handwriting(model: LoadedModel | None = None, *, n_samples: int = 1, n_points: int = 700,
                       bias: float = 0.0, temperature: float = 1.0, seed: int = 0) -> list[Sample]:
    """Generate `n_samples` pen sequences of `n_points` points each.

    model None loads the shipped default model. `bias` sharpens the mixture towards its most
    likely strokes (Graves 2013, §5.4); `temperature` scales the sampling noise. Raises
    ValueError for parameters outside LIMITS.
    """
    check_sampling_args(n_points, n_samples, bias, temperature, seed)
    loaded = load_handwriting_model() if model is None else model
    generator = torch.Generator().manual_seed(int(seed))
    generated = generate.generate(loaded.model, int(n_points), int(n_samples), bias=float(bias),
                                 temperature=float(temperature), slope=loaded.slope, generator=generator)
    offsets = raw_offsets(generated.offsets.cpu().double().numpy(), loaded.stats)
    return [
        Sample(offsets=offsets[i], boundaries=generated.boundaries[i].cpu().round().long().numpy(),
               operations=generated.operations[i].cpu().long().numpy(), counts=generated.counts[i].cpu().long().numpy())
        for i in range(n_samples)
    ]


def load_model_or_explain(checkpoint: Path | None) -> LoadedModel:
    """Load `checkpoint` (None: the shipped model); a missing default model says how to pass one,
    and statistics that cannot undo the normalisation (NaN, infinite or negative std) are refused."""
    if checkpoint is None and not DEFAULT_MODEL.is_file():
        raise ValueError(f"the default model {DEFAULT_MODEL} is not installed; pass --checkpoint PATH "
                         "(a handwriting checkpoint from training)")
    loaded = load_handwriting_model(checkpoint)
    try:  # now, not after generating: the check `denormalise` makes on every sample
        denormalise(np.zeros((1, 3)), loaded.stats)
    except ValueError as error:
        raise ValueError(f"checkpoint {checkpoint or DEFAULT_MODEL}: {error}") from None
    return loaded
