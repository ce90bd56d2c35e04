"""PNG drawings, the same pictures as svg.py's drawn by matplotlib (a bare Figure on its own Agg canvas:
no pyplot state, so safe in a web server's threads), and a grid of several drawings."""
from __future__ import annotations

import io
import os
from typing import Any, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from ..hmlstm.atomic import atomic_write

from .geometry import (WrittenText, coloured_pieces, _Layout, _check_boundaries, _check_offsets, _drawn_points, _layout,
                       _letters_row, _margin, _marker_indices)
from .style import (BACKGROUND, INK_COLOUR, INK_HEIGHT, LETTERS_LABEL_BAND, LETTERS_TITLE_BAND, MARKER_COLOUR,
                    STROKE_WIDTH)


# One SVG pixel is 1/100 inch in the PNG, so at dpi=100 both pictures have the same size.
SVG_PIXELS_PER_INCH = 100.0


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
    colour_by: str | Sequence[str] = "ink",
    marker_layer: int | None | Sequence[int | None] = None,
    stroke_width: float = STROKE_WIDTH,
    colours: Sequence[str] | None = None,
    ink_height: float = INK_HEIGHT,
    background: str | None = BACKGROUND,
    dpi: float = SVG_PIXELS_PER_INCH,
    straighten: bool = False,
) -> bytes:
    """Several pen sequences stacked top to bottom in one PNG, each under its optional title.

    `boundaries`, if given, has one entry (array or None) per sequence; `colour_by` and `marker_layer` are one
    for all or one per sequence.
    """
    if len(list_of_offsets) == 0:
        raise ValueError("render_grid_png needs at least one pen sequence")
    count = len(list_of_offsets)
    colour_modes = [colour_by] * count if isinstance(colour_by, str) else list(colour_by)
    marker_layers = list(marker_layer) if isinstance(marker_layer, (list, tuple)) else [marker_layer] * count
    if len(colour_modes) != count or len(marker_layers) != count:
        raise ValueError(f"got {len(colour_modes)} colourings and {len(marker_layers)} marker layers for {count} "
                         "pen sequences")
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
        _draw(axes, offsets, row_boundaries, colour_modes[i], marker_layers[i], layout, stroke_width, colours, None)
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
