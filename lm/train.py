"""`hm-lm train`: the paper's character-level language models (§4.1) on the shared Trainer.

Presets (paper Table 1/2 settings; all: truncated BPTT over 100 steps with the last state
carried into the next batch, Adam, gradient-norm clip 1, layer normalisation, learning rate
divided by 50 when validation loss stops improving):

  ptb            HM-LSTM 3 x 512, output embedding 512, batch 64, lr 0.002, slope annealing
  ptb-no-anneal  the same with the slope fixed at 1
  ptb-lstm       LayerNorm LSTM baseline 3 x 512 with the same input and output modules
  text8, enwik8  HM-LSTM 3 x 1024, output embedding 2048, batch 128, lr 0.001, no annealing
  tiny           HM-LSTM 3 x 128, output embedding 128, batch 32: a CPU smoke run

Choices the paper leaves open, made here: "stops improving" is 1 validation without
improvement (plateau patience 1) and the learning rate never drops more than twice (min_lr =
lr / 2500); the epoch limits (100 on PTB, where the annealed slope reaches 5; 20 on text8 and
enwik8) are ours.

An epoch is one pass over the training stream: the stream is cut into `batch` rows and read in
consecutive windows of `bptt` steps (PTB at batch 64: 784 batches). At the start of each epoch
the carried state moves down one row (row r begins where row r-1 ended; see on_epoch_start),
and the slope a = min(5, 1 + 0.04 * epoch) is set (epoch counted from 0), so it is constant
within an epoch. The carried state and the slope are
the task's state: they are saved in every checkpoint, so a resume continues exactly.
A step whose loss is not finite is skipped by the Trainer; if the carried state itself became
non-finite it is reset to zeros so that one bad window does not poison the rest of the epoch.

Settings and flags work as for `handwriting-hm train` (`handwriting_hm/hmlstm/presets.py`): a flag
left out takes the preset's value; on --resume every setting is the run's own (max_epochs and
min_lr included, whatever --preset says), training flags override it and model and data flags
may only repeat it; --init-from CHECKPOINT starts a new run from another run's (or an exported
model's) weights, with that model's config and a fresh optimiser, on data of the same vocabulary.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from handwriting_hm.hmlstm.checkpoint import StoredConfig
from handwriting_hm.hmlstm.core import SLOPE_PRESETS, HMLSTMState
from handwriting_hm.hmlstm.detectors import logged_alignment
from handwriting_hm.hmlstm.recipes import DETECTOR_FLAGS, RECIPE_FLAGS, BoundaryRecipes, recipe_penalty
from handwriting_hm.hmlstm.output import SoftmaxHead
from handwriting_hm.hmlstm.presets import Flag, Preset, add_preset_arguments
from handwriting_hm.hmlstm.run_start import start_from_args
from handwriting_hm.hmlstm.trainer import LATEST, TrainConfig, Trainer, TrainingTask, distributed_from_env, seed_everything

from .batches import bptt_rows, bptt_windows
from .prepared_text import load_prepared_text
from .scoring import BoundaryRecorder, split_bpc
from .model import KIND, LanguageModel, LMConfig
from .segmentation import boundary_report, separators


BPTT = 100
PLATEAU_FACTOR = 1 / 50
PLATEAU_PATIENCE = 1
MAX_DROPS = 2  # min_lr = lr * PLATEAU_FACTOR ** MAX_DROPS


@dataclass
class TaskSettings(StoredConfig):
    """How the task cuts the data; saved in the checkpoint so that a resume uses the same."""

    batch_size: int
    bptt: int = BPTT
    slope_schedule: str = "ptb"  # a key of handwriting_hm.hmlstm.core.SLOPE_PRESETS
    train_symbols: int | None = None  # use only the first N training symbols (CPU slices)
    valid_symbols: int | None = None
    val_rows: int = 16
    # recipes for boundaries that learn (docs/boundaries.md); the defaults leave the paper's training as it is
    rate_targets: tuple[float, ...] = ()  # per detector, the firing rate the rate loss pulls towards
    rate_weight: float = 0.0  # weight of the firing-rate loss (hmlstm.detectors.rate_penalty)
    rate_steps: int | None = None  # the rate loss applies for this many steps only (None: always)
    bernoulli_steps: int = 0  # sampled boundaries (Eq. 9, Bernoulli) for this many steps, then the model's own
    oracle_steps: int = 0  # layer 1's boundaries forced to the word separators for this many steps, then free


def _preset(cell: str, hidden_size: int, embedding_size: int, batch_size: int, lr: float, slope_schedule: str,
            max_epochs: int) -> Preset:
    """One row of the paper's settings: the model, the batches and the optimiser's schedule."""
    return Preset(
        # vocab_size 0 stands for "the prepared file's": run() fills it in
        model=LMConfig(vocab_size=0, cell=cell, hidden_sizes=(hidden_size,) * 3, embedding_size=embedding_size),
        task=TaskSettings(batch_size=batch_size, slope_schedule=slope_schedule),
        train=TrainConfig(lr=lr, max_epochs=max_epochs, plateau_factor=PLATEAU_FACTOR,
                          plateau_patience=PLATEAU_PATIENCE, min_lr=lr * PLATEAU_FACTOR ** MAX_DROPS),
        description=f"{cell} 3 x {hidden_size}, output embedding {embedding_size}, batch {batch_size}, lr {lr}, "
                    f"slope schedule {slope_schedule}, {max_epochs} epochs",
    )


PRESETS: dict[str, Preset] = {
    "ptb": _preset("hm-lstm", 512, 512, 64, 0.002, "ptb", 100),
    "ptb-no-anneal": _preset("hm-lstm", 512, 512, 64, 0.002, "constant", 100),
    "ptb-lstm": _preset("lstm", 512, 512, 64, 0.002, "constant", 100),
    "text8": _preset("hm-lstm", 1024, 2048, 128, 0.001, "constant", 20),
    "enwik8": _preset("hm-lstm", 1024, 2048, 128, 0.001, "constant", 20),
    "tiny": _preset("hm-lstm", 128, 128, 32, 0.002, "ptb", 5),
}


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
                                       settings.bernoulli_steps)
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
        oracle = self.steps_done < self.settings.oracle_steps
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


# ----------------------------------------------------------------------------- command line

def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 512,512,512, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


FLAGS = (
    Flag("model", "cell", {"choices": ("hm-lstm", "lstm")}),
    Flag("model", "hidden_sizes", {"type": _sizes, "help": "units per layer, e.g. 512,512,512"}),
    Flag("model", "embedding_size", {"type": int, "help": "output embedding size"}),
    Flag("model", "boundary_mode", {"choices": ("step", "bernoulli", "soft")}),
    Flag("model", "layer_norm", {"action": argparse.BooleanOptionalAction}),
    Flag("task", "batch_size", {"type": int}),
    Flag("task", "bptt", {"type": int, "help": "steps per window"}),
    Flag("task", "slope_schedule", {"choices": tuple(SLOPE_PRESETS)}),
    Flag("task", "train_symbols", {"type": int, "help": "train on the first N symbols only (a slice, for CPU runs)"}),
    Flag("task", "valid_symbols", {"type": int, "help": "validate on the first N symbols only"}),
    Flag("task", "val_rows", {"type": int, "help": "rows read side by side in validation"}),
    *DETECTOR_FLAGS,
    *RECIPE_FLAGS,
    Flag("task", "oracle_steps", {"type": int, "help": "force layer 1's boundaries to the word separators for this "
                                                       "many steps (the oracle run)"}),
)
DEFAULT_PRESET = "ptb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared .npz from `hm-lm prepare`")
    parser.add_argument("--run-dir", required=True, help="folder for checkpoints, log.jsonl and curves.png")
    add_preset_arguments(parser, PRESETS, DEFAULT_PRESET, FLAGS)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    data = load_prepared_text(args.data)
    start = start_from_args(args, PRESETS, DEFAULT_PRESET, FLAGS, KIND, build=LanguageModel)
    config, settings, train_config = start.settings.model, start.settings.task, start.settings.train
    if not args.resume and hasattr(args, "lr") and not hasattr(args, "min_lr"):
        # the presets' rule for a new run: the rate drops at most MAX_DROPS times from where it starts
        train_config = dataclasses.replace(train_config, min_lr=train_config.lr * PLATEAU_FACTOR ** MAX_DROPS)
    if start.checkpoint is None:
        config = dataclasses.replace(config, vocab_size=len(data.vocab))
    elif start.checkpoint["metadata"]["vocab"] != data.vocab:
        source = run_dir / LATEST if args.resume else args.init_from
        raise ValueError(f"{args.data}: its vocabulary differs from the one {source} was trained on")
    task = LanguageModelTask(data.splits["train"], data.splits["valid"], settings, vocab=data.vocab)
    seed_everything(train_config.seed)
    model = LanguageModel(config, impl=args.impl)
    trainer = Trainer(model, task, train_config, run_dir, kind=KIND, model_config=config.to_dict(),
                      metadata={"dataset": data.metadata["dataset"], "vocab": data.vocab,
                                "task": settings.to_dict(), "preset": start.preset,
                                "data_sha256": data.metadata["sources_sha256"]})
    summary = trainer.fit(resume=args.resume, init_from=args.init_from)
    if summary["stopped"] == "interrupted":
        print(f"hm-lm: interrupted at step {summary['steps']}; saved {run_dir / LATEST}: continue with --resume",
              file=sys.stderr)
        return 130
    print(f"stopped ({summary['stopped']}) after {summary['steps']} steps, {summary['epochs']} epochs, "
          f"{summary['wall_s']:.0f} s; best val_loss {summary['best_metric']:.4f} nats "
          f"({summary['best_metric'] / np.log(2.0):.4f} BPC) at step {summary['best_step']}; run folder {run_dir}")
    return 0
