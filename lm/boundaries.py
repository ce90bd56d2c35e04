"""`hm-lm boundaries`: where each layer's boundary detector fires on a text (like the paper's Figures 3-4).

The model reads the text from the zero state, one symbol per step, with the slope it was saved
with. Step t is the step that reads symbol t; z^l_t = 1 (a mark in row l) means layer l ended a
segment after reading it, so layer l+1 UPDATEs at that step and layer l FLUSHes at the next.
The picture has the text along the bottom, one row per layer with a boundary detector (z^1 ..
z^{L-1}) and, with `--norms`, every layer's ||h^l_t|| as a heat map behind the marks (each layer
scaled to its own maximum). Long texts wrap into several panels.

The fraction of steps each layer updates is the fraction that is not COPY (UPDATE or FLUSH,
from `handwriting_hm.hmlstm.core.operations`); layer 1 reads every symbol, so its fraction is 1.
Text is encoded as `lm.corpus.encode_text` documents (PTB: spaces -> "_", newlines -> end of
line); a character the model does not know is an error that names it. Texts are at most
MAX_SYMBOLS symbols long (the picture grows with the text); `hm-lm evaluate` measures a whole split.
After the picture it prints, per detector, where the firings fall against the words
(`lm.segmentation`: precision, recall, F1, lift over chance and over a circular shift).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from handwriting_hm.hmlstm.atomic import atomic_write

from handwriting_hm.hmlstm.core import COPY, FLUSH, UPDATE, operations

from .corpus import EOL, encode_text
from .model import DEFAULT_MODEL, LoadedLM, load_lm
from .segmentation import boundary_report, report_lines

MAX_SYMBOLS = 2000


class BoundaryAnalysis(NamedTuple):
    labels: list[str]  # what to print under each step
    boundaries: np.ndarray  # (T, L-1) z^l_t of layers 1..L-1
    operations: np.ndarray  # (T, L) COPY / UPDATE / FLUSH codes
    norms: np.ndarray  # (T, L) ||h^l_t||
    update_fraction: np.ndarray  # (L,) fraction of steps that are not COPY


def label(symbol: str) -> str:
    """How a symbol is printed under its step: word boundaries and line ends made visible."""
    if symbol == EOL:
        return "\u21b5"
    if symbol == "_":
        return "\u2423"
    return symbol if symbol.isprintable() and symbol != " " else ("\u2423" if symbol == " " else "\u00b7")


@torch.no_grad()
def analyse(loaded: LoadedLM, text: str) -> BoundaryAnalysis:
    """Run the model over `text` from the zero state and collect boundaries, operations and norms."""
    ids = encode_text(text, loaded.vocab, loaded.dataset)
    output = loaded.model(torch.tensor([ids]), slope=loaded.slope)
    codes = operations(output.core.boundaries)[0].numpy()
    norms = torch.stack([h[0].norm(dim=-1) for h in output.core.hidden], dim=-1).numpy()
    return BoundaryAnalysis(
        labels=[label(loaded.vocab[i]) for i in ids],
        boundaries=output.core.boundaries[0].numpy(),
        operations=codes,
        norms=norms,
        update_fraction=(codes != COPY).mean(axis=0),
    )


def draw(analysis: BoundaryAnalysis, path: Path, width: int = 60, show_norms: bool = False, title: str = "") -> None:
    """Write the PNG of `boundary_figure`."""
    figure = boundary_figure(analysis, width, show_norms, title)
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=110)


def boundary_figure(analysis: BoundaryAnalysis, width: int = 60, show_norms: bool = False, title: str = "") -> Figure:
    """Panels of `width` steps, the text along the bottom of each, under a heading that fits."""
    steps, layers = analysis.norms.shape
    detectors = analysis.boundaries.shape[1]
    rows = layers if show_norms else detectors
    panels = max(1, -(-steps // width))
    columns = max(1, min(width, steps))  # every panel has this many step slots, the last one maybe fewer used
    fractions = ", ".join(f"layer {l + 1} {f:.0%}" for l, f in enumerate(analysis.update_fraction))
    heading = [title] if title else []
    heading += ["red: z fires (boundary)" + ("; blue: ||h|| per layer" if show_norms else ""),
                f"steps updated: {fractions}"]
    # wide enough for the steps and for the heading (about 0.075 in per character at 9 pt), with the labels' margin
    figure_width = max(1.2 + 0.17 * columns, 0.6 + 0.075 * max(map(len, heading)))
    figure = Figure(figsize=(figure_width, 0.2 * len(heading) + 0.3 + panels * (0.3 * rows + 0.55)),
                    layout="constrained")  # keeps the heading and the tick labels inside the figure
    FigureCanvasAgg(figure)
    axes = figure.subplots(panels, 1, squeeze=False)[:, 0]
    scale = np.maximum(analysis.norms.max(axis=0), 1e-9)
    for panel, ax in enumerate(axes):
        span = slice(panel * width, min(steps, (panel + 1) * width))
        n = span.stop - span.start
        if show_norms:
            ax.imshow((analysis.norms[span] / scale).T, aspect="auto", cmap="Blues", vmin=0, vmax=1,
                      origin="lower", extent=(-0.5, n - 0.5, -0.5, rows - 0.5), interpolation="nearest")
        fired_t, fired_layer = np.nonzero(analysis.boundaries[span] > 0.5)
        ax.scatter(fired_t, fired_layer, marker="s", s=60, color="tab:red", label="z fires")
        ax.set_xlim(-0.5, columns - 0.5)
        ax.set_ylim(-0.5, rows - 0.5)
        ax.set_yticks(range(rows))
        ax.set_yticklabels([f"z{l + 1}" if l < detectors and not show_norms else f"layer {l + 1}" for l in range(rows)],
                           fontsize=8)
        ax.set_xticks(range(n))
        ax.set_xticklabels(analysis.labels[span], fontfamily="monospace", fontsize=10)
        ax.tick_params(axis="x", length=0)
        ax.set_xticks(np.arange(-0.5, n, 1), minor=True)
        ax.grid(axis="x", which="minor", color="0.9", linewidth=0.5)
        for spine in ("top", "right"):
            ax.spines[spine].set_visible(False)
    figure.suptitle("\n".join(heading), fontsize=9)
    return figure


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", default="default",
                        help=f"a run's .pt or an exported model; 'default' is {DEFAULT_MODEL.name}")
    parser.add_argument("text", help="the text to read (PTB models: lowercase words, spaces, digits as N)")
    parser.add_argument("--output", "-o", default="boundaries.png", help="PNG to write (default: boundaries.png)")
    parser.add_argument("--norms", action="store_true", help="draw ||h|| of every layer as a heat map")
    parser.add_argument("--width", type=int, default=60, help="steps per panel (default: 60)")


def run(args: argparse.Namespace) -> int:
    if args.width < 1:
        raise ValueError(f"--width must be >= 1, got {args.width}")
    if len(args.text) > MAX_SYMBOLS:
        raise ValueError(f"the text has {len(args.text)} characters; at most {MAX_SYMBOLS} are drawn "
                         f"(`hm-lm evaluate --limit N` measures the boundaries over longer text)")
    loaded = load_lm(args.checkpoint)
    if loaded.model.core.num_detectors == 0:
        raise ValueError(f"checkpoint {args.checkpoint}: an LSTM has no boundary detectors to draw")
    analysis = analyse(loaded, args.text)
    draw(analysis, Path(args.output), width=args.width, show_norms=args.norms,
         title=f"{Path(str(args.checkpoint)).name}, slope {loaded.slope:g}")
    steps = len(analysis.labels)
    print(f"wrote {args.output}: {steps} steps")
    for layer, fraction in enumerate(analysis.update_fraction):
        codes = analysis.operations[:, layer]
        fired = int((analysis.boundaries[:, layer] > 0.5).sum()) if layer < analysis.boundaries.shape[1] else 0
        print(f"  layer {layer + 1}: updates {fraction:.1%} of steps ({int((codes == UPDATE).sum())} UPDATE, "
              f"{int((codes == FLUSH).sum())} FLUSH, {int((codes == COPY).sum())} COPY)"
              + (f", z fires {fired} times" if layer < analysis.boundaries.shape[1] else ""))
    ids = np.array(encode_text(args.text, loaded.vocab, loaded.dataset))
    print("where the boundaries fall (word boundaries: a separator read, or the next symbol one):")
    print("\n".join(report_lines(boundary_report(analysis.boundaries, ids, loaded.vocab))))
    return 0
