"""The language model's settings without torch: its config (LMConfig), how the task cuts the data
(TaskSettings) and the presets of `hm-lm train`, so that the command builds its parser before torch loads.

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
"""
from __future__ import annotations

from dataclasses import dataclass

from handwriting_hm.hmlstm.presets import Preset
from handwriting_hm.hmlstm.settings import StoredConfig
from handwriting_hm.hmlstm.training.config import TrainConfig


@dataclass
class LMConfig(StoredConfig):
    """Architecture. The defaults are the paper's PTB model: 3 x 512 units, a 512-unit output embedding."""

    vocab_size: int
    cell: str = "hm-lstm"  # "hm-lstm" or "lstm" (the baseline, same input and output modules)
    input_embedding: int = 128
    hidden_sizes: tuple[int, ...] = (512, 512, 512)
    embedding_size: int = 512
    layer_norm: bool = True
    boundary_mode: str = "step"
    # how the detectors compute and learn (handwriting_hm.hmlstm.core.HMLSTM); the defaults are the
    # settings every earlier checkpoint was trained with
    z_on_copy: str = "keep"
    copy_gradient: str = "straight"
    boundary_norm: bool = True
    boundary_bias: float | None = None


BPTT = 100
PLATEAU_FACTOR = 1 / 50
PLATEAU_PATIENCE = 1
MAX_DROPS = 2  # min_lr = lr * PLATEAU_FACTOR ** MAX_DROPS


@dataclass
class TaskSettings(StoredConfig):
    """How the task cuts the data; saved in the checkpoint so that a resume uses the same."""

    batch_size: int
    bptt: int = BPTT
    slope_schedule: str = "ptb"  # a key of handwriting_hm.hmlstm.core.SLOPE_PRESETS
    train_symbols: int | None = None  # use only the first N training symbols (CPU slices)
    valid_symbols: int | None = None
    val_rows: int = 16
    # recipes for boundaries that learn (docs/boundaries.md); the defaults leave the paper's training as it is
    rate_targets: tuple[float, ...] = ()  # per detector, the firing rate the rate loss pulls towards
    rate_weight: float = 0.0  # weight of the firing-rate loss (hmlstm.detectors.rate_penalty)
    rate_steps: int | None = None  # the rate loss applies for this many steps only (None: always)
    bernoulli_steps: int = 0  # sampled boundaries (Eq. 9, Bernoulli) for this many steps, then the model's own
    rate_estimate: str = "soft"  # what the rate loss counts: mean p (soft) or the firings with p's gradient (hard)
    oracle_steps: int = 0  # layer 1's boundaries forced to the word separators for this many steps, then free


def _preset(cell: str, hidden_size: int, embedding_size: int, batch_size: int, lr: float, slope_schedule: str,
            max_epochs: int) -> Preset:
    """One row of the paper's settings: the model, the batches and the optimiser's schedule."""
    return Preset(
        # vocab_size 0 stands for "the prepared file's": run() fills it in
        model=LMConfig(vocab_size=0, cell=cell, hidden_sizes=(hidden_size,) * 3, embedding_size=embedding_size),
        task=TaskSettings(batch_size=batch_size, slope_schedule=slope_schedule),
        train=TrainConfig(lr=lr, max_epochs=max_epochs, plateau_factor=PLATEAU_FACTOR,
                          plateau_patience=PLATEAU_PATIENCE, min_lr=lr * PLATEAU_FACTOR ** MAX_DROPS),
        description=f"{cell} 3 x {hidden_size}, output embedding {embedding_size}, batch {batch_size}, lr {lr}, "
                    f"slope schedule {slope_schedule}, {max_epochs} epochs",
    )


PRESETS: dict[str, Preset] = {
    "ptb": _preset("hm-lstm", 512, 512, 64, 0.002, "ptb", 100),
    "ptb-no-anneal": _preset("hm-lstm", 512, 512, 64, 0.002, "constant", 100),
    "ptb-lstm": _preset("lstm", 512, 512, 64, 0.002, "constant", 100),
    "text8": _preset("hm-lstm", 1024, 2048, 128, 0.001, "constant", 20),
    "enwik8": _preset("hm-lstm", 1024, 2048, 128, 0.001, "constant", 20),
    "tiny": _preset("hm-lstm", 128, 128, 32, 0.002, "ptb", 5),
}
