"""Where the boundaries fall on the letters.

A synthesis model writing a known text says, at every point, which character its window weighs
most (`write.WrittenText.attended`). That places the character and word boundaries on the ink,
and a boundary detector's firings can be set against them: the fraction of firings within
`tolerance` points of a word end, against the chance rate, the fraction of all points that lie
that close to one (what a detector firing at random points would score).

`handwriting-hm letters` (letters.py) reports it over a set of texts a synthesis model writes: z1's
firings against character ends and z2's against word ends. This module only counts: it imports
nothing of the project, so the drawings can use it too.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np


class BoundaryHits(NamedTuple):
    firings: int  # how many times the detector fired
    hits: int  # firings within the tolerance of a boundary
    points: int  # points looked at
    near: int  # points within the tolerance of a boundary (the chance rate's numerator)

    @property
    def hit_rate(self) -> float:
        return self.hits / self.firings if self.firings else float("nan")

    @property
    def chance_rate(self) -> float:
        return self.near / self.points if self.points else float("nan")


def character_ends(attended: np.ndarray) -> np.ndarray:
    """Points (indices) after which the attended character changes, and the last point."""
    attended = np.asarray(attended)
    if len(attended) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.append(np.flatnonzero(attended[1:] != attended[:-1]), len(attended) - 1)


def word_ends(attended: np.ndarray, text: str) -> np.ndarray:
    """Character ends where the character is the last of a word: followed by a space, or the text's last."""
    ends = character_ends(attended)
    characters = np.asarray(attended)[ends]
    last_of_word = np.array([c == len(text) - 1 or (text[c] != " " and text[c + 1] == " ") for c in characters],
                            dtype=bool)
    return ends[last_of_word] if len(ends) else ends


def boundary_hits(fired: np.ndarray, boundaries: np.ndarray, tolerance: int) -> BoundaryHits:
    """Set a detector's firings (T,) 0/1 against boundary points (indices into the same T points)."""
    fired = np.asarray(fired) > 0.5
    distance = np.full(len(fired), np.iinfo(np.int64).max)
    for b in np.asarray(boundaries):
        distance = np.minimum(distance, np.abs(np.arange(len(fired)) - b))
    near = distance <= tolerance
    return BoundaryHits(int(fired.sum()), int((fired & near).sum()), len(fired), int(near.sum()))


def word_boundary_hits(lines: Sequence[tuple[np.ndarray, np.ndarray, str]], tolerance: int = 3) -> BoundaryHits:
    """Over written lines (fired (T,), attended (T,), text): firings near word ends, summed."""
    totals = np.zeros(4, dtype=np.int64)
    for fired, attended, text in lines:
        totals += boundary_hits(fired, word_ends(attended, text), tolerance)
    return BoundaryHits(*(int(v) for v in totals))


def character_boundary_hits(lines: Sequence[tuple[np.ndarray, np.ndarray]], tolerance: int = 3) -> BoundaryHits:
    """Over written lines (fired (T,), attended (T,)): firings near character ends, summed."""
    totals = np.zeros(4, dtype=np.int64)
    for fired, attended in lines:
        totals += boundary_hits(fired, character_ends(attended), tolerance)
    return BoundaryHits(*(int(v) for v in totals))


def format_hits(name: str, hits: BoundaryHits, boundary: str, tolerance: int) -> str:
    """One line: how many firings, the share within `tolerance` points of a boundary, and chance."""
    if not hits.firings:
        return f"{name}: no firings in {hits.points} points (chance of a {boundary} end: {hits.chance_rate:.1%})"
    return (f"{name}: {hits.firings} firings in {hits.points} points; {hits.hit_rate:.1%} within {tolerance} "
            f"points of a {boundary} end, against {hits.chance_rate:.1%} by chance")
