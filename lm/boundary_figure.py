"""The boundaries of a model on a text (`analyse`) and their picture (`boundary_figure`, `draw`): what
`hm-lm boundaries` shows (its docstring says how to read it)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from handwriting_hm.hmlstm.atomic import atomic_write
from handwriting_hm.hmlstm.core import COPY, operations

from .corpus import EOL, encode_text
from .model import LoadedLM


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
