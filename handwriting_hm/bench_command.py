"""`handwriting-hm bench`: the flags of the speed benchmarks (bench.py), which it imports, and torch with it,
only once it runs, so that --help answers at once."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small training shapes (a few minutes on 2 CPU cores)")
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                        help="all: the CPU and, where there is one, the GPU")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (the best is kept)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--no-training", action="store_true", help="skip the training and whole-step tables")
    parser.add_argument("--no-reference", action="store_true", help="skip the slow reference loop in training")
    parser.add_argument("--no-sampler", action="store_true", help="skip the sampler table")
    parser.add_argument("--no-sparse", action="store_true", help="skip the sparse path's table (3x400, B=32, T=100)")
    parser.add_argument("--no-whole-step", action="store_true", help="skip the whole-training-step table")
    parser.add_argument("--no-synthesis", action="store_true", help="skip the synthesis model's table")


def run(args: argparse.Namespace) -> int:
    from .bench import run as run_benchmarks

    return run_benchmarks(args)
