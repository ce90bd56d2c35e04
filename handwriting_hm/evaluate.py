"""`handwriting-hm evaluate`: the paper's handwriting metric (§4.2, Table 3) on a prepared split.

The numbers and their definition are scoring.py's. The checkpoint's kind picks the model family (kinds.py): a
handwriting checkpoint is scored by `unconditional.evaluate`, through the core's fastest path here (impl
"auto": the reference loop's numbers up to rounding); a synthesis checkpoint (kind "synthesis") gets the same
numbers with each line given its text (`synthesis.evaluate.evaluate_synthesis`), on the split scheme it was
trained on.
The command shows a progress bar on stderr (the test split takes minutes on a CPU).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from handwriting_hm.hmlstm.atomic import atomic_write
from handwriting_hm.shipped import shipped_or_path

if TYPE_CHECKING:
    import torch


# ----------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=shipped_or_path, help="a training run's best.pt/latest.pt or an exported "
                        "model; 'default', 'lstm' and 'synthesis' name the shipped ones")
    parser.add_argument("--data", required=True, type=Path, help="prepared file from `handwriting-hm prepare`")
    parser.add_argument("--split", default="test", help="split to score (default: %(default)s)")
    parser.add_argument("--scheme", default="paper", help="split scheme, as in training (default: %(default)s; a "
                        "synthesis checkpoint uses its own)")
    parser.add_argument("--batch-size", type=int, default=32, help="lines per forward pass (default: %(default)s)")
    parser.add_argument("--max-lines", type=int, default=None, help="score only the first N lines of the split")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--pen-up-window", type=int, default=2, help="a firing within this many points of a pen-up "
                        "counts as at it (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")


def run(args: argparse.Namespace) -> int:
    # imported here, not above, so that --help answers at once
    from handwriting_hm.hmlstm.device import resolve_device
    from handwriting_hm.kinds import family_of

    if args.batch_size < 1 or (args.max_lines is not None and args.max_lines < 1):
        raise ValueError("--batch-size and --max-lines must be at least 1")
    if args.pen_up_window < 0:
        raise ValueError(f"--pen-up-window must be >= 0, got {args.pen_up_window}")
    return family_of(args.checkpoint).evaluate(args, resolve_device(args.device))


def run_handwriting(args: argparse.Namespace, device: torch.device) -> int:
    """A handwriting checkpoint: the metric on the --scheme split, through the core's fastest path here."""
    from data_prep.dataset import HandwritingDataset  # CLI glue: the model code never imports data_prep
    from handwriting_hm.hmlstm.core import HMLSTM
    from handwriting_hm.scoring import line_word_starts
    from handwriting_hm.unconditional.evaluate import check_same_statistics, evaluate_lines
    from handwriting_hm.unconditional.config import layer1_note
    from handwriting_hm.unconditional.model import load_handwriting_model

    loaded = load_handwriting_model(args.checkpoint)
    if isinstance(loaded.model.core, HMLSTM):
        loaded.model.core.impl = "auto"  # the fastest core path here: the same numbers up to rounding
    dataset = HandwritingDataset(args.data, split=args.split, scheme=args.scheme)
    check_same_statistics(loaded.stats, dataset.stats, args.checkpoint)
    count = len(dataset) if args.max_lines is None else min(args.max_lines, len(dataset))
    items = [dataset[i] for i in range(count)]  # (offsets, text) of each line
    lines = [line for line, _ in items]
    starts = [line_word_starts(line, text, loaded.stats) for line, text in items]
    result = evaluate_lines(loaded.model.to(device), lines, loaded.slope, args.batch_size, device,
                            names=dataset.line_ids[:count], progress=True, pen_up_window=args.pen_up_window,
                            word_starts=starts)
    print(f"{args.checkpoint} on {args.scheme}/{args.split} (boundary slope a = {loaded.slope:.3f})")
    print(result.format())
    config = loaded.model.config
    if note := layer1_note(config):
        print(note)
    if args.json is not None:
        write_json(args.json, {"checkpoint": str(args.checkpoint), "data": str(args.data), "scheme": args.scheme,
                               "split": args.split, "slope": loaded.slope,
                               "layer1_boundaries": config.layer1_boundaries, **asdict(result)})
    return 0


def run_synthesis(args: argparse.Namespace, device: torch.device) -> int:
    """A synthesis checkpoint: the same metric with each line given its text, on the checkpoint's own scheme."""
    from handwriting_hm.synthesis.evaluate import evaluate_synthesis  # reads the prepared file through data_prep
    from handwriting_hm.synthesis.model import KIND as SYNTHESIS_KIND

    result = evaluate_synthesis(args.checkpoint, args.data, args.split, args.batch_size, args.max_lines, device,
                                progress=True)
    print(f"{args.checkpoint} (synthesis, each line given its text) on {args.split}")
    print(result.format())
    if args.json is not None:
        write_json(args.json, {"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
                               "kind": SYNTHESIS_KIND, **asdict(result)})
    return 0


def write_json(path: Path, record: dict) -> None:
    with atomic_write(path) as file:
        file.write((json.dumps(record, indent=2, allow_nan=False) + "\n").encode("utf-8"))
