"""`handwriting-hm evaluate`: the paper's handwriting metric (§4.2, Table 3) on a prepared split.

The metric, exactly:

    LL_i = sum over the points t = 1..T_i of line i of log p(x_t | x_<t)        (nats)
    reported = mean over the N lines of the split of LL_i                       (higher is better)

where x_t = (dx, dy, end_of_stroke), dx and dy normalised with the training split's mean and
std (the space the model works in; the density is NOT converted back to sensor units), and
log p is the mixture-density log-likelihood of Graves (2013) Eq. 23-26: the bivariate Gaussian
mixture for (dx, dy) plus the Bernoulli end-of-stroke term. The first point is scored too (the
model reads a zero vector before it). Every line is run whole from a zero state, in float32,
with the boundary slope stored in the checkpoint and step (deterministic) boundaries, through the
core's fastest path here (impl "auto": the reference loop's numbers up to rounding).

Also reported: nats per point = sum_i LL_i / sum_i T_i, bits per point = that / ln 2, and a 95%
confidence interval of the mean over lines, mean ± 1.96 · s / sqrt(N) with s the sample standard
deviation (ddof = 1) of the LL_i: the normal approximation, fair for N in the hundreds.

Boundaries: each detector's firing rate (the fraction of points where z^l = 1), and how many of its
firings fall on a pen-up, the paper's Figure 5: z^l fires at a pen-up when it fires while the model
reads a point whose end_of_stroke is 1 (step t reads point t-1). Against that, the chance rate:
the fraction of the points read that are pen-ups, which is what a detector that fires at random
points would score.

A line whose log-likelihood is not finite (NaN or infinite offsets in the data, or a model gone
bad) would make every number NaN: evaluation names it and stops instead. The command shows a
progress bar on stderr (the test split takes minutes on a CPU).

A synthesis checkpoint (kind "synthesis") gets the same numbers with each line given its text
(`synthesis.evaluate.evaluate_synthesis`), on the split scheme it was trained on.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from handwriting_hm.hmlstm.core import HMLSTM
from handwriting_hm.unconditional.model import HandwritingModel, load_handwriting_model
from handwriting_hm.hmlstm.atomic import atomic_write
from handwriting_hm.hmlstm.checkpoint import load_checkpoint
from handwriting_hm.synthesis.model import KIND as SYNTHESIS_KIND
from handwriting_hm.hmlstm.device import resolve_device
from handwriting_hm.scoring import BoundaryCounts, Evaluation, check_finite, score_in_batches, summarise

@torch.no_grad()
def sequence_log_likelihoods(model: HandwritingModel, lines: list[torch.Tensor], slope: float = 1.0,
                             batch_size: int = 32, device: torch.device | str = "cpu",
                             progress: bool = False) -> tuple[np.ndarray, BoundaryCounts]:
    """Total log-likelihood (nats) of each line, in the given order, and the boundary counts.

    lines: normalised (T_i, 3) offsets. Lines are batched by length (less padding); padded
    steps count nothing. Returns (N,) float64 log-likelihoods and the boundary firings summed
    over all points. `progress` shows a bar of lines scored on stderr.
    """
    order = np.argsort([len(line) for line in lines], kind="stable")

    def score(chosen: Sequence[int]) -> tuple[torch.Tensor, BoundaryCounts]:
        lengths = torch.tensor([len(lines[i]) for i in chosen])
        offsets = torch.zeros(len(chosen), int(lengths.max()), 3)
        for row, i in enumerate(chosen):
            offsets[row, :len(lines[i])] = lines[i]
        log_likelihood, output = model.sequence_log_likelihood(offsets.to(device), lengths.to(device), slope=slope)
        return log_likelihood, BoundaryCounts.of_batch(output.core.boundaries, offsets, lengths)

    return score_in_batches(model, [order[begin:begin + batch_size] for begin in range(0, len(order), batch_size)],
                            len(lines), score, progress)


def evaluate_lines(model: HandwritingModel, lines: list[torch.Tensor], slope: float = 1.0,
                   batch_size: int = 32, device: torch.device | str = "cpu",
                   names: Sequence[str] | None = None, progress: bool = False) -> Evaluation:
    """The paper's metric over `lines` (normalised offsets), see the module docstring.

    Raises ValueError naming the first line (by `names`, else its index) whose log-likelihood
    is not finite.
    """
    if not lines:
        raise ValueError("nothing to evaluate: no lines")
    totals, counts = sequence_log_likelihoods(model, lines, slope, batch_size, device, progress=progress)
    check_finite(totals, lines, names)
    return summarise(totals, sum(len(line) for line in lines), counts)


def check_same_statistics(model_stats: dict, data_stats: dict, checkpoint: Path) -> None:
    """The model only means something on data normalised the way it was trained."""
    for key in ("mean", "std"):
        if not np.allclose(model_stats[key], data_stats[key], rtol=1e-5, atol=1e-6):
            raise ValueError(
                f"checkpoint {checkpoint} was trained with normalisation {key} {list(model_stats[key])}, but the "
                f"prepared file's is {list(data_stats[key])}: use the same prepared file and --scheme as in training"
            )


# ----------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="a training run's best.pt/latest.pt or an exported model")
    parser.add_argument("--data", required=True, type=Path, help="prepared file from `handwriting-hm prepare`")
    parser.add_argument("--split", default="test", help="split to score (default: %(default)s)")
    parser.add_argument("--scheme", default="paper", help="split scheme, as in training (default: %(default)s; a "
                        "synthesis checkpoint uses its own)")
    parser.add_argument("--batch-size", type=int, default=32, help="lines per forward pass (default: %(default)s)")
    parser.add_argument("--max-lines", type=int, default=None, help="score only the first N lines of the split")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")


def run(args: argparse.Namespace) -> int:
    from data_prep.dataset import HandwritingDataset  # CLI glue: the model code never imports data_prep

    if args.batch_size < 1 or (args.max_lines is not None and args.max_lines < 1):
        raise ValueError("--batch-size and --max-lines must be at least 1")
    device = resolve_device(args.device)
    if load_checkpoint(args.checkpoint)["kind"] == SYNTHESIS_KIND:
        return run_synthesis(args, device)
    loaded = load_handwriting_model(args.checkpoint)
    if isinstance(loaded.model.core, HMLSTM):
        loaded.model.core.impl = "auto"  # the fastest core path here: the same numbers up to rounding
    dataset = HandwritingDataset(args.data, split=args.split, scheme=args.scheme)
    check_same_statistics(loaded.stats, dataset.stats, args.checkpoint)
    count = len(dataset) if args.max_lines is None else min(args.max_lines, len(dataset))
    lines = [dataset[i][0] for i in range(count)]
    result = evaluate_lines(loaded.model.to(device), lines, loaded.slope, args.batch_size, device,
                            names=dataset.line_ids[:count], progress=True)
    print(f"{args.checkpoint} on {args.scheme}/{args.split} (slope {loaded.slope:.3f})")
    print(result.format())
    if args.json is not None:
        write_json(args.json, {"checkpoint": str(args.checkpoint), "data": str(args.data), "scheme": args.scheme,
                               "split": args.split, "slope": loaded.slope, **asdict(result)})
    return 0


def run_synthesis(args: argparse.Namespace, device: torch.device) -> int:
    """A synthesis checkpoint: the same metric with each line given its text, on the checkpoint's own scheme."""
    from handwriting_hm.synthesis.evaluate import evaluate_synthesis  # reads the prepared file through data_prep

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
