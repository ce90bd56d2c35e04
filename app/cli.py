"""`handwriting-hm app`: load the model, then build and serve the page.

The model is loaded before Gradio is imported, so a missing, corrupt or incompatible
checkpoint is reported (one line, by `handwriting_hm.cli`) within a few seconds instead of
after Gradio's long import.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from handwriting_hm.model import DEFAULT_MODEL
from handwriting_hm.sample import load_model_or_explain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"model checkpoint (default: the shipped model, {DEFAULT_MODEL.name})")


def run(args: argparse.Namespace) -> int:
    model = load_model_or_explain(args.checkpoint)
    from .main import build_app, launch_app  # imports Gradio: seconds, so only once the model is known good

    launch_app(build_app(model), host=args.host, port=args.port, share=args.share)
    return 0
