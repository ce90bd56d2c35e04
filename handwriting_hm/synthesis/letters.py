"""`handwriting-hm letters`: write a set of texts with a synthesis model and report where its
boundaries fall on the letters: z1's firings against character ends and z2's against word ends, as the
attention window places them (`letter_boundaries.py`), within --tolerance points either side. Per
detector: the share of firings near an end against chance, and `hmlstm.detectors.event_alignment`'s
figures over the lines laid end to end: precision, lift over chance and over a circular shift, recall
of the ends, F1.

    handwriting-hm letters "a few words" "and more"      # the shipped synthesis model
    handwriting-hm letters "a few words" --checkpoint runs/synthesis/best.pt
    handwriting-hm letters --texts-file texts.txt --checkpoint best.pt --tolerance 3
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..shipped import DEFAULT_SYNTHESIS_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("texts", nargs="*", help="texts to write (or give --texts-file)")
    parser.add_argument("--texts-file", type=Path, help="a file of texts, one a line (blank lines skipped)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"a synthesis model (default: the shipped model, {DEFAULT_SYNTHESIS_MODEL.name})")
    parser.add_argument("--tolerance", type=int, default=3, help="points either side of a boundary (default 3)")
    parser.add_argument("--bias", type=float, default=1.0, help="Graves's sampling bias (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


def run(args: argparse.Namespace) -> int:
    # imported here, not above, so that --help answers at once
    from ..hmlstm.detectors import alignment_line
    from ..letter_boundaries import character_boundary_hits, character_ends, format_hits, word_boundary_hits, word_ends
    from .model import load_synthesis_model
    from .write import check_synthesis_checkpoint, installed_synthesis_model, write_in_batches

    texts = list(args.texts)
    if args.texts_file is not None:
        texts += [line.strip() for line in args.texts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError("give texts to write, as arguments or with --texts-file")
    if args.tolerance < 0:
        raise ValueError(f"--tolerance must be 0 or more points, got {args.tolerance}")
    loaded = load_synthesis_model(check_synthesis_checkpoint(args.checkpoint or installed_synthesis_model()))
    written = write_in_batches(texts, loaded, bias=args.bias, seed=args.seed)
    detectors = loaded.model.core.num_detectors
    print(f"{len(written)} texts written, {sum(not line.finished for line in written)} stopped at the step cap")
    if detectors >= 1:
        hits = character_boundary_hits([(line.boundaries[:, 0], line.attended) for line in written], args.tolerance)
        print(format_hits("z1", hits, "character", args.tolerance))
        ends = [character_ends(line.attended) for line in written]
        print("  " + alignment_line("z1", aligned(written, 0, ends, args.tolerance), "points",
                                    f"within {args.tolerance} points of a character end"))
    if detectors >= 2:
        hits = word_boundary_hits([(line.boundaries[:, 1], line.attended, line.text) for line in written],
                                  args.tolerance)
        print(format_hits("z2", hits, "word", args.tolerance))
        ends = [word_ends(line.attended, line.text) for line in written]
        print("  " + alignment_line("z2", aligned(written, 1, ends, args.tolerance), "points",
                                    f"within {args.tolerance} points of a word end"))
    return 0


def aligned(written: list, detector: int, ends: list[np.ndarray], tolerance: int) -> dict[str, float]:
    """event_alignment of one detector's firings against the ends (point indices per line), the lines laid
    end to end."""
    from ..hmlstm.detectors import event_alignment

    fired = np.concatenate([line.boundaries[:, detector] > 0.5 for line in written])
    events = np.zeros(len(fired), dtype=bool)
    start = 0
    for line, line_ends in zip(written, ends):
        events[start + np.asarray(line_ends, dtype=np.int64)] = True
        start += len(line.boundaries)
    return event_alignment(fired, events, before=tolerance, after=tolerance)
