"""Where the boundaries fall against the words: precision, recall, F1 and lift at word boundaries.

Step t reads symbol x_t; z^l_t = 1 means layer l ended a segment after reading it. Word boundaries
are the separators: the space ("_" in PTB, " " elsewhere) and the end of line. Per detector:
  precision  the share of firings at a word boundary: x_t is a separator, or x_{t+1} is (the
             segment ends with the word or with the space after it);
  recall     the share of separators x_t with a firing at t or at t-1 (at or just before them);
  F1         their harmonic mean;
  lift       precision over the precision of firings at random steps at the same rate (the share
             of steps at a word boundary): 1 is chance;
  shift_*    the same figures for the firings circularly shifted by several offsets (a null that
             keeps their rhythm: a detector that fires every k steps, whatever it reads, scores
             as well shifted as not), and shift_lift = precision / shifted precision.
"""
from __future__ import annotations

import numpy as np

from .corpus import EOL

SEPARATORS = ("_", " ", EOL)
SHIFTS = 16  # offsets of the circular-shift null, spread over the text


def separators(ids: np.ndarray, vocab: list[str]) -> np.ndarray:
    """(T,) bool: where x_t is a word separator."""
    table = np.array([symbol in SEPARATORS for symbol in vocab])
    return table[np.asarray(ids, dtype=np.int64)]


def _scores(fired: np.ndarray, is_separator: np.ndarray) -> tuple[float, float, float]:
    at_boundary = is_separator | np.append(is_separator[1:], False)
    fired_before = fired | np.insert(fired[:-1], 0, False)
    precision = float(at_boundary[fired].mean()) if fired.any() else 0.0
    recall = float(fired_before[is_separator].mean()) if is_separator.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def alignment(fired: np.ndarray, is_separator: np.ndarray) -> dict[str, float]:
    """The figures of the module docstring for one detector: fired and is_separator (T,) bool."""
    fired, is_separator = np.asarray(fired, dtype=bool), np.asarray(is_separator, dtype=bool)
    if fired.shape != is_separator.shape or fired.ndim != 1:
        raise ValueError(f"fired and is_separator must be two equal 1-d arrays, got {fired.shape} and {is_separator.shape}")
    steps = fired.size
    precision, recall, f1 = _scores(fired, is_separator)
    chance = float((is_separator | np.append(is_separator[1:], False)).mean()) if steps else 0.0
    offsets = np.unique(np.linspace(steps // (SHIFTS + 1), steps - steps // (SHIFTS + 1), SHIFTS).astype(int))
    offsets = offsets[(offsets > 1) & (offsets < steps - 1)]
    shifted = np.array([_scores(np.roll(fired, int(k)), is_separator) for k in offsets]) if offsets.size else \
        np.zeros((1, 3))
    shift_precision, shift_recall, shift_f1 = (float(v) for v in shifted.mean(axis=0))
    return {
        "rate": float(fired.mean()) if steps else 0.0,
        "precision": precision, "recall": recall, "f1": f1,
        "chance_precision": chance, "lift": precision / chance if chance > 0 else 0.0,
        "shift_precision": shift_precision, "shift_recall": shift_recall, "shift_f1": shift_f1,
        "shift_lift": precision / shift_precision if shift_precision > 0 else 0.0,
    }


def boundary_report(boundaries: np.ndarray, ids: np.ndarray, vocab: list[str]) -> dict[str, dict[str, float]]:
    """{"z1": alignment(...), ...} for boundaries (T, L-1) read over the symbols ids (T,)."""
    is_separator = separators(ids, vocab)
    return {f"z{l + 1}": alignment(boundaries[:, l] > 0.5, is_separator) for l in range(boundaries.shape[1])}


def report_lines(report: dict[str, dict[str, float]]) -> list[str]:
    """One line per detector, for the terminal."""
    return [f"  {name}: fires at {r['rate']:.1%} of symbols; precision {r['precision']:.2f} (chance "
            f"{r['chance_precision']:.2f}, lift {r['lift']:.2f}; shifted {r['shift_precision']:.2f}, lift "
            f"{r['shift_lift']:.2f}), recall {r['recall']:.2f}, F1 {r['f1']:.2f}" for name, r in report.items()]
