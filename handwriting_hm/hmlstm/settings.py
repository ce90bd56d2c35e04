"""The names a model's settings take, the slope schedules and StoredConfig, without torch: the command lines
build their parsers (choices, presets, config dataclasses) from them before torch is loaded.

The cell (cell_types) and the dispatch check the settings against these names; core re-exports them, and
its docstring explains the choices they name (`copy_gradient`, `z_on_copy`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

BOUNDARY_MODES = ("step", "bernoulli", "soft")
COPY_GRADIENTS = ("straight", "mixed", "exact")  # what a COPY row passes back: see core's docstring
Z_ON_COPY = ("keep", "recompute")  # what a COPY row does with its boundary: see core's docstring
GRADIENTS_FOR = {"keep": ("straight", "mixed"), "recompute": ("straight", "exact")}
LEARNING_ONLY = ("copy_gradient", "boundary_bias")  # settings that change the gradient or the init, not the function: a run may start
                                    # from weights trained with another value (--init-from)
IMPLEMENTATIONS = ("reference", "fused", "sparse", "triton", "auto")  # how HMLSTM.forward runs; see dispatch.resolve_impl
# How a model that steps the core itself runs its steps (the synthesis model: its window sits between layer 1 and
# layer 2 of every step, so the whole-sequence paths cannot serve it); see dispatch.stepwise_choice.
STEPWISE_IMPLEMENTATIONS = ("reference", "compiled", "sparse", "auto")


@dataclass(frozen=True)
class SlopeSchedule:
    """Slope annealing (§3.3): a = min(max_slope, 1 + rate * epoch)."""

    rate: float
    max_slope: float

    def __call__(self, epoch: float) -> float:
        return min(self.max_slope, 1.0 + self.rate * epoch)


# The paper's two schedules. "epoch" is the caller's unit: the trainers document theirs.
SLOPE_PRESETS: dict[str, SlopeSchedule] = {
    "constant": SlopeSchedule(rate=0.0, max_slope=1.0),
    "ptb": SlopeSchedule(rate=0.04, max_slope=5.0),
    "handwriting": SlopeSchedule(rate=0.004, max_slope=3.0),
}


class StoredConfig:
    """to_dict / from_dict for the model config dataclasses that checkpoints carry as plain dicts
    (tuples stored as lists); an unknown key is a ValueError, a missing one takes its default."""

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        unknown = sorted(set(values) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})
