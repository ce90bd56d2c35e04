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

from .shipped import DEFAULT_MODEL, LSTM_MODEL

MAX_SYMBOLS = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", default="default",
                        help=f"a run's .pt or an exported model; 'default' is {DEFAULT_MODEL.name}, 'lstm' {LSTM_MODEL.name}")
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
    # imported here, not above, so that --help answers at once
    import numpy as np

    from handwriting_hm.hmlstm.core import COPY, FLUSH, UPDATE

    from .boundary_figure import analyse, draw
    from .corpus import encode_text
    from .model import load_lm, resolve_model_path
    from .segmentation import boundary_report, report_lines

    loaded = load_lm(args.checkpoint)
    if loaded.model.core.num_detectors == 0:
        raise ValueError(f"checkpoint {args.checkpoint}: an LSTM has no boundary detectors to draw")
    analysis = analyse(loaded, args.text)
    draw(analysis, Path(args.output), width=args.width, show_norms=args.norms,
         title=f"{resolve_model_path(args.checkpoint).name}, slope {loaded.slope:g}")
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
