"""`handwriting-hm export`: a training checkpoint -> a compact inference model file.

The file keeps only what `load_handwriting_model` needs: the checkpoint markers (format,
format_version, kind "handwriting"), the model `config`, the weights (`model`, float16 by
default: half the size, and the loader casts back to float32) and `metadata` (the
normalisation `stats`, the boundary `slope` the model was trained to, where it came from).
No optimiser, schedule or random state: it cannot be resumed, only used.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from handwriting_hm.hmlstm.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, save_checkpoint
from handwriting_hm.model import load_handwriting_model

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def export_model(checkpoint_path: str | Path, out_path: str | Path, dtype: torch.dtype = torch.float16) -> dict:
    """Write the inference file for `checkpoint_path` to `out_path` (atomically); return its metadata."""
    checkpoint_path = Path(checkpoint_path)
    loaded = load_handwriting_model(checkpoint_path)  # validates config, weights and stats
    checkpoint = load_checkpoint(checkpoint_path, kind="handwriting")
    progress = checkpoint.get("progress", {})
    metadata = {
        **checkpoint["metadata"],
        "stats": {"mean": list(loaded.stats["mean"]), "std": list(loaded.stats["std"])},
        "slope": loaded.slope,
        "exported_from": str(checkpoint_path),
        "step": progress.get("step"),
        "epoch": progress.get("epoch"),
        "training_seconds": progress.get("elapsed_s"),
        "weights_dtype": str(dtype).removeprefix("torch."),
    }
    weights = {name: value.to(dtype) if value.is_floating_point() else value
               for name, value in loaded.model.state_dict().items()}
    save_checkpoint(out_path, {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "handwriting",
                               "config": checkpoint["config"], "model": weights, "metadata": metadata})
    return metadata


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a training run's best.pt or latest.pt")
    parser.add_argument("out", type=Path, help="inference model file to write")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16", help="weight storage (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    export_model(args.checkpoint, args.out, DTYPES[args.dtype])
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {args.dtype} weights)")
    return 0
