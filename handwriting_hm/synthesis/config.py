"""The synthesis model's settings without torch: its config (SynthesisConfig), its task's settings and the
`synthesis` preset of `handwriting-hm train`, so that the command builds its parser before torch loads. The
model is model.py's, the task task.py's.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..hmlstm.presets import Preset
from ..hmlstm.settings import COPY_GRADIENTS, StoredConfig
from ..hmlstm.training.config import TrainConfig

KIND = "synthesis"  # the checkpoint kind of this model


@dataclass
class SynthesisConfig(StoredConfig):
    """Architecture. The core's defaults are the paper's handwriting model (§4.2); K = 10 is Graves's."""

    alphabet: str = ""  # the characters the model writes, in id order (see Alphabet); "" until the data gives it
    hidden_sizes: tuple[int, ...] = (400, 400, 400)
    embedding_size: int = 400
    n_mixtures: int = 20
    n_window: int = 10  # K Gaussians in the window
    # exp(kappa_hat) at initialisation, in characters per point. Graves is silent; with exp(0) = 1
    # the window would start by running a character per point off the text, while IAM-OnDB
    # writes one in about 20 points. 1/20 starts the window at about the data's pace.
    initial_window_step: float = 0.05
    layer_norm: bool = True
    boundary_mode: str = "step"
    copy_gradient: str = "straight"  # what a COPY row passes back (hmlstm/core.py); the sparse step needs "straight"

    def __post_init__(self) -> None:
        if self.copy_gradient not in COPY_GRADIENTS:
            raise ValueError(f"unknown copy_gradient {self.copy_gradient!r}: choose one of {', '.join(COPY_GRADIENTS)}")
        if self.n_window < 1 or not 0 < self.initial_window_step:
            raise ValueError(f"need n_window >= 1 and initial_window_step > 0, "
                             f"got {self.n_window}, {self.initial_window_step}")


@dataclass
class SynthesisTaskSettings(StoredConfig):
    """The task part of a SynthesisPreset, as `hmlstm/presets.py` stores and restores it on --resume."""

    scheme: str = "paper"
    batch_size: int = 32
    validation_lines: int | None = 64
    chunk_points: int | None = None  # train whole lines in chunks of this many points, the state carried

    def __post_init__(self) -> None:
        if self.batch_size < 1 or any(value is not None and value < 1
                                      for value in (self.validation_lines, self.chunk_points)):
            raise ValueError(f"batch_size, validation_lines and chunk_points must be at least 1, got "
                             f"{self.batch_size}, {self.validation_lines}, {self.chunk_points}")


@dataclass
class SynthesisPreset:
    """The `synthesis` preset: the paper's handwriting core (3 x 400, batch 32, learning rate 3e-4,
    §4.2) with Graves's window (K = 10) and mixture (M = 20); whole lines, the paper's split; the
    boundary slope fixed at 1 (SynthesisTask has no annealing schedule yet)."""

    model: SynthesisConfig
    scheme: str = "paper"
    batch_size: int = 32
    validation_lines: int | None = 64  # spread over the validation split (None: all); it runs the reference loop
    train: TrainConfig = field(default_factory=lambda: TrainConfig(lr=3e-4, max_epochs=50, eval_every=500))
    chunk_points: int | None = None  # None: one step per batch of whole lines

    def task(self) -> SynthesisTaskSettings:
        return SynthesisTaskSettings(self.scheme, self.batch_size, self.validation_lines, self.chunk_points)

    @classmethod
    def from_preset(cls, preset: Preset) -> SynthesisPreset:
        """The preset as `hmlstm/presets.py` gives it (model, task settings, train) -> a SynthesisPreset."""
        task = preset.task
        return cls(preset.model, task.scheme, task.batch_size, task.validation_lines, preset.train, task.chunk_points)


PRESET_NAME = "synthesis"  # its name among `handwriting-hm train`'s presets
_DEFAULT = SynthesisPreset(SynthesisConfig())
PRESETS = {PRESET_NAME: Preset(_DEFAULT.model, _DEFAULT.task(), _DEFAULT.train,
                               "text-conditioned writing: the paper's 3x400 core with Graves's window (K = 10), "
                               "M = 20, batch 32, lr 3e-4, slope 1, whole lines")}
