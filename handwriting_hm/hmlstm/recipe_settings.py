"""The boundary recipes' settings (BoundaryRecipes: the task's schedules) and the command-line flags of the
detector and recipe settings, without torch, so that the trainers' parsers and task settings need none.
recipes.py has the loss they schedule and says what each recipe does."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from .presets import Flag


RATE_ESTIMATES = ("soft", "hard")  # what the rate loss counts: mean p, or mean z with p's gradient


@dataclass(frozen=True)
class BoundaryRecipes:
    """The task's boundary schedules (see recipes.py's docstring)."""

    rate_targets: tuple[float, ...] = ()
    rate_weight: float = 0.0
    rate_steps: int | None = None
    bernoulli_steps: int = 0
    rate_estimate: str = "soft"  # what the rate loss counts (RATE_ESTIMATES)

    def __post_init__(self) -> None:
        if self.rate_estimate not in RATE_ESTIMATES:
            raise ValueError(f"rate_estimate must be one of {', '.join(RATE_ESTIMATES)}, got {self.rate_estimate!r}")
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
    Flag("task", "rate_estimate", {"choices": RATE_ESTIMATES,
                                   "help": "what the rate loss counts: soft, the mean of p = sigmoid(2 a s_z) "
                                           "(default); hard, the firings themselves, with p's gradient"}),
    Flag("task", "bernoulli_steps", {"type": int, "help": "sample the boundaries (Bernoulli) for this many steps"}),
)
