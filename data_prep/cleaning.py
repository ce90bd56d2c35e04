"""Optional cleaning of one line's pen samples, and the conversion to offsets.

Every step is off by default, because each one changes the data the HM-LSTM paper's counts were
measured on. Steps work on absolute samples (T, 3) = x, y, end_of_stroke in sensor units, in
this order: drop duplicate samples, cap (or drop the line at) absurd pen-down jumps, resample.
Each returns how much it changed, so the preparation report can say what cleaning removed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

JUMP_ACTIONS = ("cap", "drop-line")


@dataclass(frozen=True)
class CleaningConfig:
    """Which cleaning steps run; the defaults leave the data as recorded."""

    drop_duplicates: bool = False  # drop a sample identical to the previous one in its stroke
    max_jump: float | None = None  # a pen-down step longer than this (sensor units) is a glitch
    jump_action: str = "cap"  # "cap": shorten such a step to max_jump; "drop-line": drop the line
    resample_step: float | None = None  # resample each stroke at this arc length (sensor units)

    def __post_init__(self) -> None:
        if self.jump_action not in JUMP_ACTIONS:
            raise ValueError(f"jump action must be one of {JUMP_ACTIONS}, not {self.jump_action!r}")
        if self.max_jump is not None and not self.max_jump > 0:
            raise ValueError(f"max jump must be positive, not {self.max_jump}")
        if self.resample_step is not None and not self.resample_step > 0:
            raise ValueError(f"resample step must be positive, not {self.resample_step}")


def clean(points: np.ndarray, config: CleaningConfig) -> tuple[np.ndarray | None, dict[str, int]]:
    """Apply the configured steps to one line; None when a step drops the whole line.

    The counts returned are per line and add up across lines: duplicate_points_removed,
    jumps_capped, lines_dropped_for_jumps, points_before_resampling, points_after_resampling.
    """
    counts: dict[str, int] = {}
    if config.drop_duplicates:
        before = len(points)
        points = drop_duplicate_points(points)
        counts["duplicate_points_removed"] = before - len(points)
    if config.max_jump is not None:
        too_long = _pen_down_steps(points) > config.max_jump
        if config.jump_action == "drop-line":
            if too_long.any():
                counts["lines_dropped_for_jumps"] = 1
                return None, counts
        else:
            counts["jumps_capped"] = int(too_long.sum())
            points = cap_jumps(points, config.max_jump)
    if config.resample_step is not None:
        counts["points_before_resampling"] = len(points)
        points = resample_strokes(points, config.resample_step)
        counts["points_after_resampling"] = len(points)
    return points, counts


def _stroke_index(points: np.ndarray) -> np.ndarray:
    """Which stroke each sample belongs to (0, 0, ..., 1, 1, ...)."""
    return np.concatenate(([0], np.cumsum(points[:-1, 2] > 0))).astype(np.int64)


def _pen_down_steps(points: np.ndarray) -> np.ndarray:
    """Length of each step into a sample from the previous sample of the same stroke; 0 for the
    first sample of a stroke (a pen-up move is not a recording of the pen)."""
    steps = np.zeros(len(points))
    same_stroke = points[:-1, 2] == 0
    steps[1:][same_stroke] = np.hypot(*np.diff(points[:, :2], axis=0)[same_stroke].T)
    return steps


def _with_stroke_ends(points: np.ndarray, stroke: np.ndarray) -> np.ndarray:
    """Set end_of_stroke on exactly the last sample of each stroke."""
    points = points.copy()
    points[:, 2] = np.append(stroke[1:] != stroke[:-1], True)
    return points


def drop_duplicate_points(points: np.ndarray) -> np.ndarray:
    """Drop each sample that repeats the previous sample of its stroke; a stroke keeps at least
    its first sample, and a repeated position across a pen lift is kept (it is a real event)."""
    stroke = _stroke_index(points)
    repeats = np.zeros(len(points), dtype=bool)
    repeats[1:] = (stroke[1:] == stroke[:-1]) & (np.diff(points[:, :2], axis=0) == 0).all(axis=1)
    return _with_stroke_ends(points[~repeats], stroke[~repeats])


def cap_jumps(points: np.ndarray, max_jump: float) -> np.ndarray:
    """Shorten every pen-down step longer than `max_jump` to that length, keeping its direction;
    the rest of the line moves with it, as offsets are what the model sees."""
    steps = np.diff(points[:, :2], axis=0)
    lengths = _pen_down_steps(points)[1:]
    scale = np.where(lengths > max_jump, max_jump / np.maximum(lengths, 1e-12), 1.0)
    capped = points.copy()
    capped[1:, :2] = points[0, :2] + np.cumsum(steps * scale[:, None], axis=0)
    return capped


def resample_strokes(points: np.ndarray, step: float) -> np.ndarray:
    """Resample each stroke at equal arc-length `step`, keeping its first and last sample."""
    stroke = _stroke_index(points)
    bounds = np.flatnonzero(np.diff(stroke)) + 1
    pieces = []
    for samples in np.split(points[:, :2], bounds):
        arc = np.concatenate(([0.0], np.cumsum(np.hypot(*np.diff(samples, axis=0).T))))
        # np.interp accepts repeated arc values (a pen at rest), so duplicates need no special case.
        targets = np.append(np.arange(0.0, arc[-1], step), arc[-1]) if arc[-1] > 0 else np.zeros(1)
        resampled = np.column_stack([np.interp(targets, arc, samples[:, 0]), np.interp(targets, arc, samples[:, 1])])
        ends = np.zeros((len(resampled), 1))
        ends[-1] = 1.0
        pieces.append(np.hstack([resampled, ends]))
    return np.concatenate(pieces)


def to_offsets(points: np.ndarray) -> np.ndarray:
    """Absolute samples (x, y down, end) -> float32 offsets (dx, dy up, end_of_stroke).

    The first row is (0, 0, end): where a line starts on the board carries no information.
    """
    offsets = np.zeros((len(points), 3), dtype=np.float32)
    offsets[1:, 0] = np.diff(points[:, 0])
    offsets[1:, 1] = -np.diff(points[:, 1])  # y grows downward on the board, upward here
    offsets[:, 2] = points[:, 2]
    return offsets
