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
import math
import time

import torch
from torch import nn
from tqdm import tqdm

from handwriting_hm.hmlstm.output import SoftmaxHead
from handwriting_hm.hmlstm.device import resolve_device

from .batches import evaluation_rows
from .corpus import SPLITS
from .prepared_text import load_prepared_text
from .model import DEFAULT_MODEL, load_lm


@torch.no_grad()
def split_bpc(model: nn.Module, ids, rows: int = 1, bptt: int = 100, slope: float = 1.0,
              progress: bool = False) -> tuple[float, int]:
    """(bits per character, symbols scored) of `model` on the stream `ids` (see the module docstring).
    `progress` shows a bar of windows read on stderr."""
    device = next(model.parameters()).device
    inputs, targets, mask = (tensor.to(device) for tensor in evaluation_rows(ids, rows))
    was_training = model.training
    model.eval()
    state, total_nats, scored = None, 0.0, int(mask.sum())
    for start in tqdm(range(0, inputs.shape[1], bptt), unit="window", desc="scoring", disable=not progress,
                      dynamic_ncols=True):
        window = slice(start, start + bptt)
        valid = mask[:, window]
        output = model(inputs[:, window], state=state, mask=None if bool(valid.all()) else valid, slope=slope)
        log_p = SoftmaxHead.log_likelihood(output.logits.float(), targets[:, window])
        total_nats -= float((log_p * valid).sum())
        state = output.core.state.carried()
    model.train(was_training)
    return total_nats / scored / math.log(2.0), scored


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", nargs="?", default="default",
                        help=f"a run's best.pt/latest.pt or an exported model; 'default' is {DEFAULT_MODEL.name}")
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
    if args.rows < 1 or args.bptt < 1 or (args.limit is not None and args.limit < 2):
        raise ValueError("--rows and --bptt must be >= 1 and --limit >= 2")
    loaded = load_lm(args.checkpoint)
    data = load_prepared_text(args.data)
    if data.vocab != loaded.vocab:
        raise ValueError(f"{args.data}: its vocabulary differs from the model's (prepared from another corpus?)")
    ids = data.splits[args.split][: args.limit]
    model = loaded.model.to(resolve_device(args.device))
    started = time.monotonic()
    bpc, scored = split_bpc(model, ids, rows=args.rows, bptt=args.bptt, slope=loaded.slope, progress=True)
    result = {"checkpoint": str(args.checkpoint), "split": args.split, "bpc": bpc, "symbols_scored": scored,
              "symbols_in_split": int(data.splits[args.split].size), "rows": args.rows,
              "slope": loaded.slope, "device": str(model.embedding.weight.device),
              "seconds": time.monotonic() - started}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.split} BPC {bpc:.4f} over {scored} symbols (rows {args.rows}, slope {loaded.slope:g}, "
              f"{result['seconds']:.1f} s on {result['device']})")
    return 0
