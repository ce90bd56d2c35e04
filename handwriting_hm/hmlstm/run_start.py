"""Where a run starts: the settings that `add_preset_arguments`' flags describe, read against the preset, the
run's latest.pt (--resume) or another model's checkpoint (--init-from). presets.py's docstring gives the rules.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .checkpoint import check_config_fits_weights, load_checkpoint
from .presets import Flag, Preset
from .settings import LEARNING_ONLY
from .trainer import LATEST
from .training.config import TrainConfig, train_config_from_args


@dataclass
class RunStart:
    """Where a run starts: its settings and, for --resume and --init-from, the checkpoint read."""

    preset: str  # the preset's name; on --resume, the run's
    settings: Preset  # every given flag applied
    checkpoint: dict | None  # --resume: the run's latest.pt; --init-from: that file; else None


def start_from_args(args: argparse.Namespace, presets: dict[str, Preset], default: str, flags: Sequence[Flag],
                    kind: str, build: Callable[[Any], torch.nn.Module]) -> RunStart:
    """The settings the parsed flags describe (see presets.py's docstring). `build(model_config)`
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
