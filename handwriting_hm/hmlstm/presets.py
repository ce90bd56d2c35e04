"""Presets and their command-line flags, shared by `handwriting-hm train` and `hm-lm train`.

A preset names a whole configuration: the model's config, the task's settings (how batches are
made, what is validated, the slope schedule) and the trainer's TrainConfig. Every setting a
trainer exposes is a flag, and a flag left out means "take it from where the run starts":

  a new run            the preset (--preset);
  --resume             the run's saved config in latest.pt: model, task AND training settings,
                       whatever the preset says now. A training flag overrides the saved value
                       (and the Trainer applies it); a model or task flag must agree with the run,
                       since those fix what the weights and the batch order mean;
  --init-from FILE     a new run (step 0, fresh optimiser) from FILE's weights: the model config
                       is FILE's (a model flag must agree with it, except one that changes only
                       how the model learns, such as --copy-gradient), the task and training
                       settings are the preset's and the flags'.

A trainer lists its model and task flags as `Flag`s, calls `add_preset_arguments` to build the
parser and `run_start.start_from_args` to read it back:

    start = start_from_args(args, PRESETS, "paper-hm-anneal", FLAGS, KIND, build=Model)
    start.settings.model, start.settings.task, start.settings.train  # what the run uses

This module imports no torch, so that a parser (and --help) is built without it; start_from_args,
which reads checkpoints, is in run_start.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .settings import IMPLEMENTATIONS, StoredConfig
from .training.config import TrainConfig, add_train_arguments


@dataclass(frozen=True)
class Preset:
    """A named configuration: the model's config, the task's settings, the trainer's config."""

    model: StoredConfig
    task: StoredConfig
    train: TrainConfig
    description: str = ""


@dataclass(frozen=True)
class Flag:
    """The command-line flag --NAME (underscores as dashes) for the field NAME of a preset's
    model config or task settings. `options` are argparse's (type, choices, action, help); the
    default is never one of them: a flag left out is absent from the parsed arguments."""

    part: str  # "model" or "task"
    name: str
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def add_preset_arguments(parser: argparse.ArgumentParser, presets: dict[str, Preset], default: str,
                         flags: Sequence[Flag]) -> None:
    """--preset, one flag per `Flag` (grouped as model and task), --impl, the trainer's flags
    (`add_train_arguments`) and --init-from, all without defaults of their own: see the module docstring."""
    listed = "; ".join(f"{name}: {preset.description}" for name, preset in presets.items())
    parser.description = (f"{(parser.description or 'Train a model').rstrip('.')}. Presets: {listed}. A flag left "
                          f"out takes the preset's value; with --resume, the run's own (--init-from: the model's)."
                          ).replace("%", "%%")
    parser.add_argument("--preset", choices=sorted(presets), default=None,
                        help=f"named configuration (default: {default}; with --resume, the run's)")
    groups = {
        "model": parser.add_argument_group("model (default: the preset's; with --resume or --init-from, the "
                                           "checkpoint's, which a flag may repeat but not change)"),
        "task": parser.add_argument_group("data and schedule (default: the preset's; with --resume, the run's, "
                                          "which a flag may repeat but not change)"),
    }
    for flag in flags:
        groups[flag.part].add_argument(flag.option, default=argparse.SUPPRESS, **flag.options)
    parser.add_argument("--impl", choices=IMPLEMENTATIONS, default="reference",
                        help="how the HM-LSTM core runs (not part of the model, so it may change on --resume): "
                             "reference, the loop that reads like the paper (default); fused, with a hand-written "
                             "backward; sparse, which skips the rows that COPY (CPU, binary boundaries); triton, "
                             "CUDA kernels; auto: on CUDA triton where installed, else fused; on the CPU sparse for "
                             "binary boundaries (step, bernoulli), else fused")
    add_train_arguments(parser, None, unset_help="the preset's; with --resume, the run's")
    parser.add_argument("--init-from", type=Path, metavar="CHECKPOINT",
                        help="start a new run (step 0, fresh optimiser) from the weights of CHECKPOINT, another "
                             "run's best.pt/latest.pt or an exported model; the model config is CHECKPOINT's")
