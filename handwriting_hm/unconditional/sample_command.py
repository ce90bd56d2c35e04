"""`handwriting-hm sample`: generate handwriting with a trained model and write it as SVG, PNG or JSON.

    handwriting-hm sample --out hand.svg --n-points 700 --bias 1.5 --seed 3 --colour-by layer1 --marker-layer 1

The sampler (sample.py) and the drawing are imported when the command runs, not above, so that
--help answers at once.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..drawing.style import COLOUR_MODES
from ..shipped import DEFAULT_MODEL, shipped_or_path

if TYPE_CHECKING:
    from .sample import Sample


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path,
                        help="file to write, .svg, .png or .json (the app's downloads are the same files); "
                             "with --n-samples > 1 it holds every sample, top to bottom")
    parser.add_argument("--n-samples", type=int, default=1, help="how many drawings (default 1)")
    parser.add_argument("--n-points", type=int, default=700, help="length of each drawing in points (default 700)")
    parser.add_argument("--bias", type=float, default=0.0, help="Graves's sampling bias, 0 = none (default 0)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same drawing")
    parser.add_argument("--colour-by", choices=("learned", *COLOUR_MODES), default="learned",
                        help="ink: one colour; strokes: per pen-down stroke; layer1/layer2: per segment "
                             "between that layer's boundaries; learned (default): the highest layer that fired "
                             "in the first sample, its firings marked (pen-up strokes if none fired)")
    parser.add_argument("--marker-layer", type=int, default=None,
                        help="mark the points where this layer fired (default: none, or the layer 'learned' picks)")
    parser.add_argument("--straighten", action="store_true",
                        help="draw the line rotated so its baseline is level (the JSON keeps the raw strokes)")
    parser.add_argument("--checkpoint", type=shipped_or_path, default=None,
                        help=f"model checkpoint (default: the shipped model, {DEFAULT_MODEL.name}; 'lstm': the "
                             "shipped LSTM beside it)")


def run(args: argparse.Namespace) -> int:
    from ..drawing.records import SAVE_FORMATS, save_samples
    from .config import layer1_note
    from .sample import learned_colouring, load_model_or_explain, sample_handwriting, sampling_parameters

    if args.out.suffix.lower() not in SAVE_FORMATS:
        raise ValueError(f"--out {args.out}: the extension must be one of {', '.join(SAVE_FORMATS)}")
    parameters = sampling_parameters(args.n_points, args.n_samples, args.bias, args.temperature, args.seed)
    loaded = load_model_or_explain(args.checkpoint)
    samples = sample_handwriting(loaded, **parameters)
    colour_by, marker_layer = args.colour_by, args.marker_layer
    if colour_by == "learned":
        colour_by, learned_layer = learned_colouring(samples[0].firings())
        marker_layer = (learned_layer or None) if marker_layer is None else marker_layer
    save_samples(args.out, samples, parameters, colour_by=colour_by, marker_layer=marker_layer,
                 straighten=args.straighten)
    for i, sample in enumerate(samples, start=1):
        print(f"{args.out}  sample {i}: {format_counts(sample)}")
    print(f"coloured by {colour_by}" + (f", layer {marker_layer}'s firings marked" if marker_layer else ""))
    if note := layer1_note(loaded.model.config):
        print(note)
    return 0


def format_counts(sample: Sample) -> str:
    """One line: each layer's UPDATE/COPY/FLUSH counts and the share of layer-steps copied."""
    layers = "  ".join(f"{layer}: " + "/".join(str(counts[name]) for name in ("UPDATE", "COPY", "FLUSH"))
                       for layer, counts in sample.operation_counts().items())
    from ..scoring import PEN_UP_WINDOW

    near = "  ".join(f"z{l}: {round(figures['precision'] * n)} of {n} at pen-ups"
                     for l, (figures, n) in enumerate(zip(sample.pen_up_alignment(), sample.firings()), start=1))
    return (f"UPDATE/COPY/FLUSH  {layers}  ({sample.copied_fraction():.0%} of layer-steps copied)"
            + (f"  {near} (within {PEN_UP_WINDOW} points)" if near else ""))
