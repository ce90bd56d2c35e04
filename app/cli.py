"""`handwriting-hm app`: load the models, then build and serve the page.

The models are loaded before Gradio is imported, so a missing, corrupt or incompatible
checkpoint (or a missing data file) is reported (one line, by `handwriting_hm.cli`) within a
few seconds instead of after Gradio's long import. Start-up says on stderr what it does (loading
each model, compiling the C kernels once or loading them from their cache folder, building the
page) and how long each step took; the models are loaded first, so that a bad one is the only
line printed.
"""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
    parser.add_argument("--writers", type=int, default=None,
                        help="/write requests written at once (default: one per two cores; see docs/limits.md)")
    parser.add_argument("--data", type=Path, default=None, metavar="PREPARED",
                        help="a prepared IAM-OnDB file (handwriting-hm prepare): its lines can lend the Write view "
                             "their style by line id")


def run(args: argparse.Namespace) -> int:
    from handwriting_hm.hmlstm.paths import few_rows
    from handwriting_hm.synthesis.model import load_synthesis_model
    from handwriting_hm.unconditional.sample import load_model_or_explain

    started = time.monotonic()
    if args.writers is not None and args.writers < 1:
        raise ValueError(f"--writers must be at least 1, got {args.writers}")
    if args.data is not None and not args.data.is_file():
        raise ValueError(f"--data {args.data}: no such file (a prepared IAM-OnDB .npz from handwriting-hm prepare)")
    # the models first, and quietly: a bad one is the only line printed
    model = load_model_or_explain(args.checkpoint)
    synthesis_path = args.synthesis or (DEFAULT_SYNTHESIS_MODEL if DEFAULT_SYNTHESIS_MODEL.is_file() else None)
    synthesis = load_synthesis_model(synthesis_path) if synthesis_path is not None else None
    print(f"handwriting-hm app: loaded the handwriting model {args.checkpoint or DEFAULT_MODEL}"
          + (f" and the synthesis model {synthesis_path}" if synthesis is not None else " (no synthesis model)")
          + f" in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    if few_rows.wanted_here():
        cache = few_rows.cache_folder()
        with saying(f"loading the C kernels from {cache}" if few_rows.library_path(cache).exists() else
                    f"compiling the C kernels once into {cache} (later starts load them from there)"):
            few_rows.library()
    with saying("importing Gradio and building the page (a short sample picks the page's colours)"):
        from .main import build_app, launch_app  # imports Gradio: seconds, so only once the models are known good

        page = build_app(model, synthesis, args.data, args.writers)
    print(f"handwriting-hm app: started in {time.monotonic() - started:.1f} s; serving on "
          f"http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    launch_app(page, host=args.host, port=args.port, share=args.share)
    return 0


@contextmanager
def saying(what: str) -> Iterator[None]:
    """Say on stderr what start-up does, and when it is done how long it took."""
    print(f"handwriting-hm app: {what}...", end="", file=sys.stderr, flush=True)
    began = time.monotonic()
    try:
        yield
    finally:
        print(f" {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
