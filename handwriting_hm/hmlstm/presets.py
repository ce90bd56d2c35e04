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
parser and `start_from_args` to read it back:

    start = start_from_args(args, PRESETS, "paper-hm-anneal", FLAGS, KIND, build=Model)
    start.settings.model, start.settings.task, start.settings.train  # what the run uses
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .checkpoint import StoredConfig, check_config_fits_weights, load_checkpoint
from .core import IMPLEMENTATIONS, LEARNING_ONLY
from .trainer import LATEST, TrainConfig, add_train_arguments, train_config_from_args


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


@dataclass
class RunStart:
    """Where a run starts: its settings and, for --resume and --init-from, the checkpoint read."""

    preset: str  # the preset's name; on --resume, the run's
    settings: Preset  # every given flag applied
    checkpoint: dict | None  # --resume: the run's latest.pt; --init-from: that file; else None


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


def start_from_args(args: argparse.Namespace, presets: dict[str, Preset], default: str, flags: Sequence[Flag],
                    kind: str, build: Callable[[Any], torch.nn.Module]) -> RunStart:
    """The settings the parsed flags describe (see the module docstring). `build(model_config)`
    makes the model: it is run on the meta device to check that a checkpoint's config fits its
    weights before anything is allocated. Every mistake is a ValueError of one line."""
    if args.resume and args.init_from is not None:
        raise ValueError("--resume continues a run and --init-from starts a new one: give one of them")
    if not args.resume and args.init_from is None:
        name = args.preset or default
        return RunStart(name, _apply_flags(args, presets[name], flags, fixed={}), None)
    like = presets[default]  # for the types of its model config and task settings
    if args.resume:
        path = Path(args.run_dir) / LATEST
        checkpoint = load_checkpoint(path, kind=kind, resumable=True)
        name = checkpoint["metadata"]["preset"]
        if args.preset not in (None, name):
            raise ValueError(f"--preset {args.preset}: {path} is a run of preset {name}, and a resumed run keeps "
                             "its own settings (give flags to change the training ones)")
        saved = Preset(type(like.model).from_dict(checkpoint["config"]),
                       type(like.task).from_dict(checkpoint["metadata"]["task"]),
                       TrainConfig(**checkpoint["train_config"]))
        settings = _apply_flags(args, saved, flags, fixed={"model": f"{path}'s", "task": f"{path}'s"})
    else:
        path = Path(args.init_from)
        checkpoint = load_checkpoint(path, kind=kind)
        name = args.preset or default
        base = dataclasses.replace(presets[name], model=type(like.model).from_dict(checkpoint["config"]))
        settings = _apply_flags(args, base, flags, fixed={"model": f"{path}'s"}, learning_may_change=True)
    try:
        check_config_fits_weights(lambda: build(settings.model), checkpoint["model"])
    except ValueError as error:
        raise ValueError(f"checkpoint {path}: {error}") from None
    return RunStart(name, settings, checkpoint)


def _apply_flags(args: argparse.Namespace, base: Preset, flags: Sequence[Flag], fixed: dict[str, str],
                 learning_may_change: bool = False) -> Preset:
    """`base` with the flags given in `args`; a flag for a part in `fixed` must repeat its value
    (the dict says whose value it is, for the message), unless `learning_may_change` and it is one
    of core.LEARNING_ONLY (it changes how the model learns, not what it computes)."""
    changes: dict[str, dict[str, Any]] = {"model": {}, "task": {}}
    for flag in flags:
        if not hasattr(args, flag.name):
            continue
        value, current = getattr(args, flag.name), getattr(getattr(base, flag.part), flag.name)
        if flag.part in fixed and value != current and not (learning_may_change and flag.name in LEARNING_ONLY):
            raise ValueError(f"{flag.option} {_shown(value)} contradicts {fixed[flag.part]} {_shown(current)}: "
                             f"leave {flag.option} out")
        changes[flag.part][flag.name] = value
    return dataclasses.replace(base, model=dataclasses.replace(base.model, **changes["model"]),
                               task=dataclasses.replace(base.task, **changes["task"]),
                               train=train_config_from_args(args, base.train))


def _shown(value: Any) -> str:
    """A value as it is typed on the command line: 400,400,400 for a tuple; None is "all"."""
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return "all" if value is None else str(value)
