"""`handwriting-hm boundaries`: where each layer's boundary detector fires on real lines (the paper's Figure 5).

    handwriting-hm boundaries --data iam.npz --split test --lines 3 -o boundaries.png
    handwriting-hm boundaries runs/hm/best.pt --data iam.npz --first 10 --lines 2 -o b.png

The model reads each line whole from the zero state with the slope it was saved with, as `evaluate` scores
it. The picture has two rows per line: the ink coloured by pen-up strokes (what the writer did), then
coloured by the segments between layer 1's boundaries with red dots where layer 2 fires (what the model
found; a two-layer model has only layer 1's; where z1 is the pen-ups, layer 2's segments). A dot or a
colour change at point j means the detector fired while the model read point j. For each line it prints
the text and, per detector, how often it fired, how many of its firings fall within `--pen-up-window`
points of a pen-up and of a word's start (estimated from the line's word count, `scoring.word_starts`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..shipped import DEFAULT_MODEL, shipped_or_path

MAX_LINES = 20  # the picture grows with the lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", type=shipped_or_path, default=None,
                        help=f"a run's .pt or an exported model (default: the shipped {DEFAULT_MODEL.name})")
    parser.add_argument("--data", required=True, type=Path, help="prepared file from `handwriting-hm prepare`")
    parser.add_argument("--split", default="test", help="split to read (default: %(default)s)")
    parser.add_argument("--scheme", default="paper", help="split scheme, as in training (default: %(default)s)")
    parser.add_argument("--first", type=int, default=0, help="the first line of the split to draw (default: 0)")
    parser.add_argument("--lines", type=int, default=3, help=f"how many lines to draw, at most {MAX_LINES} "
                        "(default: 3)")
    parser.add_argument("--pen-up-window", type=int, default=2, help="a firing within this many points of a pen-up "
                        "or a word's start counts as at it (default: %(default)s)")
    parser.add_argument("--output", "-o", type=Path, default=Path("boundaries.png"),
                        help="PNG to write (default: boundaries.png)")


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.lines <= MAX_LINES:
        raise ValueError(f"--lines must be between 1 and {MAX_LINES}, got {args.lines}")
    if args.first < 0 or args.pen_up_window < 0:
        raise ValueError("--first and --pen-up-window must be >= 0")
    if args.output.suffix.lower() != ".png":
        raise ValueError(f"--output {args.output}: the picture is a PNG; give a name ending in .png")
    # imported here, not above, so that --help answers at once
    import numpy as np
    import torch

    from data_prep.dataset import HandwritingDataset  # CLI glue: the model code never imports data_prep
    from ..drawing.png import render_grid_png
    from ..hmlstm.detectors import event_alignment
    from ..normalisation import raw_offsets
    from ..scoring import word_starts
    from .config import layer1_note
    from .evaluate import check_same_statistics
    from .model import load_handwriting_model

    loaded = load_handwriting_model(args.checkpoint)
    detectors = loaded.model.core.num_detectors
    if not detectors:
        raise ValueError(f"{args.checkpoint or DEFAULT_MODEL}: an LSTM has no boundary detectors to draw")
    dataset = HandwritingDataset(args.data, split=args.split, scheme=args.scheme)
    check_same_statistics(loaded.stats, dataset.stats, args.checkpoint or DEFAULT_MODEL)
    if args.first >= len(dataset):
        raise ValueError(f"--first {args.first}: the {args.split} split has {len(dataset)} lines")
    chosen = range(args.first, min(args.first + args.lines, len(dataset)))

    # the model's row: the segments of layer 1, or of layer 2 where layer 1's are the pen-up strokes (a pen-up
    # clock); dots where layer 2 fires
    segments = 2 if loaded.model.config.pen_up_clock and detectors >= 2 else 1
    drawings, boundaries, titles, colour_by, markers = [], [], [], [], []
    for index in chosen:
        offsets, text = dataset[index]
        with torch.no_grad():
            _, output = loaded.model.sequence_log_likelihood(offsets[None].float(), slope=loaded.slope)
        # step t reads point t-1: row j of the drawing is the step that reads point j (the last point: none)
        fired = torch.cat([output.core.boundaries[0, 1:], torch.zeros(1, detectors)]).round().long().numpy()
        raw = raw_offsets(offsets.numpy(), loaded.stats)
        pen_ups, starts = raw[:, 2] > 0.5, word_starts(raw, len(text.split()))
        print(f"{dataset.line_ids[index]}: {text!r} ({len(raw)} points, {int(pen_ups.sum())} pen-ups, "
              f"{len(text.split())} words)")
        for l in range(detectors):
            near_pen_up = event_alignment(fired[:, l] > 0, pen_ups, args.pen_up_window, args.pen_up_window)
            near_word = event_alignment(fired[:, l] > 0, starts, args.pen_up_window, args.pen_up_window)
            count = int(fired[:, l].sum())
            print(f"  z{l + 1}: fired {count} times; within {args.pen_up_window} points of a pen-up "
                  f"{round(near_pen_up['precision'] * count)}, of a word's start {round(near_word['precision'] * count)}")
        drawings += [raw, raw]
        boundaries += [fired, fired]
        colour_by += ["strokes", f"layer{segments}"]
        markers += [None, 2 if detectors >= 2 else None]
        titles += [f"{dataset.line_ids[index]}: pen-up strokes",
                   f"layer-{segments} segments" + (", red dots where layer 2 fires" if detectors >= 2 else "")]
    render_grid_png(drawings, titles=titles, path=args.output, boundaries=boundaries, colour_by=colour_by,
                    marker_layer=markers, straighten=False)
    if note := layer1_note(loaded.model.config):
        print(note)
    print(f"wrote {args.output}")
    return 0
