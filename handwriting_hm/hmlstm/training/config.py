"""How to train (TrainConfig) and the training flags both trainers share: `add_train_arguments` adds them,
`train_config_from_args` reads them back. With defaults None a flag left out is absent from the parsed
namespace, and the defaults (a preset's, a resumed run's) fill it in: see presets.py."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass


@dataclass
class TrainConfig:
    """How to train; the model's own hyperparameters live in the model's config."""

    lr: float = 1e-3
    clip: float | None = 1.0  # max gradient norm; None or 0: no clipping (the norm is still checked)
    max_epochs: int | None = None
    max_steps: int | None = None
    max_minutes: float | None = None  # wall-clock budget of this fit() call
    eval_every: int | None = None  # steps between validations; None: at the end of every epoch
    log_every: int = 50  # steps between "train" log records
    metric: str = "val_loss"  # key of validate()'s dict that decides best.pt and the plateau
    plateau_factor: float = 0.5  # lr *= factor on a plateau (the LM paper's /50 is 0.02)
    plateau_patience: int = 2  # validations without improvement before the drop
    min_lr: float = 0.0
    max_nonfinite: int = 20  # consecutive skipped steps before giving up
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    bf16: bool = False  # bf16 autocast for the training forward; CUDA only, ignored on CPU
    cuda_graph: bool = True  # on CUDA, replay each step's forward, backward and clipping from one CUDA graph
                             # where the task allows it (TrainingTask.graph_safe)
    quiet: bool = False  # no progress bar or progress lines

    def __post_init__(self) -> None:
        if self.max_epochs is None and self.max_steps is None and self.max_minutes is None:
            raise ValueError("set at least one of max_epochs, max_steps, max_minutes, or training never stops")
        positive = {"lr": self.lr, "log_every": self.log_every, "max_nonfinite": self.max_nonfinite}
        optional_positive = {"max_epochs": self.max_epochs, "max_steps": self.max_steps, "eval_every": self.eval_every}
        for name, value in {**positive, **{k: v for k, v in optional_positive.items() if v is not None}}.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.plateau_patience < 0 or self.min_lr < 0:
            raise ValueError("plateau_patience and min_lr must be >= 0")


# TrainConfig fields that both trainers expose as command-line flags (metric is the task's business).
_FLAGS: dict[str, tuple[type, str]] = {
    "lr": (float, "Adam learning rate"),
    "clip": (float, "maximum gradient norm; 0 disables clipping"),
    "max_epochs": (int, "stop after this many epochs"),
    "max_steps": (int, "stop after this many steps (batches)"),
    "max_minutes": (float, "stop cleanly, with a checkpoint, after this many minutes of this session"),
    "eval_every": (int, "validate every this many steps (default: at the end of every epoch)"),
    "log_every": (int, "steps between log records"),
    "plateau_factor": (float, "multiply the learning rate by this when validation stops improving"),
    "plateau_patience": (int, "validations without improvement before the learning rate drops"),
    "min_lr": (float, "never drop the learning rate below this"),
    "max_nonfinite": (int, "give up after this many consecutive steps with a NaN/inf loss or gradient"),
    "seed": (int, "random seed"),
    "device": (str, "auto, cpu, cuda or cuda:N"),
    "bf16": (bool, "bf16 autocast on CUDA (ignored on the CPU)"),
    "cuda_graph": (bool, "replay each training step from a CUDA graph where the task allows it (CUDA only)"),
    "quiet": (bool, "no progress bar or progress lines"),
}


def add_train_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig | None,
                        unset_help: str = "from the preset") -> None:
    """Add the shared training flags (--lr, --max-steps, ..., --resume), defaulting to `defaults`;
    with None, a flag left out is absent from the parsed namespace and its help says `unset_help`."""
    group = parser.add_argument_group("training")
    for name, (kind, help_text) in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        default = argparse.SUPPRESS if defaults is None else getattr(defaults, name)
        shown = unset_help if defaults is None else default
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                               help=f"{help_text} (default: {shown})")
        else:
            group.add_argument(flag, type=kind, default=default, help=f"{help_text} (default: {shown})")
    group.add_argument("--resume", action="store_true", help="continue the run folder's latest.pt exactly where it stopped")


def train_config_from_args(args: argparse.Namespace, defaults: TrainConfig) -> TrainConfig:
    """The TrainConfig that `add_train_arguments`' flags describe. A flag absent from `args` or left
    at None, and every other field, takes its value from `defaults` (a preset's or a resumed run's)."""
    given = {name: getattr(args, name) for name in _FLAGS if getattr(args, name, None) is not None}
    return dataclasses.replace(defaults, **given)
