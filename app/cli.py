"""`handwriting-hm app`: load the models, then build and serve the page.

The models are loaded before Gradio is imported, so a missing, corrupt or incompatible
checkpoint (or a missing data file) is reported (one line, by `handwriting_hm.cli`) within a
few seconds instead of after Gradio's long import.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from handwriting_hm.shipped import DEFAULT_MODEL, DEFAULT_SYNTHESIS_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"model checkpoint (default: the shipped model, {DEFAULT_MODEL.name})")
    parser.add_argument("--synthesis", type=Path, default=None, metavar="CKPT",
                        help=f"a synthesis checkpoint for the Write view (default: the shipped model, "
                             f"{DEFAULT_SYNTHESIS_MODEL.name}, where installed; without one the view says how to train one)")
    parser.add_argument("--data", type=Path, default=None, metavar="PREPARED",
                        help="a prepared IAM-OnDB file (handwriting-hm prepare): its lines can lend the Write view "
                             "their style by line id")


def run(args: argparse.Namespace) -> int:
    from handwriting_hm.synthesis.model import load_synthesis_model
    from handwriting_hm.unconditional.sample import load_model_or_explain

    model = load_model_or_explain(args.checkpoint)
    synthesis_path = args.synthesis or (DEFAULT_SYNTHESIS_MODEL if DEFAULT_SYNTHESIS_MODEL.is_file() else None)
    synthesis = load_synthesis_model(synthesis_path) if synthesis_path is not None else None
    if args.data is not None and not args.data.is_file():
        raise ValueError(f"--data {args.data}: no such file (a prepared IAM-OnDB .npz from handwriting-hm prepare)")
    from .main import build_app, launch_app  # imports Gradio: seconds, so only once the models are known good

    launch_app(build_app(model, synthesis, args.data), host=args.host, port=args.port, share=args.share)
    return 0
