"""The look of every drawing: colour modes, colours and sizes in screen pixels. Constants only, so that
a command can offer the colour modes without loading numpy or matplotlib."""
from __future__ import annotations

COLOUR_MODES = ("ink", "strokes", "layer1", "layer2")

INK_COLOUR = "#1b1f3b"
# matplotlib's tab10 without its red, which is kept for the boundary markers so they
# never blend into a segment of the same colour.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b",
    "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)
MARKER_COLOUR = "#d62728"
BACKGROUND = "white"

INK_HEIGHT = 120.0  # pixels from the lowest to the highest ink of an upright drawing
STROKE_WIDTH = 3.0  # pixels; pages scale a long line down to their width, so not too thin
PLOTTER_STROKE_WIDTH = 1.0  # pixels: about a fine pen's line at the plotter's usual 96 px per inch
LETTERS_TITLE_BAND = 24.0  # pixels above each line of the letters picture, for its text and legend
LETTERS_LABEL_BAND = 26.0  # pixels below it, for the character labels
