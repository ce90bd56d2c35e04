"""The language model's training task on the shared Trainer: truncated BPTT over a character stream.

An epoch is one pass over the training stream: the stream is cut into `batch` rows and read in
consecutive windows of `bptt` steps (PTB at batch 64: 784 batches). At the start of each epoch
the carried state moves down one row (row r begins where row r-1 ended; see on_epoch_start),
and the slope a = min(5, 1 + 0.04 * epoch) is set (epoch counted from 0), so it is constant
within an epoch. The carried state and the slope are
the task's state: they are saved in every checkpoint, so a resume continues exactly.
A step whose loss is not finite is skipped by the Trainer; if the carried state itself became
non-finite it is reset to zeros so that one bad window does not poison the rest of the epoch.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from handwriting_hm.hmlstm.core import SLOPE_PRESETS, HMLSTMState
from handwriting_hm.hmlstm.detectors import logged_alignment
from handwriting_hm.hmlstm.output import SoftmaxHead
from handwriting_hm.hmlstm.recipes import BoundaryRecipes, recipe_penalty
from handwriting_hm.hmlstm.trainer import TrainingTask, distributed_from_env

from .batches import bptt_rows, bptt_windows
from .config import TaskSettings
from .scoring import BoundaryRecorder, split_bpc
from .segmentation import boundary_report, separators


class LanguageModelTask(TrainingTask):
    """Truncated BPTT over a character stream, the final state of a batch starting the next."""

    def __init__(self, train_ids: np.ndarray, valid_ids: np.ndarray, settings: TaskSettings,
                 vocab: list[str] | None = None) -> None:
        """vocab: the symbols (index = id), for the boundary figures at validation and the oracle."""
        if settings.slope_schedule not in SLOPE_PRESETS:
            raise ValueError(f"unknown slope schedule {settings.slope_schedule!r}: choose one of {', '.join(SLOPE_PRESETS)}")
        if settings.batch_size < 1 or settings.bptt < 1 or settings.val_rows < 1:
            raise ValueError("batch size, bptt and val_rows must be >= 1")
        self.settings = settings
        self.schedule = SLOPE_PRESETS[settings.slope_schedule]
        self.inputs, self.targets = bptt_rows(train_ids[: settings.train_symbols], settings.batch_size)
        rank = distributed_from_env()
        if rank.world_size > 1:  # each rank reads its own rows (all ranks get the same number of windows)
            if settings.batch_size % rank.world_size:
                raise ValueError(f"batch size {settings.batch_size} does not divide among {rank.world_size} processes")
            self.inputs, self.targets = self.inputs[rank.rank::rank.world_size], self.targets[rank.rank::rank.world_size]
        self.valid_ids = valid_ids[: settings.valid_symbols]
        self.recipes = BoundaryRecipes(settings.rate_targets, settings.rate_weight, settings.rate_steps,
                                       settings.bernoulli_steps, settings.rate_estimate)
        if settings.oracle_steps < 0:
            raise ValueError(f"oracle_steps must be >= 0, got {settings.oracle_steps}")
        if settings.oracle_steps and vocab is None:
            raise ValueError("the oracle needs the vocabulary to find the word separators")
        self.vocab = vocab
        self.separator = None if vocab is None else torch.from_numpy(separators(np.arange(len(vocab)), vocab))
        self.slope = self.schedule(0)
        self.state: HMLSTMState | None = None
        self.steps_done = 0  # training steps begun: the recipes' schedules read it

    def batches(self, epoch: int):
        return bptt_windows(self.inputs, self.targets, self.settings.bptt)

    def on_epoch_start(self, epoch: int) -> None:
        self.slope = self.schedule(epoch)
        # Row r starts where row r-1 ended in the stream, so the state row r-1 ended the last
        # epoch with is the right context for row r (row 0 takes the last row's: the stream
        # wrapped round). Starting every row from zeros instead made the first window's
        # gradient explode (norms past 1e24 on the tiny CPU model) and the step be skipped.
        # Under DDP a row's predecessor lives on another process: start from zeros there.
        if self.state is not None and distributed_from_env().world_size == 1:
            self.state = HMLSTMState(*(tuple(t.roll(1, dims=0) for t in part) for part in self.state[:2]),
                                     self.state.z.roll(1, dims=0))
        else:
            self.state = None

    def start_step(self, device: torch.device) -> None:
        self.steps_done += 1

    def _separators_read(self, ids: Tensor) -> Tensor:
        """(B, T) float: 1 where the symbol read is a word separator (the oracle's z1)."""
        return self.separator.to(ids.device)[ids].float()

    def loss(self, model: torch.nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, int]:
        inputs, targets = batch
        settings, step = self.settings, max(self.steps_done - 1, 0)  # start_step has counted this step
        state = self.state
        if state is not None and state.z.device != inputs.device:  # restored from a checkpoint on the CPU
            state = state.to(inputs.device)
        options = {"boundary_mode": self.recipes.boundary_mode(step)}
        if step < settings.oracle_steps:
            options["forced_z1"] = self._separators_read(inputs)
        rate_loss = self.recipes.rate_loss_on(step)
        output = model(inputs, state=state, slope=self.slope, preactivations=rate_loss, **options)
        loss = -SoftmaxHead.log_likelihood(output.logits.float(), targets).mean()
        if rate_loss:
            loss = loss + recipe_penalty(self.recipes, output.core, self.slope,
                                         getattr(_core_of(model), "z_on_copy", "keep"), None if state is None else state.z)
        carried = output.core.state.carried()
        self.state = carried if carried.is_finite() else None
        return loss, targets.numel()

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """BPC; for an HM-LSTM also the detectors' health and where they fire against the words."""
        core = model.core
        recorder = BoundaryRecorder(core.num_layers, self.slope, getattr(core, "z_on_copy", "keep")) \
            if core.num_detectors else None
        rows, bptt = self.settings.val_rows, self.settings.bptt
        # while the oracle forces z1 in training, validation forces it too: the model's own z1 has had no
        # gradient yet, and a free-running validation would make the plateau schedule cut the rate for nothing
        oracle = bool(self.metric_regime())
        forced_z1_of = self._separators_read if oracle else None
        bpc, _ = split_bpc(model, self.valid_ids, rows=rows, bptt=bptt, slope=self.slope, on_output=recorder,
                           forced_z1_of=forced_z1_of)
        metrics = {"val_loss": bpc * np.log(2.0), "val_bpc": bpc, **({"val_oracle": 1.0} if oracle else {})}
        if recorder is None:
            return metrics
        metrics.update(recorder.health.summary())
        if self.vocab is not None:
            boundaries, read = recorder.stream()
            metrics.update(logged_alignment(boundary_report(boundaries, read, self.vocab)))
        return metrics

    def metric_regime(self) -> str:
        """While the oracle forces z1, validation forces it too: a measure the free model's is not compared with."""
        return "BPC with z1 forced to the word separators" if self.steps_done < self.settings.oracle_steps else ""

    def scalars(self) -> dict[str, float]:
        return {"slope": self.slope}

    def state_dict(self) -> dict:
        return {"slope": self.slope, "carried": None if self.state is None else self.state.saved(),
                "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        self.slope = float(state["slope"])
        self.steps_done = int(state.get("steps_done", 0))
        carried = state.get("carried")
        self.state = None if carried is None else HMLSTMState.from_saved(carried)


def _core_of(model: torch.nn.Module):
    """The recurrent core of a LanguageModel, under a DDP wrapper or not."""
    return getattr(model, "module", model).core
