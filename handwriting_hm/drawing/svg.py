"""SVG drawings: a pen sequence with its boundaries (`render_svg`), one single-stroke path per pen-down
stroke for pen plotters (`render_plotter_svg`), and the letters picture of a synthesis model's writing,
where the boundaries fall against the characters the window attended to (`render_letters_svg`)."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Sequence

import numpy as np
import svgwrite

from .geometry import (WrittenText, coloured_pieces, _LettersRow, _check_boundaries, _check_offsets, _drawn_points,
                       _layout, _letters_row, _margin, _marker_indices, _stroke_spans)
from .style import (BACKGROUND, INK_COLOUR, INK_HEIGHT, LETTERS_LABEL_BAND, LETTERS_TITLE_BAND, MARKER_COLOUR,
                    PLOTTER_STROKE_WIDTH, STROKE_WIDTH)


SVG_NAMESPACE = "http://www.w3.org/2000/svg"


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
