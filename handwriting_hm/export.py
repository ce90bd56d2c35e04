"""`handwriting-hm export`: a training checkpoint -> a compact inference model file.

Handwriting and synthesis checkpoints both export (the file keeps its kind, which picks the loader that
checks it first: kinds.py; `write` reads an exported synthesis model as it reads a run's best.pt).

The file keeps what `load_handwriting_model` needs: the model `config`, the weights (float16 by
default: half the size, and the loader casts back to float32), the boundary `slope` the model was
trained to, and `metadata` (the normalisation `stats`, where it came from), written by the one
checkpoint writer (`hmlstm.checkpoint.export_checkpoint`). No optimiser, schedule or random
state: it cannot be resumed, only used (or trained on with `train --init-from`). The output may not be
the input or any training checkpoint: an export never replaces what a run resumes from.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DTYPES = ("bfloat16", "float16", "float32")  # torch's names of the weights' storage types


def export_model(source: str | Path, destination: str | Path, dtype: str = "float16") -> dict:
    """Write the inference file for `source`, a handwriting or synthesis checkpoint, to `destination`
    (atomically), its weights stored as `dtype` (one of DTYPES); return its metadata."""
    # imported here, not above, so that --help answers at once
    import torch

    from handwriting_hm.hmlstm.checkpoint import export_checkpoint
    from handwriting_hm.kinds import family_of

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    family = family_of(source)
    family.load(source)  # refuse, in one line, a checkpoint whose config, weights or stats are unusable
    return export_checkpoint(source, destination, family.kind, getattr(torch, dtype))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a training run's best.pt or latest.pt")
    parser.add_argument("out", type=Path, help="inference model file to write (never the input or a training checkpoint)")
    parser.add_argument("--dtype", choices=DTYPES, default="float16", help="weight storage (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    export_model(args.checkpoint, args.out, args.dtype)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {args.dtype} weights)")
    return 0
