"""Draw pen sequences, and the boundaries an HM-LSTM found in them, as SVG, PNG and JSON.

A pen sequence is a (T, 3) array of offsets: dx, dy, end_of_stroke (1.0 on the last point
of each pen-down stroke), with y growing upward as in the prepared data. `boundaries` is an
optional (T, K) 0/1 array: `boundaries[t, k] == 1` means layer k+1's boundary detector
fired while reading point t, so a new layer-(k+1) segment starts at point t+1.

Both pictures are laid out once in "screen" pixels (y downward, ink scaled to a fixed
height) so the SVG and the PNG look the same. `straighten=True` draws the ink rotated so that
its baseline is level (generated lines tend to drift upwards); the data are never changed. A stroke is cut into pieces wherever its
colour changes; consecutive pieces share the point where they meet, so the pen line stays
continuous while the colour changes exactly at the boundary.

`save_samples` writes what `handwriting-hm sample` and the app both offer: one SVG, PNG or JSON
file holding every sample of a request, so the same seed gives the same file from either.

For a synthesis model's writing (`handwriting-hm write`): `render_plotter_svg`, one single-stroke
path per pen-down stroke for pen plotters, and the letters picture (`render_letters_svg`/`_png`),
where the boundaries fall against the characters the window attended to.
"""
from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np
import svgwrite
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from handwriting_hm.hmlstm.atomic import atomic_write
from handwriting_hm.synthesis.letter_boundaries import word_ends  # where a word ends on the ink: counted there


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

COLOUR_MODES = ("ink", "strokes", "layer1", "layer2")
OPERATION_NAMES = ("COPY", "UPDATE", "FLUSH")
SAVE_FORMATS = (".svg", ".png", ".json")

INK_COLOUR = "#1b1f3b"
# matplotlib's tab10 without its red, which is kept for the boundary markers so they
# never blend into a segment of the same colour.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
MARKER_COLOUR = "#d62728"
BACKGROUND = "white"

# One SVG pixel is 1/100 inch in the PNG, so at dpi=100 both pictures have the same size.
SVG_PIXELS_PER_INCH = 100.0
INK_HEIGHT = 120.0  # pixels from the lowest to the highest ink of an upright drawing
STROKE_WIDTH = 3.0  # pixels; pages scale a long line down to their width, so not too thin
PLOTTER_STROKE_WIDTH = 1.0  # pixels: about a fine pen's line at the plotter's usual 96 px per inch
LETTERS_TITLE_BAND = 24.0  # pixels above each line of the letters picture, for its text and legend
LETTERS_LABEL_BAND = 26.0  # pixels below it, for the character labels
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


# ---------------------------------------------------------------------------------------
# Geometry


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


# ---------------------------------------------------------------------------------------
# SVG


def render_svg(
    offsets: np.ndarray,
    boundaries: np.ndarray | None = None,
    colour_by: str = "ink",
    marker_layer: int | None = None,
    stroke_width: float = STROKE_WIDTH,
    colours: Sequence[str] | None = None,
    ink_height: float = INK_HEIGHT,
    marker_radius: float | None = None,
    background: str | None = BACKGROUND,
    straighten: bool = False,
) -> str:
    """An SVG document of the pen sequence: one <path> per single-colour piece of stroke.

    Sizes are in pixels: the ink is scaled to `ink_height` pixels tall. `colours` replaces
    the palette (in "ink" mode its first entry is the ink). Dots mark where `marker_layer`
    (1-based) fired. `background=None` leaves the picture transparent. `straighten` levels the
    baseline (see `straighten_baseline`).
    """
    offsets = _check_offsets(offsets)
    boundaries = _check_boundaries(boundaries, len(offsets))
    pieces = coloured_pieces(offsets, boundaries, colour_by, colours)
    markers = _marker_indices(boundaries, marker_layer)
    layout = _layout(_drawn_points(offsets, straighten), ink_height, margin=_margin(stroke_width, marker_radius))

    drawing = svgwrite.Drawing(
        size=(f"{layout.width:.0f}px", f"{layout.height:.0f}px"),
        viewBox=f"0 0 {layout.width:.2f} {layout.height:.2f}",
        debug=False,  # svgwrite's validator is slow on long paths and checks nothing we need
    )
    if background is not None:
        drawing.add(drawing.rect(insert=(0, 0), size=("100%", "100%"), fill=background))
    ink = drawing.add(drawing.g(
        fill="none", stroke_width=stroke_width, stroke_linecap="round", stroke_linejoin="round",
    ))
    for piece in pieces:
        xy = layout.screen[piece.indices]
        if len(xy) == 1:
            xy = np.repeat(xy, 2, axis=0)  # a zero-length line with round caps draws a dot
        coordinates = " ".join(f"{x:.2f},{y:.2f}" for x, y in xy)
        ink.add(drawing.path(d=f"M{coordinates.replace(' ', ' L', 1)}", stroke=piece.colour))
    if len(markers):
        dots = drawing.add(drawing.g(fill=MARKER_COLOUR, class_="boundary-markers"))
        radius = marker_radius if marker_radius is not None else 1.5 * stroke_width
        for x, y in layout.screen[markers]:
            dots.add(drawing.circle(center=(round(x, 2), round(y, 2)), r=radius))
    return drawing.tostring()


def _margin(stroke_width: float, marker_radius: float | None) -> float:
    """Room round the ink for the line caps and marker dots, plus some air."""
    radius = marker_radius if marker_radius is not None else 1.5 * stroke_width
    return max(stroke_width, radius) + 8.0


def render_plotter_svg(
    offsets: np.ndarray,
    ink_height: float = INK_HEIGHT,
    stroke_width: float = PLOTTER_STROKE_WIDTH,
    colour: str = "black",
    straighten: bool = False,
) -> str:
    """An SVG for pen plotters: one single-stroke <path> per pen-down stroke, in drawing order, each
    with its own stroke and fill="none" (a plotter follows paths; a fill, a background or a path cut
    at colour changes would make it draw twice or lift the pen mid-stroke). Sizes as `render_svg`."""
    offsets = _check_offsets(offsets)
    layout = _layout(_drawn_points(offsets, straighten), ink_height, margin=_margin(stroke_width, 0.0))
    drawing = svgwrite.Drawing(size=(f"{layout.width:.0f}px", f"{layout.height:.0f}px"),
                               viewBox=f"0 0 {layout.width:.2f} {layout.height:.2f}", debug=False)
    for start, stop in _stroke_spans(offsets[:, 2]):
        xy = layout.screen[start:stop]
        if len(xy) == 1:
            xy = np.repeat(xy, 2, axis=0)  # a dot: a zero-length line, which round caps draw
        coordinates = " L".join(f"{x:.2f},{y:.2f}" for x, y in xy)
        drawing.add(drawing.path(d=f"M{coordinates}", fill="none", stroke=colour, stroke_width=stroke_width,
                                 stroke_linecap="round", stroke_linejoin="round"))
    return drawing.tostring()


# ---------------------------------------------------------------------------------------
# Boundaries against the letters (a synthesis model's writing)


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


def render_letters_svg(lines: Sequence[WrittenText], ink_height: float = INK_HEIGHT,
                       stroke_width: float = STROKE_WIDTH) -> str:
    """Where the boundaries fall on the letters: per written line (anything with offsets, boundaries,
    attended and text, as write.WrittenText), the ink coloured by the character the window attends to
    most, that character as a label under it, dashed lines at word ends, z1's firings as dots and
    z2's as red rings. Lines are stacked top to bottom."""
    if len(lines) == 0:
        raise ValueError("render_letters_svg needs at least one written line")
    return stack_svgs([_letters_svg(_letters_row(line, ink_height, stroke_width), stroke_width) for line in lines])


def _letters_svg(row: _LettersRow, stroke_width: float) -> str:
    drawing = svgwrite.Drawing(size=(f"{row.width:.0f}px", f"{row.height:.0f}px"),
                               viewBox=f"0 0 {row.width:.2f} {row.height:.2f}", debug=False)
    drawing.add(drawing.rect(insert=(0, 0), size=("100%", "100%"), fill=BACKGROUND))
    drawing.add(drawing.text(row.title, insert=(6, LETTERS_TITLE_BAND - 6), font_size=12, fill=INK_COLOUR,
                             font_family="sans-serif"))
    words = drawing.add(drawing.g(stroke="#999999", stroke_width=1, stroke_dasharray="4,3", class_="word-ends"))
    for x in row.word_ends:
        words.add(drawing.line((round(x, 2), LETTERS_TITLE_BAND), (round(x, 2), row.height - LETTERS_LABEL_BAND)))
    ink = drawing.add(drawing.g(fill="none", stroke_width=stroke_width, stroke_linecap="round",
                                stroke_linejoin="round"))
    for piece in row.pieces:
        xy = row.screen[piece.indices]
        xy = np.repeat(xy, 2, axis=0) if len(xy) == 1 else xy
        ink.add(drawing.path(d="M" + " L".join(f"{x:.2f},{y:.2f}" for x, y in xy), stroke=piece.colour))
    for layer, fired in enumerate(row.firings, start=1):
        style = ({"fill": INK_COLOUR} if layer == 1 else
                 {"fill": "none", "stroke": MARKER_COLOUR, "stroke_width": 1.5})
        group = drawing.add(drawing.g(class_=f"z{layer}-firings", **style))
        for x, y in row.screen[fired]:
            group.add(drawing.circle(center=(round(x, 2), round(y, 2)), r=1.5 if layer == 1 else 2.5 * stroke_width))
    labels = drawing.add(drawing.g(font_size=14, font_family="sans-serif", text_anchor="middle", class_="letters"))
    for x, character, colour in row.labels:
        labels.add(drawing.text(character, insert=(round(x, 2), row.height - 8), fill=colour))
    return drawing.tostring()


def render_letters_png(lines: Sequence[WrittenText], path: str | os.PathLike | None = None,
                       ink_height: float = INK_HEIGHT, stroke_width: float = STROKE_WIDTH,
                       dpi: float = SVG_PIXELS_PER_INCH) -> bytes:
    """The picture of `render_letters_svg` as PNG bytes (written atomically to `path` if given)."""
    if len(lines) == 0:
        raise ValueError("render_letters_png needs at least one written line")
    rows = [_letters_row(line, ink_height, stroke_width) for line in lines]
    width, height = max(row.width for row in rows), sum(row.height for row in rows)
    figure = Figure(figsize=(width / SVG_PIXELS_PER_INCH, height / SVG_PIXELS_PER_INCH))
    points_per_pixel = 72.0 / SVG_PIXELS_PER_INCH  # matplotlib sizes lines and text in points
    top = height
    for row in rows:
        axes = figure.add_axes((0, (top - row.height) / height, row.width / width, row.height / height))
        top -= row.height
        axes.text(6, LETTERS_TITLE_BAND - 6, row.title, fontsize=12 * points_per_pixel, color=INK_COLOUR)
        for x in row.word_ends:
            axes.plot([x, x], [LETTERS_TITLE_BAND, row.height - LETTERS_LABEL_BAND], color="#999999",
                      linewidth=points_per_pixel, linestyle=(0, (4, 3)))
        axes.add_collection(LineCollection([row.screen[piece.indices] for piece in row.pieces],
                                           colors=[piece.colour for piece in row.pieces],
                                           linewidths=stroke_width * points_per_pixel, capstyle="round"))
        for layer, fired in enumerate(row.firings, start=1):
            xy = row.screen[fired]
            if layer == 1:
                axes.scatter(xy[:, 0], xy[:, 1], s=(3 * points_per_pixel) ** 2, c=INK_COLOUR, linewidths=0, zorder=3)
            else:
                axes.scatter(xy[:, 0], xy[:, 1], s=(5 * stroke_width * points_per_pixel) ** 2, facecolors="none",
                             edgecolors=MARKER_COLOUR, linewidths=1.5 * points_per_pixel, zorder=4)
        for x, character, colour in row.labels:
            axes.text(x, row.height - 8, character, fontsize=14 * points_per_pixel, color=colour, ha="center")
        axes.set_xlim(0, row.width)
        axes.set_ylim(row.height, 0)
        axes.set_aspect("equal")
        axes.set_axis_off()
    return _figure_png(figure, dpi, BACKGROUND, path)


# ---------------------------------------------------------------------------------------
# PNG


def render_png(
    offsets: np.ndarray,
    boundaries: np.ndarray | None = None,
    colour_by: str = "ink",
    marker_layer: int | None = None,
    path: str | os.PathLike | None = None,
    stroke_width: float = STROKE_WIDTH,
    colours: Sequence[str] | None = None,
    ink_height: float = INK_HEIGHT,
    marker_radius: float | None = None,
    background: str | None = BACKGROUND,
    dpi: float = SVG_PIXELS_PER_INCH,
    straighten: bool = False,
) -> bytes:
    """The same picture as `render_svg`, as PNG bytes (written atomically to `path` if given).

    At the default dpi one SVG pixel is one PNG pixel; raise `dpi` for a sharper image.
    """
    offsets = _check_offsets(offsets)
    boundaries = _check_boundaries(boundaries, len(offsets))
    margin = _margin(stroke_width, marker_radius)
    layout = _layout(_drawn_points(offsets, straighten), ink_height, margin)
    figure = Figure(figsize=(layout.width / SVG_PIXELS_PER_INCH, layout.height / SVG_PIXELS_PER_INCH))
    axes = figure.add_axes((0, 0, 1, 1))
    _draw(axes, offsets, boundaries, colour_by, marker_layer, layout, stroke_width, colours, marker_radius)
    return _figure_png(figure, dpi, background, path)


def render_grid_png(
    list_of_offsets: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    path: str | os.PathLike | None = None,
    boundaries: Sequence[np.ndarray | None] | None = None,
    colour_by: str = "ink",
    marker_layer: int | None = None,
    stroke_width: float = STROKE_WIDTH,
    colours: Sequence[str] | None = None,
    ink_height: float = INK_HEIGHT,
    background: str | None = BACKGROUND,
    dpi: float = SVG_PIXELS_PER_INCH,
    straighten: bool = False,
) -> bytes:
    """Several pen sequences stacked top to bottom in one PNG, each under its optional title.

    `boundaries`, if given, has one entry (array or None) per sequence.
    """
    if len(list_of_offsets) == 0:
        raise ValueError("render_grid_png needs at least one pen sequence")
    if titles is not None and len(titles) != len(list_of_offsets):
        raise ValueError(f"got {len(titles)} titles for {len(list_of_offsets)} pen sequences")
    if boundaries is not None and len(boundaries) != len(list_of_offsets):
        raise ValueError(f"got {len(boundaries)} boundary arrays for {len(list_of_offsets)} pen sequences")
    margin = _margin(stroke_width, None)
    rows = []
    for i, offsets in enumerate(list_of_offsets):
        offsets = _check_offsets(offsets, name=f"offsets[{i}]")
        row_boundaries = _check_boundaries(None if boundaries is None else boundaries[i], len(offsets))
        rows.append((offsets, row_boundaries, _layout(_drawn_points(offsets, straighten), ink_height, margin)))

    title_height = 24.0 if titles is not None else 0.0  # pixels above each row for its title
    width = max(layout.width for _, _, layout in rows)
    height = sum(layout.height + title_height for _, _, layout in rows)
    figure = Figure(figsize=(width / SVG_PIXELS_PER_INCH, height / SVG_PIXELS_PER_INCH))
    top = height
    for i, (offsets, row_boundaries, layout) in enumerate(rows):
        top -= title_height
        if titles is not None:
            figure.text(margin / width, (top + title_height / 2) / height, titles[i],
                        fontsize=10, va="center", ha="left")
        bottom = top - layout.height
        # axes sized in figure fractions to exactly the row's pixels, left-aligned
        axes = figure.add_axes((0, bottom / height, layout.width / width, layout.height / height))
        _draw(axes, offsets, row_boundaries, colour_by, marker_layer, layout, stroke_width, colours, None)
        top = bottom
    return _figure_png(figure, dpi, background, path)


def _draw(
    axes: Any,
    offsets: np.ndarray,
    boundaries: np.ndarray | None,
    colour_by: str,
    marker_layer: int | None,
    layout: _Layout,
    stroke_width: float,
    colours: Sequence[str] | None,
    marker_radius: float | None,
) -> None:
    """Draw one pen sequence on matplotlib axes that span exactly `layout`'s pixels."""
    pieces = coloured_pieces(offsets, boundaries, colour_by, colours)
    markers = _marker_indices(boundaries, marker_layer)
    points_per_pixel = 72.0 / SVG_PIXELS_PER_INCH  # matplotlib sizes lines in points
    line_width = stroke_width * points_per_pixel
    lines = [piece for piece in pieces if len(piece.indices) > 1]
    axes.add_collection(LineCollection(
        [layout.screen[piece.indices] for piece in lines],
        colors=[piece.colour for piece in lines],
        linewidths=line_width, capstyle="round", joinstyle="round",
    ))
    # Agg draws nothing for a zero-length line, so single-point strokes become dots
    dots = [piece for piece in pieces if len(piece.indices) == 1]
    if dots:
        xy = layout.screen[np.concatenate([piece.indices for piece in dots])]
        axes.scatter(xy[:, 0], xy[:, 1], s=line_width**2, c=[piece.colour for piece in dots],
                     linewidths=0, zorder=2)
    if len(markers):
        radius = (marker_radius if marker_radius is not None else 1.5 * stroke_width) * points_per_pixel
        xy = layout.screen[markers]
        axes.scatter(xy[:, 0], xy[:, 1], s=(2 * radius) ** 2, c=MARKER_COLOUR, linewidths=0, zorder=3)
    axes.set_xlim(0, layout.width)
    axes.set_ylim(layout.height, 0)  # screen y grows downward, like the SVG
    axes.set_aspect("equal")
    axes.set_axis_off()


def _figure_png(figure: Figure, dpi: float, background: str | None, path: str | os.PathLike | None) -> bytes:
    """The figure as PNG bytes, also written atomically to `path` if given."""
    buffer = io.BytesIO()
    # a bare Figure on its own Agg canvas: no pyplot global state, so safe in a web server's threads
    FigureCanvasAgg(figure)
    figure.savefig(buffer, format="png", dpi=dpi, facecolor=background or "none",
                   transparent=background is None)
    data = buffer.getvalue()
    if path is not None:
        with atomic_write(path) as file:
            file.write(data)
    return data


# ---------------------------------------------------------------------------------------
# JSON and files


def drawing_record(
    offsets: np.ndarray,
    boundaries: np.ndarray | None = None,
    operations: np.ndarray | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Absolute points, offsets, boundaries and operations as lists, and the `extra` fields."""
    offsets = _check_offsets(offsets)
    boundaries = _check_boundaries(boundaries, len(offsets))
    operations = _check_operations(operations, len(offsets))
    record: dict[str, Any] = {
        "points": offsets_to_points(offsets).tolist(),
        "offsets": offsets.tolist(),
        "boundaries": None if boundaries is None else boundaries.astype(int).tolist(),
        "operations": None if operations is None else operations.tolist(),
        "operation_names": list(OPERATION_NAMES),
    }
    clashes = sorted(set(extra) & set(record))
    if clashes:
        raise ValueError(f"extra fields {clashes} would overwrite the drawing's own fields")
    record.update(extra)
    return record


def to_json(
    offsets: np.ndarray,
    boundaries: np.ndarray | None = None,
    operations: np.ndarray | None = None,
    **extra: Any,
) -> str:
    """`drawing_record` as a JSON document."""
    return json.dumps(drawing_record(offsets, boundaries, operations, **extra), default=_json_default, allow_nan=False)


def _json_default(value: Any) -> Any:
    """Let numpy arrays and scalars (and anything with .tolist(), e.g. tensors) in `extra` through."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def samples_document(samples: Sequence[Sample], parameters: Mapping[str, Any], colour_by: str = "ink",
                     marker_layer: int | None = None, straighten: bool = False) -> dict[str, Any]:
    """The JSON file of one request: its parameters, how it was drawn, and every sample's raw data
    (points and offsets in the training data's units, never straightened)."""
    return {
        "parameters": dict(parameters),
        "drawing": {"colour_by": colour_by, "marker_layer": marker_layer, "straighten": straighten},
        "samples": [drawing_record(s.offsets, s.boundaries, s.operations, operation_counts=s.operation_counts(),
                                   copied_fraction=s.copied_fraction()) for s in samples],
    }


def render_samples(suffix: str, samples: Sequence[Sample], parameters: Mapping[str, Any], colour_by: str = "ink",
                   marker_layer: int | None = None, straighten: bool = False) -> bytes:
    """One file's bytes (suffix .svg, .png or .json) holding every sample: SVG drawings stacked top
    to bottom, PNG rows (titled when there are several), or the `samples_document`."""
    style = {"colour_by": colour_by, "marker_layer": marker_layer, "straighten": straighten}
    suffix = suffix.lower()
    if suffix == ".svg":
        return stack_svgs([render_svg(s.offsets, s.boundaries, **style) for s in samples]).encode("utf-8")
    if suffix == ".png":
        titles = [f"sample {i}" for i in range(1, len(samples) + 1)] if len(samples) > 1 else None
        return render_grid_png([s.offsets for s in samples], titles=titles,
                               boundaries=[s.boundaries for s in samples], **style)
    if suffix == ".json":
        return json.dumps(samples_document(samples, parameters, **style), allow_nan=False).encode("utf-8")
    raise ValueError(f"cannot save a drawing as {suffix!r}: the extension must be one of {', '.join(SAVE_FORMATS)}")


def save_samples(path: str | os.PathLike, samples: Sequence[Sample], parameters: Mapping[str, Any],
                 colour_by: str = "ink", marker_layer: int | None = None, straighten: bool = False) -> None:
    """Write `render_samples` for `path`'s extension to `path`, atomically."""
    data = render_samples(Path(path).suffix, samples, parameters, colour_by, marker_layer, straighten)
    with atomic_write(path) as file:
        file.write(data)


def stack_svgs(svgs: Sequence[str]) -> str:
    """Several SVG documents stacked top to bottom in one SVG document (one is returned as it is)."""
    if len(svgs) == 1:
        return svgs[0]
    ET.register_namespace("", SVG_NAMESPACE)
    drawings = [ET.fromstring(svg) for svg in svgs]
    sizes = [(float(d.get("width").removesuffix("px")), float(d.get("height").removesuffix("px"))) for d in drawings]
    width, height = max(w for w, _ in sizes), sum(h for _, h in sizes)
    stack = ET.Element(f"{{{SVG_NAMESPACE}}}svg", {"width": f"{width:.0f}px", "height": f"{height:.0f}px",
                                                   "viewBox": f"0 0 {width:.2f} {height:.2f}"})
    top = 0.0
    for drawing, (_, h) in zip(drawings, sizes):
        drawing.set("y", f"{top:.2f}")
        stack.append(drawing)
        top += h
    return ET.tostring(stack, encoding="unicode")


# ---------------------------------------------------------------------------------------
# Input checks


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


def _check_operations(operations: Any, length: int) -> np.ndarray | None:
    if operations is None:
        return None
    array = np.asarray(operations)
    if array.ndim != 2 or array.shape[0] != length:
        raise ValueError(f"operations must have shape (T, L) with T={length}; got shape {array.shape}")
    if not np.isin(array, range(len(OPERATION_NAMES))).all():
        raise ValueError(f"operations must contain only the codes 0..{len(OPERATION_NAMES) - 1} ({', '.join(OPERATION_NAMES)})")
    return array.astype(np.int64)


def _check_colours(colours: Sequence[str] | None) -> tuple[str, ...]:
    if colours is None:
        return PALETTE
    if isinstance(colours, str) or len(colours) == 0:
        raise ValueError("colours must be a non-empty sequence of colour strings, e.g. ['#1f77b4', '#ff7f0e']")
    return tuple(colours)
