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
(`synthesis_train.evaluate_synthesis`), on the split scheme it was trained on.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from handwriting_hm.hmlstm.core import HMLSTM
from handwriting_hm.model import HandwritingModel, load_handwriting_model
from handwriting_hm.hmlstm.atomic import atomic_write
from handwriting_hm.hmlstm.checkpoint import load_checkpoint
from handwriting_hm.synthesis import KIND as SYNTHESIS_KIND
from handwriting_hm.hmlstm.device import resolve_device

Z_95 = 1.959963984540054  # two-sided 95% quantile of the standard normal


@dataclass
class Evaluation:
    """The metric and its companions for one split (see the module docstring)."""

    lines: int
    points: int
    log_likelihood_per_sequence: float  # the paper's number, nats
    ci95_low: float
    ci95_high: float
    nats_per_point: float  # log-likelihood (higher is better)
    bits_per_point: float
    boundary_rate: list[float]  # fraction of points where each detector layer fired (z = 1)
    # per detector, the fraction of its firings made while reading a pen-up (None: it never fired)
    firings_on_pen_up: list[float | None]
    pen_up_rate: float  # the fraction of the points read that are pen-ups: the chance rate of the above

    def format(self) -> str:
        rates = ", ".join(f"z{l + 1} {rate:.3f}" for l, rate in enumerate(self.boundary_rate))
        on_pen_up = ", ".join(f"z{l + 1} " + ("no firings" if share is None else f"{share:.1%}")
                              for l, share in enumerate(self.firings_on_pen_up))
        return (f"{self.lines} lines, {self.points} points\n"
                f"log-likelihood per sequence: {self.log_likelihood_per_sequence:.2f} nats "
                f"(95% CI {self.ci95_low:.2f} .. {self.ci95_high:.2f})\n"
                f"per point: {self.nats_per_point:.4f} nats, {self.bits_per_point:.4f} bits"
                + (f"\nboundary rate: {rates}\nfirings on a pen-up: {on_pen_up} (chance: {self.pen_up_rate:.1%} of "
                   f"the points are pen-ups)" if rates else ""))


def confidence_interval(values: np.ndarray) -> tuple[float, float]:
    """95% normal-approximation interval of the mean of `values` (a single value: zero width)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, mean
    half_width = Z_95 * float(np.std(values, ddof=1)) / math.sqrt(len(values))
    return mean - half_width, mean + half_width


class BoundaryCounts(NamedTuple):
    """Boundary firings summed over lines: the numerators and denominators of Evaluation's rates."""

    fired: np.ndarray  # (L-1,) firings of each detector
    fired_on_pen_up: np.ndarray  # (L-1,) of those, the ones made while reading a pen-up
    pen_ups: int  # pen-up points read
    points_read: int  # points read (every point of a line but its last, which no step reads)

    @classmethod
    def of_batch(cls, boundaries: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor) -> BoundaryCounts:
        """The counts of one padded batch: boundaries (B, T, L-1), zeros at padding; offsets (B, T, 3); lengths (B,)."""
        boundaries, offsets, lengths = boundaries.double().cpu(), offsets.double().cpu(), lengths.cpu()
        # step t reads point t-1: the steps of a line of T_i points read its points 0 .. T_i - 2
        read = torch.arange(offsets.shape[1] - 1)[None, :] < (lengths - 1)[:, None]
        pen_up_read = offsets[:, :-1, 2] * read
        return cls(boundaries.sum(dim=(0, 1)).numpy(),
                   (boundaries[:, 1:] * pen_up_read[..., None]).sum(dim=(0, 1)).numpy(),
                   int(pen_up_read.sum()), int(read.sum()))

    def plus(self, other: BoundaryCounts) -> BoundaryCounts:
        """The counts of both."""
        return BoundaryCounts(self.fired + other.fired, self.fired_on_pen_up + other.fired_on_pen_up,
                              self.pen_ups + other.pen_ups, self.points_read + other.points_read)


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


def score_in_batches(model: torch.nn.Module, batches: Sequence[Sequence[int]], count: int,
                     score: Callable[[Sequence[int]], tuple[torch.Tensor, BoundaryCounts]],
                     progress: bool = False) -> tuple[np.ndarray, BoundaryCounts]:
    """The scoring loop of every model here: `score` each batch of line indices (their log-likelihoods in the
    batch's order, and its boundary counts) with the model in eval mode and a bar of lines scored on stderr.
    Returns the (count,) float64 log-likelihoods in line order and the counts summed over the batches."""
    was_training = model.training
    model.eval()
    totals = np.zeros(count, dtype=np.float64)
    counts = None
    bar = tqdm(total=count, unit="line", desc="scoring", disable=not progress, dynamic_ncols=True)
    try:
        for chosen in batches:
            log_likelihood, batch_counts = score(chosen)
            totals[np.asarray(chosen)] = log_likelihood.double().cpu().numpy()
            counts = batch_counts if counts is None else counts.plus(batch_counts)
            bar.update(len(chosen))
    finally:
        bar.close()
        model.train(was_training)
    return totals, counts


def summarise(totals: np.ndarray, points: int, counts: BoundaryCounts) -> Evaluation:
    """Turn per-line log-likelihoods and boundary counts into the reported numbers."""
    low, high = confidence_interval(totals)
    nats_per_point = float(totals.sum()) / points
    return Evaluation(
        lines=len(totals), points=points,
        log_likelihood_per_sequence=float(totals.mean()), ci95_low=low, ci95_high=high,
        nats_per_point=nats_per_point, bits_per_point=nats_per_point / math.log(2.0),
        boundary_rate=[float(count) / points for count in counts.fired],
        firings_on_pen_up=[float(on) / float(count) if count else None
                           for on, count in zip(counts.fired_on_pen_up, counts.fired)],
        pen_up_rate=counts.pen_ups / max(counts.points_read, 1),
    )


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


def check_finite(totals: np.ndarray, lines: Sequence[torch.Tensor], names: Sequence[str] | None = None,
                 kind: str = "line", weights_remedy: str | None = None) -> None:
    """Raise ValueError, naming the first line whose log-likelihood is NaN or infinite and why (`kind`
    names what the lines are; `weights_remedy` is said when the weights, not the data, are at fault)."""
    bad = np.flatnonzero(~np.isfinite(totals))
    if not len(bad):
        return
    first = int(bad[0])
    name = names[first] if names is not None else f"number {first}"
    values = lines[first]
    broken = np.flatnonzero(~torch.isfinite(values).all(dim=-1).cpu().numpy())
    cause = (f"its offsets hold NaN or infinite values (point {int(broken[0])}): prepare the data again"
             if len(broken) else "its offsets are finite, so the model's weights are bad"
             + (f": {weights_remedy}" if weights_remedy else ""))
    more = f" (and {len(bad) - 1} more lines)" if len(bad) > 1 else ""
    raise ValueError(f"{kind} {name}{more} has log-likelihood {totals[first]}; {cause}")


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
    from handwriting_hm.synthesis_train import evaluate_synthesis  # reads the prepared file through data_prep

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
