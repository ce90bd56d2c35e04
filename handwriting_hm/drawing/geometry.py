"""What every drawing shares: the pen sequence turned into points, strokes and coloured pieces, the
layout in screen pixels, the colours and sizes, and the checks of what is drawn.

A pen sequence is a (T, 3) array of offsets: dx, dy, end_of_stroke (1.0 on the last point
of each pen-down stroke), with y growing upward as in the prepared data. `boundaries` is an
optional (T, K) 0/1 array: `boundaries[t, k] == 1` means layer k+1's boundary detector
fired while reading point t, so a new layer-(k+1) segment starts at point t+1.

Every picture is laid out once in "screen" pixels (y downward, ink scaled to a fixed height),
so the SVG and the PNG look the same. `straighten=True` draws the ink rotated so that its
baseline is level (generated lines tend to drift upwards); the data are never changed. A stroke
is cut into pieces wherever its colour changes; consecutive pieces share the point where they
meet, so the pen line stays continuous while the colour changes exactly at the boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import numpy as np

from ..letter_boundaries import word_ends  # where a word ends on the ink: counted there

from .style import COLOUR_MODES, INK_COLOUR, LETTERS_LABEL_BAND, LETTERS_TITLE_BAND, PALETTE


class Sample(Protocol):
    """What the sample renderers read of a generated line (sample.Sample is one; drawing imports no sampler)."""

    offsets: np.ndarray  # (T, 3): dx, dy in raw units, end_of_stroke
    boundaries: np.ndarray  # (T, L-1) 0/1
    operations: np.ndarray  # (T, L) COPY / UPDATE / FLUSH codes

    def operation_counts(self) -> dict[str, dict[str, int]]: ...

    def copied_fraction(self) -> float: ...


class WrittenText(Protocol):
    """What the letters picture reads of a written line (write.WrittenText is one)."""

    text: str
    offsets: np.ndarray  # (T, 3)
    boundaries: np.ndarray  # (T, L-1) 0/1
    attended: np.ndarray  # (T,): index into `text` of the character the window weighed most


def offsets_to_points(offsets: np.ndarray) -> np.ndarray:
    """(T, 3) offsets dx, dy, end_of_stroke -> (T, 3) absolute x, y, end_of_stroke."""
    offsets = _check_offsets(offsets)
    points = offsets.copy()
    points[:, :2] = np.cumsum(offsets[:, :2], axis=0)
    return points


def straighten_baseline(points: np.ndarray) -> np.ndarray:
    """(T, 3) absolute points rotated so that the line fitted through the pen positions is level.

    The line is the orthogonal least-squares fit (the principal axis of the x, y positions):
    unlike a fit of y on x it turns with the ink, so a drawing rotated by any angle comes back
    level. The rotation is about the points' centre; end_of_stroke is kept.
    """
    points = _check_offsets(points, name="points")
    straight = points.copy()
    if len(points) < 2:
        return straight
    centred = points[:, :2] - points[:, :2].mean(axis=0)
    sxx, syy, sxy = (centred[:, 0] ** 2).sum(), (centred[:, 1] ** 2).sum(), (centred[:, 0] * centred[:, 1]).sum()
    angle = 0.5 * np.arctan2(2 * sxy, sxx - syy)  # direction of the principal axis, in (-90, 90] degrees
    if abs(angle) > np.pi / 4:  # a drawing taller than wide: no baseline to level
        return straight
    cos, sin = np.cos(-angle), np.sin(-angle)
    straight[:, 0] = centred[:, 0] * cos - centred[:, 1] * sin
    straight[:, 1] = centred[:, 0] * sin + centred[:, 1] * cos
    straight[:, :2] += points[:, :2].mean(axis=0)
    return straight


def _drawn_points(offsets: np.ndarray, straighten: bool) -> np.ndarray:
    points = offsets_to_points(offsets)
    return straighten_baseline(points) if straighten else points


def split_strokes(points: np.ndarray) -> list[np.ndarray]:
    """(T, 3) absolute points -> one (n_i, 2) array of x, y per pen-down stroke.

    A stroke ends after a point with end_of_stroke=1; a trailing stroke without one is kept.
    """
    points = _check_offsets(points, name="points")
    return [points[start:stop, :2] for start, stop in _stroke_spans(points[:, 2])]


def _stroke_spans(end_of_stroke: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of the pen-down strokes."""
    stops = (np.flatnonzero(end_of_stroke > 0.5) + 1).tolist()
    if len(end_of_stroke) and (not stops or stops[-1] != len(end_of_stroke)):
        stops.append(len(end_of_stroke))
    starts = [0] + stops[:-1]
    return list(zip(starts, stops))


@dataclass(frozen=True)
class Piece:
    """A run of consecutive points of one stroke drawn in one colour.

    `indices` are time steps; the first one is shared with the previous piece of the same
    stroke when the colour changed mid-stroke (so the line stays continuous).
    """

    indices: np.ndarray
    colour: str


def coloured_pieces(
    offsets: np.ndarray,
    boundaries: np.ndarray | None = None,
    colour_by: str = "ink",
    colours: Sequence[str] | None = None,
) -> list[Piece]:
    """Cut the pen-down strokes into single-colour pieces according to `colour_by`."""
    offsets = _check_offsets(offsets)
    boundaries = _check_boundaries(boundaries, len(offsets))
    palette = _check_colours(colours)
    colour_ids = _colour_ids(offsets[:, 2], boundaries, colour_by)
    if colour_by == "ink":
        palette = (INK_COLOUR,) if colours is None else palette[:1]
    return _pieces(offsets[:, 2], colour_ids, palette)


def _pieces(end_of_stroke: np.ndarray, colour_ids: np.ndarray, palette: Sequence[str]) -> list[Piece]:
    """Cut the pen-down strokes wherever the colour id changes; id i is drawn in palette[i % len]."""
    pieces = []
    for start, stop in _stroke_spans(end_of_stroke):
        ids = colour_ids[start:stop]
        # first own point of every piece: the stroke start, then each colour change
        firsts = [start] + (start + 1 + np.flatnonzero(ids[1:] != ids[:-1])).tolist()
        for first, end in zip(firsts, firsts[1:] + [stop]):
            shared = first - 1 if first > start else first
            colour = palette[colour_ids[first] % len(palette)]
            pieces.append(Piece(indices=np.arange(shared, end), colour=colour))
    return pieces


def _colour_ids(end_of_stroke: np.ndarray, boundaries: np.ndarray | None, colour_by: str) -> np.ndarray:
    """One integer per point; points with the same id share a colour."""
    if colour_by not in COLOUR_MODES:
        raise ValueError(f"colour_by must be one of {', '.join(COLOUR_MODES)}; got {colour_by!r}")
    if colour_by == "ink":
        return np.zeros(len(end_of_stroke), dtype=np.int64)
    if colour_by == "strokes":
        fired = end_of_stroke > 0.5
    else:
        fired = _layer_column(boundaries, int(colour_by.removeprefix("layer")), f"colour_by={colour_by!r}")
    # a segment starts on the point AFTER the one where its boundary fired
    return np.concatenate([[0], np.cumsum(fired[:-1], dtype=np.int64)]) if len(fired) else np.zeros(0, np.int64)


def _layer_column(boundaries: np.ndarray | None, layer: int, what: str) -> np.ndarray:
    if boundaries is None:
        raise ValueError(f"{what} needs boundaries, but none were given")
    if not 1 <= layer <= boundaries.shape[1]:
        raise ValueError(
            f"{what} asks for layer {layer}, but boundaries has {boundaries.shape[1]} layer column(s) "
            f"(shape {boundaries.shape}); valid layers are 1..{boundaries.shape[1]}"
        )
    return boundaries[:, layer - 1]


def _marker_indices(boundaries: np.ndarray | None, marker_layer: int | None) -> np.ndarray:
    if marker_layer is None:
        return np.zeros(0, dtype=np.int64)
    if isinstance(marker_layer, bool) or not isinstance(marker_layer, (int, np.integer)):
        raise ValueError(f"marker_layer must be a layer number (1-based int) or None; got {marker_layer!r}")
    return np.flatnonzero(_layer_column(boundaries, int(marker_layer), f"marker_layer={marker_layer}"))


@dataclass(frozen=True)
class _Layout:
    """Maps data points to screen pixels: ink scaled, y flipped, a margin all round."""

    screen: np.ndarray  # (T, 2) x, y in pixels, y downward
    width: float
    height: float


def _layout(points: np.ndarray, ink_height: float, margin: float) -> _Layout:
    if len(points) == 0:
        return _Layout(screen=np.zeros((0, 2)), width=2 * margin, height=2 * margin)
    low, high = points[:, :2].min(axis=0), points[:, :2].max(axis=0)
    ink_w, ink_h = high - low
    # scale the ink's height to `ink_height` pixels, but treat a very flat drawing (a dash,
    # a lone dot) as if it were a tenth as tall as wide, so it doesn't balloon
    extent = max(ink_h, ink_w / 10.0)
    scale = ink_height / extent if extent > 0 else 1.0
    screen = np.empty((len(points), 2))
    screen[:, 0] = margin + (points[:, 0] - low[0]) * scale
    screen[:, 1] = margin + (high[1] - points[:, 1]) * scale
    return _Layout(screen=screen, width=ink_w * scale + 2 * margin, height=ink_h * scale + 2 * margin)


def _margin(stroke_width: float, marker_radius: float | None) -> float:
    """Room round the ink for the line caps and marker dots, plus some air."""
    radius = marker_radius if marker_radius is not None else 1.5 * stroke_width
    return max(stroke_width, radius) + 8.0


@dataclass(frozen=True)
class _LettersRow:
    """One written line laid out for the letters picture: a title band, the ink, a label band."""

    screen: np.ndarray  # (T, 2) pixels, y downward
    width: float
    height: float
    pieces: list[Piece]  # the ink, one colour per attended character
    firings: list[np.ndarray]  # per detector (z1, z2), the points where it fired
    word_ends: list[float]  # x of each word end, between the word's last point and the next
    labels: list[tuple[float, str, str]]  # (x, character, colour) under each written character
    title: str


def _letters_row(line: WrittenText, ink_height: float, stroke_width: float) -> _LettersRow:
    offsets = _check_offsets(line.offsets)
    boundaries = _check_boundaries(line.boundaries, len(offsets))
    attended = np.asarray(line.attended, dtype=np.int64)
    if attended.shape != (len(offsets),):
        raise ValueError(f"attended must have one character index per point ({len(offsets)}); got {attended.shape}")
    layout = _layout(offsets_to_points(offsets), ink_height, margin=_margin(stroke_width, None))
    screen = layout.screen + np.array([0.0, LETTERS_TITLE_BAND])
    # alternate colours along the text, so neighbouring characters always differ
    pieces = _pieces(offsets[:, 2], attended, PALETTE)
    detectors = 0 if boundaries is None else min(2, boundaries.shape[1])  # z1 and z2
    firings = [np.flatnonzero(boundaries[:, k]) for k in range(detectors)]
    ends = [float(screen[e:e + 2, 0].mean()) for e in word_ends(attended, line.text)]
    labels = [(float(screen[attended == u, 0].mean()), line.text[u], PALETTE[u % len(PALETTE)])
              for u in np.unique(attended) if line.text[u] != " "]
    title = "   ".join([repr(line.text), *("z1 fired: dots", "z2 fired: red rings")[:detectors], "dashed: word ends"])
    width = max(layout.width, 8.0 * len(title))  # room for the title
    return _LettersRow(screen, width, layout.height + LETTERS_TITLE_BAND + LETTERS_LABEL_BAND, pieces, firings,
                       ends, labels, title)


def _check_offsets(offsets: Any, name: str = "offsets") -> np.ndarray:
    array = np.asarray(offsets, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"{name} must have shape (T, 3) (dx, dy, end_of_stroke); got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_boundaries(boundaries: Any, length: int) -> np.ndarray | None:
    if boundaries is None:
        return None
    array = np.asarray(boundaries)
    if array.ndim != 2 or array.shape[0] != length:
        raise ValueError(f"boundaries must have shape (T, K) with T={length}; got shape {array.shape}")
    if not np.isin(array, (0, 1)).all():
        raise ValueError("boundaries must contain only 0 and 1")
    return array.astype(bool)


def _check_colours(colours: Sequence[str] | None) -> tuple[str, ...]:
    if colours is None:
        return PALETTE
    if isinstance(colours, str) or len(colours) == 0:
        raise ValueError("colours must be a non-empty sequence of colour strings, e.g. ['#1f77b4', '#ff7f0e']")
    return tuple(colours)
