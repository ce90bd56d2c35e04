"""Training recipes for boundaries that learn, written once for the language model's and the handwriting
model's tasks (docs/boundaries.md says what each does and what it measured).

The detector settings are the model's (HMLSTM: z_on_copy, copy_gradient, boundary_norm, boundary_bias);
the schedules below are the task's, read at every step:
  rate loss       rate_weight * sum_l (mean p^l - target_l)^2 (detectors.rate_penalty), for the first
                  rate_steps steps (None: always);
  Bernoulli       sampled boundaries (Eq. 9) for the first bernoulli_steps steps, then the model's own mode.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from torch import Tensor

from .core import HMLSTMOutput, HMLSTMState, Slope, StackedLSTM, HMLSTM, make_core
from .detectors import rate_penalty
from .presets import Flag


@dataclass(frozen=True)
class BoundaryRecipes:
    """The task's boundary schedules (see the module docstring)."""

    rate_targets: tuple[float, ...] = ()
    rate_weight: float = 0.0
    rate_steps: int | None = None
    bernoulli_steps: int = 0

    def __post_init__(self) -> None:
        if self.rate_weight < 0 or self.bernoulli_steps < 0 or (self.rate_steps is not None and self.rate_steps < 0):
            raise ValueError("rate_weight, rate_steps and bernoulli_steps must be >= 0")
        if self.rate_weight > 0 and not self.rate_targets:
            raise ValueError("a firing-rate loss needs target rates (--rate-targets, one per detector)")
        if any(not 0 <= rate <= 1 for rate in self.rate_targets):
            raise ValueError(f"target rates must lie in [0, 1], got {list(self.rate_targets)}")

    @property
    def any(self) -> bool:
        """Whether any schedule is on (a step's work then depends on the step)."""
        return self.rate_weight > 0 or self.bernoulli_steps > 0

    def boundary_mode(self, step: int) -> str | None:
        """The boundary mode for training step `step` (0-based): "bernoulli" early, else None (the model's)."""
        return "bernoulli" if 0 <= step < self.bernoulli_steps else None

    def rate_loss_on(self, step: int) -> bool:
        return self.rate_weight > 0 and (self.rate_steps is None or 0 <= step < self.rate_steps)

    def penalty(self, core: HMLSTMOutput, slope: Slope, z_on_copy: str, initial_z: Tensor | None = None,
                mask: Tensor | None = None) -> Tensor:
        """rate_weight times the firing-rate loss of a forward pass whose output carries pre-activations."""
        if core.preactivations is None:
            raise ValueError("the firing-rate loss needs the boundary pre-activations of the forward pass")
        return self.rate_weight * rate_penalty(core.preactivations, core.boundaries, slope, self.rate_targets,
                                               z_on_copy, initial_z, mask)


def core_from_config(config, input_size: int, impl: str) -> HMLSTM | StackedLSTM:
    """The recurrent core a model config describes (its cell, sizes, layer norm and detector settings):
    both models build theirs here."""
    return make_core(config.cell, input_size, config.hidden_sizes, layer_norm=config.layer_norm,
                     boundary_mode=config.boundary_mode, impl=impl, copy_gradient=config.copy_gradient,
                     z_on_copy=config.z_on_copy, boundary_norm=config.boundary_norm,
                     boundary_bias=config.boundary_bias)


def with_preactivations(core: HMLSTM | StackedLSTM, x: Tensor, output: HMLSTMOutput,
                        state: HMLSTMState | None = None) -> HMLSTMOutput:
    """`output` carrying its boundary pre-activations: as the path gave them, else recomputed from x
    (HMLSTM.boundary_preactivations). An LSTM's output is returned as it is."""
    if output.preactivations is not None or not core.num_detectors:
        return output
    return output._replace(preactivations=core.boundary_preactivations(x, output, state))


def _rates(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rates like 0.18,0.06, got {text!r}") from None


# The command-line flags of the detector settings (model) and the schedules (task), for both trainers.
DETECTOR_FLAGS = (
    Flag("model", "z_on_copy", {"choices": ("keep", "recompute"),
                                "help": "a COPY step keeps its boundary, or recomputes it as Eq. 5-9 write it"}),
    Flag("model", "copy_gradient", {"choices": ("straight", "mixed", "exact"),
                                    "help": "what a COPY row passes back (keep: straight, mixed; recompute: "
                                            "straight, exact); --init-from may change it"}),
    Flag("model", "boundary_norm", {"action": argparse.BooleanOptionalAction,
                                    "help": "whether the layer norm covers the boundary unit (--no-boundary-norm: "
                                            "it keeps its raw sum and its own bias)"}),
    Flag("model", "boundary_bias", {"type": float, "help": "the boundary units' initial bias"}),
)
RECIPE_FLAGS = (
    Flag("task", "rate_targets", {"type": _rates, "help": "firing rates the rate loss pulls each detector towards, "
                                                          "e.g. 0.18,0.06"}),
    Flag("task", "rate_weight", {"type": float, "help": "weight of the firing-rate loss (0: off)"}),
    Flag("task", "rate_steps", {"type": int, "help": "apply the firing-rate loss for this many steps only"}),
    Flag("task", "bernoulli_steps", {"type": int, "help": "sample the boundaries (Bernoulli) for this many steps"}),
)
