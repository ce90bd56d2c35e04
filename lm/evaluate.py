"""`hm-lm evaluate`: bits per character over a whole split, the state carried across it.

How a split is scored (`split_bpc`):
  * The split is one stream x_1..x_N. Every symbol but the first is scored exactly once:
    BPC = -(1/(N-1)) sum_{t=2..N} log2 p(x_t | x_1..x_{t-1}, as far as the state reaches).
    x_1 has no context and is only read, from the zero initial state.
  * rows = 1 (exact, `--rows 1`) reads the stream as one sequence in windows of `bptt` steps,
    each window's final state starting the next: the model has seen everything before each symbol.
  * rows = R > 1 cuts the (input, target) pairs into R contiguous rows, read side by side (R
    times fewer sequential steps). Each row starts from the zero state, so the first symbols of
    rows 2..R are predicted with a cold state: a slightly higher BPC than rows = 1. The command's
    default, 64 rows, is within 0.001 BPC of the exact number on PTB's test split (1.740 against
    1.739 with the shipped model) and about 20 times faster on a CPU (19 s against 7-8 min).
    Reported numbers say which they used.
The command shows a progress bar of windows read on stderr.
"""
from __future__ import annotations

import argparse
import json
import time

from .corpus import SPLITS
from .shipped import DEFAULT_MODEL, LSTM_MODEL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", default="default",
                        help=f"a run's best.pt/latest.pt or an exported model; 'default' is {DEFAULT_MODEL.name}, 'lstm' {LSTM_MODEL.name}")
    parser.add_argument("--data", required=True, help="prepared .npz from `hm-lm prepare` (same corpus as the model)")
    parser.add_argument("--split", choices=SPLITS, default="test")
    parser.add_argument("--rows", type=int, default=64,
                        help="rows read side by side, each from a cold state (default 64: within 0.001 BPC of "
                             "the exact number on PTB, about 20x faster); 1: exact, the state carried throughout")
    parser.add_argument("--bptt", type=int, default=100, help="steps per window (changes speed, not the result)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N symbols of the split")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")


def run(args: argparse.Namespace) -> int:
    # imported here, not above, so that --help answers at once
    from handwriting_hm.hmlstm.device import resolve_device

    from .model import load_lm
    from .prepared_text import load_prepared_text
    from .scoring import BoundaryRecorder, split_bpc
    from .segmentation import boundary_report, report_lines

    if args.rows < 1 or args.bptt < 1 or (args.limit is not None and args.limit < 2):
        raise ValueError("--rows and --bptt must be >= 1 and --limit >= 2")
    loaded = load_lm(args.checkpoint)
    data = load_prepared_text(args.data)
    if data.vocab != loaded.vocab:
        raise ValueError(f"{args.data}: its vocabulary differs from the model's (prepared from another corpus?)")
    ids = data.splits[args.split][: args.limit]
    model = loaded.model.to(resolve_device(args.device))
    detectors = model.core.num_detectors
    recorder = BoundaryRecorder(model.core.num_layers, loaded.slope, getattr(model.core, "z_on_copy", "keep")) \
        if detectors else None
    started = time.monotonic()
    bpc, scored = split_bpc(model, ids, rows=args.rows, bptt=args.bptt, slope=loaded.slope, progress=True,
                            on_output=recorder)
    result = {"checkpoint": str(args.checkpoint), "split": args.split, "bpc": bpc, "symbols_scored": scored,
              "symbols_in_split": int(data.splits[args.split].size), "rows": args.rows,
              "boundary_slope": loaded.slope, "device": str(model.embedding.weight.device),
              "seconds": time.monotonic() - started}
    if recorder is not None:
        boundaries, read = recorder.stream()
        result["boundaries"] = boundary_report(boundaries, read, loaded.vocab)
        result["health"] = recorder.health.summary()
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.split} BPC {bpc:.4f} over {scored} symbols (rows {args.rows}, boundary slope a = "
          f"{loaded.slope:g}, {result['seconds']:.1f} s on {result['device']})")
    if recorder is not None:
        print("where the boundaries fall (word boundaries: a separator read, or the next symbol one):")
        print("\n".join(report_lines(result["boundaries"])))
        health = result["health"]
        print("  operations: " + "; ".join(
            f"layer {l + 1} UPDATE {health[f'layer{l + 1}_update']:.1%} COPY {health[f'layer{l + 1}_copy']:.1%} "
            f"FLUSH {health[f'layer{l + 1}_flush']:.1%}" for l in range(model.core.num_layers)))
    return 0
