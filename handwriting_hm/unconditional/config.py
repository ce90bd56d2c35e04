"""The unconditional model's settings without torch: its config (HandwritingConfig), how it trains
(TaskSettings: batches, validation, the slope schedule, the boundary recipes) and the named presets of
`handwriting-hm train`, so that the command builds its parser before torch loads. The model is model.py's,
the task task.py's.

Slope annealing, a = min(max, 1 + rate * N). The paper's handwriting schedule is rate 0.004,
max 3, with N called "N_epoch". Read as epochs, a reaches 3 only after 500 epochs (about
164,000 steps at batch 32), far past any run the paper could have made, so that reading would
turn annealing into "a barely moves". We count N in units of `slope_unit_steps` optimiser steps
instead: the paper presets use 50 steps per unit, so a = 3 at step 25,000, about 76 epochs of the
paper split's 328 batches, inside the presets' 100-epoch budget (a rises for the first three
quarters of training and then stays at 3). The `tiny` CPU preset uses 1 step per unit, so that
its short run anneals too. The slope actually used is logged as `slope` in log.jsonl.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..hmlstm.presets import Preset
from ..hmlstm.recipe_settings import BoundaryRecipes
from ..hmlstm.settings import SlopeSchedule, StoredConfig
from ..hmlstm.training.config import TrainConfig

KIND = "handwriting"  # the checkpoint kind of this model
LAYER1_BOUNDARIES = ("learned", "pen-ups")  # where z1 comes from (HandwritingConfig.layer1_boundaries)


@dataclass
class HandwritingConfig(StoredConfig):
    """Architecture. The defaults are the paper's (§4.2): 3 x 400 units, a 400-unit output embedding."""

    cell: str = "hm-lstm"  # "hm-lstm" or "lstm" (the baseline)
    hidden_sizes: tuple[int, ...] = (400, 400, 400)
    embedding_size: int = 400
    n_mixtures: int = 20
    layer_norm: bool = True
    boundary_mode: str = "step"
    copy_gradient: str = "straight"  # what a COPY row passes back: see hmlstm/core.py (an LSTM core ignores it)
    # how the detectors compute (hmlstm/core.py); the defaults are what every earlier checkpoint was trained with
    z_on_copy: str = "keep"
    boundary_norm: bool = True
    boundary_bias: float | None = None
    # "learned": z1 is layer 1's detector, as in the paper. "pen-ups": z1 is the pen-up bit of the point read,
    # given, not learned, so that layer 2 runs once per stroke (on the stroke just written) and only
    # z2 and above are learned; the model still writes on its own, as it reads the pen-ups it draws.
    layer1_boundaries: str = "learned"

    def __post_init__(self) -> None:
        if self.layer1_boundaries not in LAYER1_BOUNDARIES:
            raise ValueError(f"layer1_boundaries must be one of {', '.join(LAYER1_BOUNDARIES)}, "
                             f"got {self.layer1_boundaries!r}")
        if self.layer1_boundaries != "learned" and self.cell != "hm-lstm":
            raise ValueError(f"layer1_boundaries={self.layer1_boundaries!r} gives layer 1's boundaries, which an "
                             "LSTM has not: leave it out")

    @property
    def pen_up_clock(self) -> bool:
        """Whether z1 is the pen-ups read rather than learned."""
        return self.layer1_boundaries == "pen-ups"


def layer1_note(config: HandwritingConfig) -> str:
    """One sentence for people reading a model's boundaries where z1 is given (a pen-up clock); "" where not."""
    if not config.pen_up_clock:
        return ""
    return ("z1 is given, not learned: it is the pen-up of the point read (layer1_boundaries=pen-ups), so layer 2 "
            "runs once per stroke; z2 and above are learned.")


@dataclass
class TaskSettings(StoredConfig):
    """How training batches are made, what is validated, and the boundary slope schedule."""

    scheme: str = "paper"  # split scheme of the prepared file (see data_prep/splits.py)
    batch_size: int = 32
    crop_points: int | None = None  # train on random windows of this many points; None: whole lines
    # train whole lines in consecutive chunks of this many points, one step each, the state carried
    chunk_points: int | None = None
    validation_lines: int | None = None  # validate on this many lines spread over the split; None: all
    slope_rate: float = 0.0  # a = min(slope_max, 1 + slope_rate * step / slope_unit_steps)
    slope_max: float = 1.0
    slope_unit_steps: int = 1
    sample_points: int = 400  # length of the sample pictures drawn at each validation
    sample_biases: tuple[float, ...] = (0.0, 1.0)  # two samples per bias (Graves's Eq. 61-62)
    # recipes for boundaries that learn (hmlstm/recipes.py); the defaults train as the paper does
    rate_targets: tuple[float, ...] = ()
    rate_weight: float = 0.0
    rate_steps: int | None = None
    bernoulli_steps: int = 0
    rate_estimate: str = "soft"
    oracle_steps: int = 0  # layer 1's boundaries forced to the pen-ups for this many steps, then free

    def __post_init__(self) -> None:
        self.sample_biases = tuple(float(b) for b in self.sample_biases)
        self.rate_targets = tuple(float(rate) for rate in self.rate_targets)
        self.recipes  # checked now, not at the first step
        if self.oracle_steps < 0:
            raise ValueError(f"oracle_steps must be >= 0, got {self.oracle_steps}")
        for name in ("batch_size", "slope_unit_steps", "sample_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("crop_points", "chunk_points", "validation_lines"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None for all), got {value}")
        if self.crop_points is not None and self.chunk_points is not None:
            raise ValueError("crop_points (random windows) and chunk_points (whole lines in chunks) exclude each "
                             "other: with --chunk-points give --crop-points 0")
        if self.slope_rate < 0 or self.slope_max < 1:
            raise ValueError(f"need slope_rate >= 0 and slope_max >= 1, got {self.slope_rate}, {self.slope_max}")

    def slope(self, step: int) -> float:
        return SlopeSchedule(self.slope_rate, self.slope_max)(step / self.slope_unit_steps)

    @property
    def recipes(self) -> BoundaryRecipes:
        return BoundaryRecipes(self.rate_targets, self.rate_weight, self.rate_steps, self.bernoulli_steps,
                               self.rate_estimate)


def _paper(cell: str, annealed: bool, description: str) -> Preset:
    # Paper §4.2: 3 x 400 units, output embedding 400, batch 32, lr 0.0003, layer norm; Graves's
    # 20 mixtures; Adam, gradient-norm clip 1 and "divide the learning rate by 50 on a plateau"
    # as in the paper's other experiments. Budget: 100 epochs of the paper split, the same for all three.
    return Preset(
        model=HandwritingConfig(cell=cell, hidden_sizes=(400, 400, 400), embedding_size=400, n_mixtures=20,
                                layer_norm=True, boundary_mode="step"),
        task=TaskSettings(scheme="paper", batch_size=32,
                          slope_rate=0.004 if annealed else 0.0, slope_max=3.0 if annealed else 1.0,
                          slope_unit_steps=50 if annealed else 1),
        train=TrainConfig(lr=3e-4, clip=1.0, max_epochs=100, plateau_factor=0.02, plateau_patience=3,
                          log_every=50, bf16=True),
        description=description,
    )


PRESETS: dict[str, Preset] = {
    "paper-hm": _paper("hm-lstm", False, "HM-LSTM of Table 3, slope fixed at 1"),
    "paper-hm-anneal": _paper("hm-lstm", True, "HM-LSTM of Table 3 with slope annealing min(3, 1 + 0.004 N)"),
    "paper-lstm": _paper("lstm", False, "the standard (layer-normalised) LSTM baseline of Table 3"),
    # About 20 minutes on a 2-core CPU: 3 x 128 units, 100-point windows, 64 lines a batch,
    # validation on 64 whole lines. The step count, not the clock, ends it, so a run is repeatable.
    # The shipped default model is this preset's run (handwriting_hm/models/MODEL_CARD.md).
    "tiny": Preset(
        model=HandwritingConfig(cell="hm-lstm", hidden_sizes=(128, 128, 128), embedding_size=128, n_mixtures=10,
                                layer_norm=True, boundary_mode="step"),
        task=TaskSettings(scheme="paper", batch_size=64, crop_points=100, validation_lines=64,
                          slope_rate=0.004, slope_max=3.0, slope_unit_steps=1, sample_points=300),
        train=TrainConfig(lr=2e-3, clip=1.0, max_steps=1000, eval_every=100, log_every=10,
                          plateau_factor=0.5, plateau_patience=2),
        description="a small annealed HM-LSTM that trains on a 2-core CPU",
    ),
}
