"""Where the boundaries fall against the words: precision, recall, F1 and lift at word boundaries.

Step t reads symbol x_t; z^l_t = 1 means layer l ended a segment after reading it. Word boundaries
are the separators: the space ("_" in PTB, " " elsewhere) and the end of line. Per detector
(`handwriting_hm.hmlstm.detectors.event_alignment` with the separators as events, before 0, after 1):
  precision  the share of firings at a word boundary: x_t is a separator, or x_{t+1} is (the
             segment ends with the word or with the space after it);
  recall     the share of separators x_t with a firing at t or at t-1 (at or just before them);
  F1         their harmonic mean;
  lift       precision over the precision of firings at random steps at the same rate (the share
             of steps at a word boundary): 1 is chance;
  shift_*    the same figures for the firings circularly shifted by several offsets (a null that
             keeps their rhythm), and shift_lift = precision / shifted precision.
"""
from __future__ import annotations

import numpy as np

from handwriting_hm.hmlstm.detectors import alignment_line, event_alignment

from .corpus import EOL

SEPARATORS = ("_", " ", EOL)


def separators(ids: np.ndarray, vocab: list[str]) -> np.ndarray:
    """(T,) bool: where x_t is a word separator."""
    table = np.array([symbol in SEPARATORS for symbol in vocab])
    return table[np.asarray(ids, dtype=np.int64)]


def alignment(fired: np.ndarray, is_separator: np.ndarray) -> dict[str, float]:
    """The figures of the module docstring for one detector: fired and is_separator (T,) bool."""
    return event_alignment(fired, is_separator, before=0, after=1)


def boundary_report(boundaries: np.ndarray, ids: np.ndarray, vocab: list[str]) -> dict[str, dict[str, float]]:
    """{"z1": alignment(...), ...} for boundaries (T, L-1) read over the symbols ids (T,)."""
    is_separator = separators(ids, vocab)
    return {f"z{l + 1}": alignment(boundaries[:, l] > 0.5, is_separator) for l in range(boundaries.shape[1])}


def report_lines(report: dict[str, dict[str, float]]) -> list[str]:
    """One line per detector, for the terminal."""
    return ["  " + alignment_line(name, figures, "symbols") for name, figures in report.items()]
