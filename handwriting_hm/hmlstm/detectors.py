"""What the boundary detectors do, measured while training, and the firing-rate loss that keeps them alive.

Health (`DetectorHealth`): per detector l (z^l, l = 1..L-1), over the valid steps of the batches
added to it,
  rate      the share of steps with z^l = 1;
  window    the share of the steps at which z^l was computed whose |a * s_z| < 1: the straight-through
            estimator passes gradient there and nowhere else, so a detector whose window share
            falls to 0 can never learn again (None where the path gave no pre-activations);
and per layer l = 1..L the shares of UPDATE, COPY and FLUSH. A detector "has stopped firing" when
its rate is 0.

Firing-rate loss (`rate_penalty`): sum over detectors of (mean p^l - target_l)^2, where
p = sigmoid(2 a s_z) is the smooth twin of the hard sigmoid (same value and slope at s_z = 0) and
so passes gradient at every step, inside the window or not. With z kept on COPY (`z_on_copy`
"keep") a COPY step's z is 0 whatever s_z says, so p counts only where z was computed.
The mean of p can meet its target while z never fires: p is 0.3-0.5 wherever s_z sits just below 0.
`estimate="hard"` counts the firings themselves, mean z^l, and passes back the gradient of mean p
(straight-through), so the loss stays until z^l fires at its target rate.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from .core import COPY, FLUSH, OPERATION_NAMES, UPDATE, Slope, operations
from .recipe_settings import RATE_ESTIMATES


def computed(boundaries: Tensor, initial_z: Tensor | None, z_on_copy: str) -> Tensor:
    """(B, T, L-1) bool: where z^l was computed (every step with z recomputed; else where layer l did not COPY)."""
    if z_on_copy == "recompute":
        return torch.ones_like(boundaries, dtype=torch.bool)
    return operations(boundaries.detach(), initial_z)[..., :-1] != COPY


def rate_penalty(preactivations: Tensor, boundaries: Tensor, slope: Slope, targets: Sequence[float],
                 z_on_copy: str = "keep", initial_z: Tensor | None = None, mask: Tensor | None = None,
                 given: int = 0, estimate: str = "soft") -> Tensor:
    """The two-sided firing-rate loss (see the module docstring); preactivations, boundaries (B, T, L-1),
    mask (B, T) valid steps. given: how many of the lowest detectors' boundaries were given rather than
    computed (a pen-up clock): they have no target and no loss. estimate: "soft" (mean p) or "hard" (mean z,
    p's gradient). Returns a scalar."""
    if estimate not in RATE_ESTIMATES:
        raise ValueError(f"estimate must be one of {', '.join(RATE_ESTIMATES)}, got {estimate!r}")
    learned = preactivations.shape[-1] - given
    if len(targets) != learned:
        raise ValueError(f"{len(targets)} target rates for {learned} learned boundary detectors")
    where = computed(boundaries, initial_z, z_on_copy)[..., given:]
    p = torch.sigmoid(2.0 * slope * preactivations[..., given:]) * where
    if estimate == "hard":
        fired = (boundaries[..., given:].detach() > 0.5) & where
        p = p + (fired.to(p.dtype) - p).detach()
    weight = torch.ones_like(p[..., 0]) if mask is None else mask.to(p.dtype)
    rates = (p * weight.unsqueeze(-1)).sum(dim=(0, 1)) / weight.sum().clamp_min(1.0)
    return ((rates - torch.as_tensor(targets, dtype=rates.dtype, device=rates.device)) ** 2).sum()


class DetectorHealth:
    """Counts, over batches, each detector's firings and straight-through window, each layer's operations."""

    def __init__(self, num_layers: int, z_on_copy: str = "keep") -> None:
        self.num_layers = num_layers
        self.z_on_copy = z_on_copy
        self.steps = 0
        self.fired = torch.zeros(num_layers - 1, dtype=torch.float64)
        self.computed = torch.zeros(num_layers - 1, dtype=torch.float64)
        self.in_window = torch.zeros(num_layers - 1, dtype=torch.float64)
        self.window_seen = False
        self.operations = torch.zeros(num_layers, 3, dtype=torch.float64)  # COPY, UPDATE, FLUSH

    @torch.no_grad()
    def add(self, boundaries: Tensor, preactivations: Tensor | None, slope: Slope,
            initial_z: Tensor | None = None, mask: Tensor | None = None) -> None:
        """Count one batch: boundaries and preactivations (B, T, L-1), initial_z (B, L-1), mask (B, T)."""
        boundaries = boundaries.detach().float().cpu()
        valid = (torch.ones(boundaries.shape[:2], dtype=torch.bool) if mask is None else mask.cpu()).unsqueeze(-1)
        initial = None if initial_z is None else initial_z.detach().float().cpu()
        codes = operations(boundaries, initial)
        self.steps += int(valid.sum())
        self.fired += ((boundaries > 0.5) & valid).sum(dim=(0, 1)).double()
        for code in (COPY, UPDATE, FLUSH):
            self.operations[:, code] += ((codes == code) & valid).sum(dim=(0, 1)).double()
        if preactivations is not None:
            where = computed(boundaries, initial, self.z_on_copy) & valid
            inside = (float(slope) * preactivations.detach().float().cpu()).abs() < 1.0
            self.computed += where.sum(dim=(0, 1)).double()
            self.in_window += (inside & where).sum(dim=(0, 1)).double()
            self.window_seen = True

    def plus(self, other: "DetectorHealth") -> "DetectorHealth":
        """The counts of both (of the same model)."""
        both = DetectorHealth(self.num_layers, self.z_on_copy)
        both.steps = self.steps + other.steps
        for name in ("fired", "computed", "in_window", "operations"):
            setattr(both, name, getattr(self, name) + getattr(other, name))
        both.window_seen = self.window_seen or other.window_seen
        return both

    def summary(self) -> dict[str, float]:
        """Flat numbers for a log record: z{l}_rate, z{l}_window (when seen), layer{l}_update/_copy/_flush."""
        steps = max(self.steps, 1)
        result: dict[str, float] = {}
        for l in range(self.num_layers - 1):
            result[f"z{l + 1}_rate"] = float(self.fired[l]) / steps
            if self.window_seen:
                result[f"z{l + 1}_window"] = float(self.in_window[l]) / max(float(self.computed[l]), 1.0)
        for l in range(self.num_layers):
            for code, name in enumerate(OPERATION_NAMES):
                result[f"layer{l + 1}_{name.lower()}"] = float(self.operations[l, code]) / steps
        return result


def silent_detectors(records: Sequence[dict], validations: int = 2) -> list[int]:
    """The detectors (1-based) whose rate was 0 in each of the last `validations` records that report rates."""
    reported = [record for record in records if "z1_rate" in record][-validations:]
    if len(reported) < validations:
        return []
    detectors = sorted(int(key[1:-5]) for key in reported[-1] if key.startswith("z") and key.endswith("_rate"))
    return [l for l in detectors if all(record.get(f"z{l}_rate", 1.0) == 0.0 for record in reported)]


SHIFTS = 16  # offsets of the circular-shift null, spread over the sequence
LOGGED_FIGURES = ("precision", "recall", "f1", "lift", "shift_lift")  # what a log record keeps of an alignment


def _near(marks: np.ndarray, before: int, after: int) -> np.ndarray:
    """near[t]: whether a mark lies in [t - before, t + after]."""
    counts = np.concatenate([[0], np.cumsum(marks, dtype=np.int64)])
    steps = marks.size
    low = np.clip(np.arange(steps) - before, 0, steps)
    high = np.clip(np.arange(steps) + after + 1, 0, steps)
    return counts[high] - counts[low] > 0


def _scores(fired: np.ndarray, events: np.ndarray, before: int, after: int) -> tuple[float, float, float]:
    precision = float(_near(events, before, after)[fired].mean()) if fired.any() else 0.0
    recall = float(_near(fired, after, before)[events].mean()) if events.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def event_alignment(fired: np.ndarray, events: np.ndarray, before: int = 0, after: int = 0) -> dict[str, float]:
    """The alignment figures of the module docstring for one detector: fired and events (T,) bool."""
    fired, events = np.asarray(fired, dtype=bool), np.asarray(events, dtype=bool)
    if fired.shape != events.shape or fired.ndim != 1:
        raise ValueError(f"fired and events must be two equal 1-d arrays, got {fired.shape} and {events.shape}")
    if before < 0 or after < 0:
        raise ValueError(f"the window must not be negative, got before={before}, after={after}")
    steps = fired.size
    precision, recall, f1 = _scores(fired, events, before, after)
    chance = float(_near(events, before, after).mean()) if steps else 0.0
    margin = steps // (SHIFTS + 1)
    offsets = np.unique(np.linspace(margin, steps - margin, SHIFTS).astype(int))
    offsets = offsets[(offsets > before + after) & (offsets < steps - before - after)]
    shifted = (np.array([_scores(np.roll(fired, int(k)), events, before, after) for k in offsets])
               if offsets.size else np.zeros((1, 3)))
    shift_precision, shift_recall, shift_f1 = (float(v) for v in shifted.mean(axis=0))
    return {
        "rate": float(fired.mean()) if steps else 0.0,
        "precision": precision, "recall": recall, "f1": f1,
        "chance_precision": chance, "lift": precision / chance if chance > 0 else 0.0,
        "shift_precision": shift_precision, "shift_recall": shift_recall, "shift_f1": shift_f1,
        "shift_lift": precision / shift_precision if shift_precision > 0 else 0.0,
    }


def alignment_line(name: str, figures: dict[str, float], unit: str, events: str = "") -> str:
    """One line of `event_alignment`'s figures for the terminal: how often detector `name` fires (per `unit`:
    "symbols", "points"), and its precision (`events` says against what), lift, shifted lift, recall and F1."""
    return (f"{name}: fires at {figures['rate']:.1%} of {unit}; precision {figures['precision']:.2f}"
            f"{' ' + events if events else ''} (chance {figures['chance_precision']:.2f}, lift {figures['lift']:.2f}; "
            f"shifted {figures['shift_precision']:.2f}, lift {figures['shift_lift']:.2f}), recall {figures['recall']:.2f}, "
            f"F1 {figures['f1']:.2f}")


def logged_alignment(alignments: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"z1_precision": ..., "z1_lift": ...}: the figures of each detector's event_alignment (keyed by its
    name, "z1", "z2", ...) that a log record keeps."""
    return {f"{name}_{key}": figures[key] for name, figures in alignments.items() for key in LOGGED_FIGURES}
