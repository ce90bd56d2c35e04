"""Training the unconditional model: how batches are made and validated, the loss, the sample pictures.

`HandwritingTask` is the shared Trainer's task (`hmlstm/trainer.py`): batches of (cropped) lines, or
whole lines in chunks with the state carried; the masked mean negative log-likelihood per point;
validation with the paper's metric; sample pictures. `handwriting-hm train` (train.py) builds it
from a prepared file and a preset. The presets, TaskSettings and the slope schedule are config.py's
(no torch there, for the parser); they are importable from here too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import torch

from ..drawing.png import render_grid_png
from ..hmlstm.core import HMLSTMState
from ..hmlstm.detectors import logged_alignment
from ..hmlstm.recipes import recipe_penalty
from ..hmlstm.trainer import TrainingTask, distributed_from_env, shard_batches, share_lines
from ..mixture import MixtureParams, mixture_log_likelihood
from ..normalisation import raw_offsets
from ..scoring import check_finite, summarise
from .evaluate import sequence_log_likelihoods
from .generate import generate
from .config import PRESETS, TaskSettings  # re-exported: clients import them here
from .model import pen_ups_read, shift_inputs

__all__ = ["PRESETS", "HandwritingTask", "LineChunk", "TaskSettings", "detector_metrics"]


class LineChunk(NamedTuple):
    """Consecutive points of a batch of whole lines (TaskSettings.chunk_points)."""

    offsets: torch.Tensor  # (B, T, 3), zeros past each line's end
    mask: torch.Tensor  # (B, T) True on real points
    previous: torch.Tensor | None  # (B, 3) the point before offsets[:, 0]; None at the lines' start


class HandwritingTask(TrainingTask):
    """Batches of (cropped) lines, the masked per-point NLL, validation and sample pictures."""

    def __init__(self, settings: TaskSettings, train_set, validation_lines: list[torch.Tensor],
                 stats: dict, seed: int, validation_ids: list[str] | None = None,
                 validation_word_starts: list[np.ndarray] | None = None) -> None:
        """validation_ids: the lines' names in the prepared file, for messages (default: their positions);
        validation_word_starts: per line, the pen-ups after which a word begins (scoring.word_starts), for
        the detectors' figures against them."""
        self.settings = settings
        self.train_set = train_set
        self.validation_lines = validation_lines
        self.validation_ids = validation_ids or [f"#{i}" for i in range(len(validation_lines))]
        self.validation_word_starts = validation_word_starts
        self.stats = stats
        self.seed = seed
        self.step = 0  # counts start_step() calls, which is the trainer's step count (skipped steps included)
        self.slope = settings.slope(0)
        self._slope_input: torch.Tensor | None = None  # the slope as loss() reads it off the CPU (core.Slope)
        # the training NLL and its sequences, summed on the device since the last scalars() call, for the
        # log: in place, because a replayed CUDA graph adds to these very tensors
        self._sequence_nll: torch.Tensor | None = None
        self._sequences: torch.Tensor | None = None
        self.state: HMLSTMState | None = None  # carried from chunk to chunk (chunk_points)

    def batches(self, epoch: int) -> Iterator:
        from data_prep.dataset import BucketBatchSampler, collate_strokes

        sampler = BucketBatchSampler(self.train_set.lengths, self.settings.batch_size, shuffle=True, seed=self.seed)
        sampler.set_epoch(epoch)
        crop = self.settings.crop_points
        lengths = self.train_set.lengths
        # Window starts come from their own stream, seeded by the epoch, so batches(epoch) is repeatable.
        room = np.maximum(lengths - (crop or 0) + 1, 1)
        starts = (np.random.default_rng((self.seed, epoch, 1)).random(len(lengths)) * room).astype(np.int64)

        def item(index: int):
            offsets, text = self.train_set[index]
            return (offsets, text) if crop is None else (offsets[starts[index]:starts[index] + crop], text)

        where = distributed_from_env()
        if self.settings.chunk_points is not None:
            return self._chunked(sampler, where.rank, where.world_size)
        every = (collate_strokes([item(i) for i in indices]) for indices in sampler)
        return shard_batches(every, where.rank, where.world_size)

    def _chunked(self, sampler, rank: int, world_size: int) -> Iterator[LineChunk]:
        # every process goes as far as the batch's longest line, so all take the same number of steps
        from data_prep.dataset import collate_strokes

        chunk = self.settings.chunk_points
        for mine, indices in share_lines(sampler, rank, world_size):
            batch = collate_strokes([self.train_set[i] for i in mine])
            longest = int(max(self.train_set.lengths[i] for i in indices))
            offsets = torch.nn.functional.pad(batch.offsets, (0, 0, 0, longest - batch.offsets.shape[1]))
            mask = torch.nn.functional.pad(batch.mask, (0, longest - batch.mask.shape[1]))
            for start in range(0, longest, chunk):
                yield LineChunk(offsets[:, start:start + chunk], mask[:, start:start + chunk],
                                None if start == 0 else offsets[:, start - 1])

    def on_epoch_start(self, epoch: int) -> None:
        self.state = None

    def start_step(self, device: torch.device) -> None:
        self.slope = self.settings.slope(self.step)
        self.step += 1
        if device.type != "cpu":  # a tensor, which a CUDA graph's replay reads afresh; on the CPU the number
            if self._slope_input is None or self._slope_input.device != device:
                self._slope_input = torch.empty((), device=device)
            self._slope_input.fill_(self.slope)
        self._accumulators(device)

    def graph_safe(self, batch) -> bool:
        # chunks carry their state in Python, from step to step; the recipes' and the oracle's schedules change
        # with the step
        return not isinstance(batch, LineChunk) and not self.settings.recipes.any and not self.settings.oracle_steps

    def loss(self, model: torch.nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        device = batch.offsets.device
        slope = self._slope_input if self._slope_input is not None and self._slope_input.device == device \
            else self.slope
        # No lengths for the core: padding sits after each line's end, so it never changes a valid
        # step, and the masked loss ignores what the core does there (saves the per-step masking).
        chunked = isinstance(batch, LineChunk)
        previous = batch.previous if chunked else None
        # a later chunk of the lines goes on from the carried state
        state = None if previous is None or self.state is None else self.state.to(previous.device)
        recipes, step = self.settings.recipes, max(self.step - 1, 0)  # start_step has counted this step
        rate_loss = recipes.rate_loss_on(step)
        inputs = shift_inputs(batch.offsets, previous)
        forced_z1 = pen_ups_read(inputs) if step < self.settings.oracle_steps else None
        output = model(inputs, state=state, slope=slope, boundary_mode=recipes.boundary_mode(step),
                       forced_z1=forced_z1, preactivations=rate_loss)
        if chunked:
            carried = output.core.state.carried()
            self.state = carried if carried.is_finite() else None
        with torch.autocast(device_type=device.type, enabled=False):  # the density in float32
            params = MixtureParams(*(p.float() for p in output.params))
            per_point = mixture_log_likelihood(params, batch.offsets).masked_fill(~batch.mask, 0.0)
        points = batch.mask.sum()
        per_sequence = -per_point.sum(dim=1).detach()
        finite = torch.isfinite(per_sequence).all()  # a non-finite batch is left out of the logged NLL
        sequence_nll, sequences = self._accumulators(device)
        sequence_nll.add_(torch.where(finite, per_sequence.sum(), 0.0))
        sequences.add_(finite.to(sequences.dtype) * len(per_sequence))
        # a process whose lines all ended before this chunk (DDP) has no point: its loss is 0
        loss = -per_point.sum() / points.clamp(min=1)
        if rate_loss:
            unwrapped = getattr(model, "module", model)
            given = int(unwrapped.config.pen_up_clock)  # a pen-up clock's z1 is not learned: no rate loss
            loss = loss + recipe_penalty(recipes, output.core, slope, unwrapped.core.z_on_copy,
                                         None if state is None else state.z, batch.mask, given)
        return loss, points

    def _accumulators(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._sequence_nll is None or self._sequence_nll.device != device:
            self._sequence_nll = torch.zeros((), dtype=torch.float64, device=device)
            self._sequences = torch.zeros((), dtype=torch.int64, device=device)
        return self._sequence_nll, self._sequences

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        # while the oracle forces z1 in training, validation forces it too: the model's own z1 has had no
        # gradient yet, and a free-running validation would make the plateau schedule cut the rate for nothing
        oracle = bool(self.metric_regime())
        totals, counts = sequence_log_likelihoods(model, self.validation_lines, self.slope, self.settings.batch_size,
                                                  device, oracle=oracle, word_starts=self.validation_word_starts)
        # One non-finite line would make every validation NaN: the plateau schedule would cut the
        # learning rate each time and best.pt never be written. Name the line and stop instead.
        check_finite(totals, self.validation_lines, self.validation_ids, kind="validation line",
                     weights_remedy="resume from an earlier best.pt")
        result = summarise(totals, sum(len(line) for line in self.validation_lines), counts)
        return {
            "val_loss": -result.nats_per_point,
            "val_ll_per_sequence": result.log_likelihood_per_sequence,
            "val_bits_per_point": result.bits_per_point,
            **{f"val_boundary_rate_{l + 1}": rate for l, rate in enumerate(result.boundary_rate)},
            **{f"val_on_pen_up_{l + 1}": share for l, share in enumerate(result.firings_on_pen_up) if share is not None},
            **detector_metrics(result),
            **({"val_oracle": 1.0} if oracle else {}),
        }

    def metric_regime(self) -> str:
        """While the oracle forces z1, validation forces it too: a measure the free model's is not compared with."""
        return "log-likelihood with z1 forced to the pen-ups" if self.step < self.settings.oracle_steps else ""

    def scalars(self) -> dict[str, float]:
        values = {"slope": self.slope}
        if self._sequences is not None and (sequences := int(self._sequences)):
            # per training sequence: a crop when crop_points is set, else a whole line
            values["train_nll_per_sequence"] = float(self._sequence_nll) / sequences
            self._sequence_nll.zero_()  # in place: a captured graph adds to these tensors
            self._sequences.zero_()
        return values

    def state_dict(self) -> dict:
        return {"step": self.step, "slope": self.slope, "carried": None if self.state is None else self.state.saved()}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.slope = int(state["step"]), float(state["slope"])
        carried = state.get("carried")
        self.state = None if carried is None else HMLSTMState.from_saved(carried)

    def write_samples(self, model: torch.nn.Module, path: Path) -> None:
        device = next(model.parameters()).device
        drawings, titles = [], []
        for bias in self.settings.sample_biases:
            generator = torch.Generator(device=device).manual_seed(self.seed)  # the same draw at every validation
            samples = generate(model, self.settings.sample_points, n_samples=2, bias=bias, slope=self.slope,
                               generator=generator)
            for offsets in samples.offsets.cpu().numpy():
                drawings.append(raw_offsets(offsets, self.stats))  # back to sensor units: the true aspect ratio
                titles.append(f"bias {bias:g}")  # short: a narrow drawing clips a long title; the file name has the step
        render_grid_png(drawings, titles=titles, path=path)


def detector_metrics(result) -> dict[str, float]:
    """The detectors' health and their alignment with the pen-ups (and with the words' starts, where known),
    under the keys the trainer's log and curves read (z1_rate, z1_window, layer2_copy, z1_precision,
    z2_word_precision, ...)."""
    metrics: dict[str, float] = {}
    for l, rate in enumerate(result.boundary_rate):
        metrics[f"z{l + 1}_rate"] = rate
    for l, share in enumerate(result.window_share or []):
        if share is not None:
            metrics[f"z{l + 1}_window"] = share
    for l, shares in enumerate(result.operation_shares or []):
        metrics.update({f"layer{l + 1}_{name}": share for name, share in shares.items()})
    metrics.update(logged_alignment({f"z{l + 1}": figures for l, figures in enumerate(result.pen_up_alignment or [])}))
    metrics.update(logged_alignment({f"z{l + 1}_word": figures
                                     for l, figures in enumerate(result.word_start_alignment or [])}))
    return metrics
