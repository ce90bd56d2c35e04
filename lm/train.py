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
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from handwriting_hm.hmlstm.checkpoint import load_checkpoint
from handwriting_hm.hmlstm.core import IMPLEMENTATIONS, SLOPE_PRESETS, HMLSTMState
from handwriting_hm.hmlstm.output import SoftmaxHead
from handwriting_hm.hmlstm.trainer import (
    TrainConfig,
    Trainer,
    TrainingTask,
    add_train_arguments,
    distributed_from_env,
    seed_everything,
    train_config_from_args,
)

from .batches import bptt_rows, bptt_windows
from .prepared_text import load_prepared_text as load_prepared
from .evaluate import split_bpc
from .model import KIND, LanguageModel, LMConfig, carry


@dataclass(frozen=True)
class Preset:
    """One row of the paper's settings: the model, the batches and the optimiser's schedule."""

    cell: str
    hidden_sizes: tuple[int, ...]
    embedding_size: int
    batch_size: int
    lr: float
    slope_schedule: str  # a key of handwriting_hm.hmlstm.core.SLOPE_PRESETS
    max_epochs: int


PRESETS: dict[str, Preset] = {
    "ptb": Preset("hm-lstm", (512, 512, 512), 512, 64, 0.002, "ptb", 100),
    "ptb-no-anneal": Preset("hm-lstm", (512, 512, 512), 512, 64, 0.002, "constant", 100),
    "ptb-lstm": Preset("lstm", (512, 512, 512), 512, 64, 0.002, "constant", 100),
    "text8": Preset("hm-lstm", (1024, 1024, 1024), 2048, 128, 0.001, "constant", 20),
    "enwik8": Preset("hm-lstm", (1024, 1024, 1024), 2048, 128, 0.001, "constant", 20),
    "tiny": Preset("hm-lstm", (128, 128, 128), 128, 32, 0.002, "ptb", 5),
}
BPTT = 100
PLATEAU_FACTOR = 1 / 50
PLATEAU_PATIENCE = 1
MAX_DROPS = 2  # min_lr = lr * PLATEAU_FACTOR ** MAX_DROPS

# TrainConfig fields whose defaults come from the preset rather than TrainConfig.
_PRESET_FLAGS = ("lr", "max_epochs", "plateau_factor", "plateau_patience", "min_lr")


@dataclass
class TaskSettings:
    """How the task cuts the data; saved in the checkpoint so that a resume uses the same."""

    batch_size: int
    bptt: int = BPTT
    slope_schedule: str = "ptb"
    train_symbols: int | None = None  # use only the first N training symbols (CPU slices)
    valid_symbols: int | None = None
    val_rows: int = 16


class LanguageModelTask(TrainingTask):
    """Truncated BPTT over a character stream, the final state of a batch starting the next."""

    def __init__(self, train_ids: np.ndarray, valid_ids: np.ndarray, settings: TaskSettings) -> None:
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
        self.slope = self.schedule(0)
        self.state: HMLSTMState | None = None

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

    def loss(self, model: torch.nn.Module, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, int]:
        inputs, targets = batch
        state = self.state
        if state is not None and state.z.device != inputs.device:  # restored from a checkpoint on the CPU
            state = HMLSTMState(*(tuple(t.to(inputs.device) for t in part) for part in state[:2]),
                                state.z.to(inputs.device))
        output = model(inputs, state=state, slope=self.slope)
        loss = -SoftmaxHead.log_likelihood(output.logits.float(), targets).mean()
        carried = carry(output.core.state)
        finite = all(bool(torch.isfinite(t).all()) for t in (*carried.h, *carried.c))
        self.state = carried if finite else None
        return loss, targets.numel()

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        bpc, _ = split_bpc(model, self.valid_ids, rows=self.settings.val_rows, bptt=self.settings.bptt,
                           slope=self.slope)
        return {"val_loss": bpc * np.log(2.0), "val_bpc": bpc}

    def scalars(self) -> dict[str, float]:
        return {"slope": self.slope}

    def state_dict(self) -> dict:
        carried = None
        if self.state is not None:
            carried = {"h": [h.cpu() for h in self.state.h], "c": [c.cpu() for c in self.state.c], "z": self.state.z.cpu()}
        return {"slope": self.slope, "carried": carried}

    def load_state_dict(self, state: dict) -> None:
        self.slope = float(state["slope"])
        carried = state.get("carried")
        self.state = None if carried is None else HMLSTMState(tuple(carried["h"]), tuple(carried["c"]), carried["z"])


# ----------------------------------------------------------------------------- command line

def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 512,512,512, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared .npz from `hm-lm prepare`")
    parser.add_argument("--run-dir", required=True, help="folder for checkpoints, log.jsonl and curves.png")
    parser.add_argument("--preset", choices=PRESETS, default="ptb", help="the paper's settings (default: ptb)")
    model = parser.add_argument_group("model and data (default: from the preset)")
    model.add_argument("--cell", choices=("hm-lstm", "lstm"))
    model.add_argument("--hidden-sizes", type=_sizes, help="units per layer, e.g. 512,512,512")
    model.add_argument("--embedding-size", type=int, help="output embedding size")
    model.add_argument("--boundary-mode", choices=("step", "bernoulli", "soft"), default="step")
    model.add_argument("--no-layer-norm", action="store_true")
    model.add_argument("--batch-size", type=int)
    model.add_argument("--bptt", type=int, default=BPTT, help=f"steps per window (default: {BPTT})")
    model.add_argument("--slope-schedule", choices=tuple(SLOPE_PRESETS))
    model.add_argument("--train-symbols", type=int, help="train on the first N symbols only (a slice, for CPU runs)")
    model.add_argument("--valid-symbols", type=int, help="validate on the first N symbols only")
    model.add_argument("--val-rows", type=int, default=16, help="rows read side by side in validation (default: 16)")
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, default="reference",
                        help="how the HM-LSTM core runs: the reference loop (default), the fused path with its hand-written backward, or auto (not yet measured on a GPU)")
    add_train_arguments(parser, TrainConfig(max_epochs=1))
    for action in parser._actions:  # these defaults depend on --preset: resolved in run()
        if action.dest in _PRESET_FLAGS:
            action.default = None
            action.help = re.sub(r"\(default: [^)]*\)", "(default: from the preset)", action.help or "")


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    data = load_prepared(args.data)
    preset = PRESETS[args.preset]
    if args.resume:  # the model and the batches must be exactly those of the run being resumed
        saved = load_checkpoint(run_dir / "latest.pt", kind=KIND)
        config = LMConfig.from_dict(saved["config"])
        settings = TaskSettings(**saved["metadata"]["task"])
        if saved["metadata"]["vocab"] != data.vocab:
            raise ValueError(f"{args.data}: its vocabulary differs from the one {run_dir} was trained on")
    else:
        config = LMConfig(
            vocab_size=len(data.vocab), cell=args.cell or preset.cell,
            hidden_sizes=args.hidden_sizes or preset.hidden_sizes,
            embedding_size=args.embedding_size or preset.embedding_size,
            layer_norm=not args.no_layer_norm, boundary_mode=args.boundary_mode)
        settings = TaskSettings(batch_size=args.batch_size or preset.batch_size, bptt=args.bptt,
                                slope_schedule=args.slope_schedule or preset.slope_schedule,
                                train_symbols=args.train_symbols, valid_symbols=args.valid_symbols,
                                val_rows=args.val_rows)
    lr = args.lr if args.lr is not None else preset.lr
    defaults = TrainConfig(lr=lr, max_epochs=preset.max_epochs, plateau_factor=PLATEAU_FACTOR,
                           plateau_patience=PLATEAU_PATIENCE, min_lr=lr * PLATEAU_FACTOR ** MAX_DROPS)
    train_config = train_config_from_args(args, defaults)
    task = LanguageModelTask(data.splits["train"], data.splits["valid"], settings)
    seed_everything(train_config.seed)
    model = LanguageModel(config, impl=args.impl)
    trainer = Trainer(model, task, train_config, run_dir, kind=KIND, model_config=config.to_dict(),
                      metadata={"dataset": data.metadata["dataset"], "vocab": data.vocab,
                                "task": vars(settings).copy(), "preset": args.preset,
                                "data_sha256": data.metadata["sources_sha256"]})
    summary = trainer.fit(resume=args.resume)
    print(f"stopped ({summary['stopped']}) after {summary['steps']} steps, {summary['epochs']} epochs, "
          f"{summary['wall_s']:.0f} s; best val_loss {summary['best_metric']:.4f} nats "
          f"({summary['best_metric'] / np.log(2.0):.4f} BPC) at step {summary['best_step']}; run folder {run_dir}")
    return 0
