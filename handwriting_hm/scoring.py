"""Scoring lines with a handwriting model, shared by both models: the scoring loop, the boundary counts,
and the reported numbers. `unconditional.evaluate` and `synthesis.evaluate` each say how one batch of
lines is scored (the synthesis model's given their texts).

The metric, exactly:

    LL_i = sum over the points t = 1..T_i of line i of log p(x_t | x_<t)        (nats)
    reported = mean over the N lines of the split of LL_i                       (higher is better)

where x_t = (dx, dy, end_of_stroke), dx and dy normalised with the training split's mean and
std (the space the model works in; the density is NOT converted back to sensor units), and
log p is the mixture-density log-likelihood of Graves (2013) Eq. 23-26: the bivariate Gaussian
mixture for (dx, dy) plus the Bernoulli end-of-stroke term. The first point is scored too (the
model reads a zero vector before it). Every line is run whole from a zero state, in float32,
with the boundary slope stored in the checkpoint and step (deterministic) boundaries.

Also reported: nats per point = sum_i LL_i / sum_i T_i, bits per point = that / ln 2, and a 95%
confidence interval of the mean over lines, mean ± 1.96 · s / sqrt(N) with s the sample standard
deviation (ddof = 1) of the LL_i: the normal approximation, fair for N in the hundreds.

Boundaries: each detector's firing rate (the fraction of points where z^l = 1), and how many of its
firings fall on a pen-up, the paper's Figure 5: z^l fires at a pen-up when it fires while the model
reads a point whose end_of_stroke is 1 (step t reads point t-1). Against that, the chance rate:
the fraction of the points read that are pen-ups, which is what a detector that fires at random
points would score.

Where the firings fall against the pen-ups (hmlstm.detectors.event_alignment): a step's events are
the pen-ups it reads; a firing within +-k steps of one (k = `pen_up_window`, 2 by default) is a hit;
precision, recall of the pen-ups, F1, and lift over rate-matched chance and over a circular shift of
the firings, over every line of the split read one after another. With them, each detector's share
of the steps that compute z inside the straight-through window (|a s_z| < 1) and each layer's shares
of UPDATE, COPY and FLUSH (hmlstm.detectors.DetectorHealth).

Where the firings fall against the starts of words, when the lines' word counts are given: the
transcriptions say how many words a line has, not where they are, so the word starts are estimated
(`word_starts`): of a line of n words, the n - 1 pen-ups after which the pen comes down furthest to the
right of all the ink before it (a dot or a crossing goes back left, a new word goes on to the right).
The same figures as for the pen-ups, with those events.

A line whose log-likelihood is not finite (NaN or infinite offsets in the data, or a model gone
bad) would make every number NaN: evaluation names it and stops instead.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from .hmlstm.core import OPERATION_NAMES, Slope
from .hmlstm.detectors import DetectorHealth, alignment_line, event_alignment
from .normalisation import raw_offsets

PEN_UP_WINDOW = 2  # points either side of a pen-up within which a firing counts as at it

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
    # per detector, event_alignment against the pen-ups within +-pen_up_window points
    pen_up_alignment: list[dict[str, float]] | None = None
    pen_up_window: int = PEN_UP_WINDOW
    window_share: list[float | None] | None = None  # per detector: computing steps inside the straight-through window
    operation_shares: list[dict[str, float]] | None = None  # per layer: {"update": .., "copy": .., "flush": ..}
    # per detector, event_alignment against the estimated word starts (word_starts), if the word counts were given
    word_start_alignment: list[dict[str, float]] | None = None

    def format(self) -> str:
        rates = ", ".join(f"z{l + 1} {rate:.3f}" for l, rate in enumerate(self.boundary_rate))
        on_pen_up = ", ".join(f"z{l + 1} " + ("no firings" if share is None else f"{share:.1%}")
                              for l, share in enumerate(self.firings_on_pen_up))
        return (f"{self.lines} lines, {self.points} points\n"
                f"log-likelihood per sequence: {self.log_likelihood_per_sequence:.2f} nats "
                f"(95% CI {self.ci95_low:.2f} .. {self.ci95_high:.2f})\n"
                f"per point: {self.nats_per_point:.4f} nats, {self.bits_per_point:.4f} bits"
                + (f"\nboundary rate: {rates}\nfirings on a pen-up: {on_pen_up} (chance: {self.pen_up_rate:.1%} of "
                   f"the points are pen-ups)" if rates else "") + self._format_detectors())

    def _format_detectors(self) -> str:
        lines = []
        for l, figures in enumerate(self.pen_up_alignment or []):
            window = (self.window_share or [None] * (l + 1))[l]
            lines.append(alignment_line(f"z{l + 1}", figures, "points", f"within {self.pen_up_window} points of a pen-up")
                         + ("" if window is None else f"; {window:.0%} of its steps in the straight-through window"))
        for l, figures in enumerate(self.word_start_alignment or []):
            lines.append(alignment_line(f"z{l + 1}", figures, "points",
                                        f"within {self.pen_up_window} points of a word's start (estimated)"))
        if self.operation_shares:
            lines.append("operations: " + "; ".join(
                f"layer {l + 1} " + " ".join(f"{name} {share:.1%}" for name, share in shares.items())
                for l, shares in enumerate(self.operation_shares)))
        return "".join("\n" + line for line in lines)


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
    fired_steps: np.ndarray | None = None  # (N, L-1) bool: z at each step that reads a point, line after line
    pen_up_steps: np.ndarray | None = None  # (N,) bool: whether the point that step reads is a pen-up
    health: DetectorHealth | None = None  # operations and the straight-through window, over the valid steps
    word_start_steps: np.ndarray | None = None  # (N,) bool: whether the point that step reads begins a word's gap

    @classmethod
    def of_batch(cls, boundaries: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor,
                 preactivations: torch.Tensor | None = None, slope: Slope = 1.0,
                 z_on_copy: str = "keep", word_starts: torch.Tensor | None = None) -> BoundaryCounts:
        """The counts of one padded batch: boundaries (B, T, L-1), zeros at padding; offsets (B, T, 3); lengths (B,);
        preactivations (B, T, L-1), if known, for the straight-through window (at `slope`); word_starts (B, T)
        bool, if known: the pen-ups after which a word begins (`word_starts`)."""
        boundaries, offsets, lengths = boundaries.double().cpu(), offsets.double().cpu(), lengths.cpu()
        # step t reads point t-1: the steps of a line of T_i points read its points 0 .. T_i - 2
        read = torch.arange(offsets.shape[1] - 1)[None, :] < (lengths - 1)[:, None]
        pen_up_read = offsets[:, :-1, 2] * read
        fired = [boundaries[row, 1:length] > 0.5 for row, length in enumerate(lengths.tolist())]
        pen_ups = [offsets[row, :length - 1, 2] > 0.5 for row, length in enumerate(lengths.tolist())]
        health = DetectorHealth(boundaries.shape[2] + 1, z_on_copy)
        valid = torch.arange(boundaries.shape[1])[None, :] < lengths[:, None]
        health.add(boundaries, preactivations, slope, mask=valid)
        return cls(boundaries.sum(dim=(0, 1)).numpy(),
                   (boundaries[:, 1:] * pen_up_read[..., None]).sum(dim=(0, 1)).numpy(),
                   int(pen_up_read.sum()), int(read.sum()),
                   torch.cat(fired).numpy() if fired else np.zeros((0, boundaries.shape[2]), dtype=bool),
                   torch.cat(pen_ups).numpy() if pen_ups else np.zeros(0, dtype=bool), health,
                   None if word_starts is None else np.concatenate(
                       [word_starts[row, :length - 1].cpu().numpy().astype(bool)
                        for row, length in enumerate(lengths.tolist())] or [np.zeros(0, dtype=bool)]))

    def plus(self, other: BoundaryCounts) -> BoundaryCounts:
        """The counts of both."""
        def joined(mine, theirs):
            return theirs if mine is None else mine if theirs is None else np.concatenate([mine, theirs])

        health = self.health if other.health is None else other.health if self.health is None else self.health.plus(
            other.health)
        return BoundaryCounts(self.fired + other.fired, self.fired_on_pen_up + other.fired_on_pen_up,
                              self.pen_ups + other.pen_ups, self.points_read + other.points_read,
                              joined(self.fired_steps, other.fired_steps), joined(self.pen_up_steps, other.pen_up_steps),
                              health, joined(self.word_start_steps, other.word_start_steps))


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


def summarise(totals: np.ndarray, points: int, counts: BoundaryCounts, pen_up_window: int = PEN_UP_WINDOW) -> Evaluation:
    """Turn per-line log-likelihoods and boundary counts into the reported numbers."""
    low, high = confidence_interval(totals)
    nats_per_point = float(totals.sum()) / points
    alignment = window_share = operation_shares = word_alignment = None
    if counts.fired_steps is not None and counts.fired_steps.shape[1]:
        alignment = [event_alignment(counts.fired_steps[:, l], counts.pen_up_steps, pen_up_window, pen_up_window)
                     for l in range(counts.fired_steps.shape[1])]
        if counts.word_start_steps is not None:
            word_alignment = [event_alignment(counts.fired_steps[:, l], counts.word_start_steps, pen_up_window,
                                              pen_up_window) for l in range(counts.fired_steps.shape[1])]
    if counts.health is not None and counts.health.num_layers > 1:
        summary = counts.health.summary()
        window_share = [summary.get(f"z{l + 1}_window") for l in range(counts.health.num_layers - 1)]
        operation_shares = [{name.lower(): summary[f"layer{l + 1}_{name.lower()}"] for name in OPERATION_NAMES}
                            for l in range(counts.health.num_layers)]
    return Evaluation(
        lines=len(totals), points=points,
        log_likelihood_per_sequence=float(totals.mean()), ci95_low=low, ci95_high=high,
        nats_per_point=nats_per_point, bits_per_point=nats_per_point / math.log(2.0),
        boundary_rate=[float(count) / points for count in counts.fired],
        firings_on_pen_up=[float(on) / float(count) if count else None
                           for on, count in zip(counts.fired_on_pen_up, counts.fired)],
        pen_up_rate=counts.pen_ups / max(counts.points_read, 1),
        pen_up_alignment=alignment, pen_up_window=pen_up_window, window_share=window_share,
        operation_shares=operation_shares, word_start_alignment=word_alignment,
    )


def word_starts(offsets: np.ndarray, words: int) -> np.ndarray:
    """(T,) bool: the pen-ups after which a new word begins, estimated for a line of `words` words (see the
    module docstring): the words - 1 pen-ups whose next stroke starts furthest to the right of all the ink
    before it, of those that start to its right at all. offsets (T, 3): dx, dy in sensor units (or any scaling
    of them without a shift), end_of_stroke."""
    offsets = np.asarray(offsets, dtype=np.float64)
    starts = np.zeros(len(offsets), dtype=bool)
    pen_ups = np.flatnonzero(offsets[:-1, 2] > 0.5)  # pen-ups a stroke follows
    if words < 2 or not len(pen_ups):
        return starts
    x = np.cumsum(offsets[:, 0])
    gaps = x[pen_ups + 1] - np.maximum.accumulate(x)[pen_ups]  # how far right of the ink so far the pen comes down
    widest = np.argsort(-gaps, kind="stable")[:words - 1]
    starts[pen_ups[widest[gaps[widest] > 0]]] = True
    return starts


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


def line_word_starts(line: torch.Tensor | np.ndarray, text: str, stats: dict) -> np.ndarray:
    """`word_starts` of a line of normalised offsets (the model's, undone with `stats`) whose transcription
    is `text` (its words counted by whitespace)."""
    line = line.numpy() if isinstance(line, torch.Tensor) else np.asarray(line)
    return word_starts(raw_offsets(line, stats), len(text.split()))
