"""`hm-lm export`: an inference-only copy of a training checkpoint (weights in half precision by default).

The copy cannot be resumed, only used (or trained on with `hm-lm train --init-from`); the output may not be
the input or any training checkpoint, so an export never replaces what a run resumes from.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run's best.pt or latest.pt")
    parser.add_argument("output", help="the file to write, e.g. lm/models/ptb-default.pt (never the input or a training checkpoint)")
    parser.add_argument("--full-precision", action="store_true", help="keep float32 weights")


def run(args: argparse.Namespace) -> int:
    import torch  # here, not above, so that --help answers at once

    from .model import export_model

    export_model(args.checkpoint, args.output, torch.float32 if args.full_precision else torch.float16)
    size = Path(args.output).stat().st_size
    print(f"wrote {args.output} ({size / 1e6:.2f} MB)")
    return 0
