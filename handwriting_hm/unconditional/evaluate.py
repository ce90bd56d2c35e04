"""The unconditional model's log-likelihood of lines: whole lines from a zero state, batched by length,
and the paper's metric over them (scoring.py's numbers and their definition)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..hmlstm.core import HMLSTMOutput
from ..hmlstm.recipes import with_preactivations
from ..scoring import PEN_UP_WINDOW, BoundaryCounts, Evaluation, check_finite, score_in_batches, summarise
from .model import HandwritingModel, shift_inputs


@torch.no_grad()
def sequence_log_likelihoods(model: HandwritingModel, lines: list[torch.Tensor], slope: float = 1.0,
                             batch_size: int = 32, device: torch.device | str = "cpu",
                             progress: bool = False, oracle: bool = False,
                             word_starts: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, BoundaryCounts]:
    """Total log-likelihood (nats) of each line, in the given order, and the boundary counts.

    lines: normalised (T_i, 3) offsets. Lines are batched by length (less padding); padded
    steps count nothing. Returns (N,) float64 log-likelihoods and the boundary firings summed
    over all points. `progress` shows a bar of lines scored on stderr. oracle: layer 1's boundaries
    forced to the pen-ups (model.pen_ups_read), as while an oracle run trains. word_starts: per line, (T_i,)
    bool, the pen-ups after which a word begins (scoring.word_starts), for the firings' figures against them.
    """
    order = np.argsort([len(line) for line in lines], kind="stable")

    def score(chosen: Sequence[int]) -> tuple[torch.Tensor, BoundaryCounts]:
        lengths = torch.tensor([len(lines[i]) for i in chosen])
        offsets = torch.zeros(len(chosen), int(lengths.max()), 3)
        starts = None if word_starts is None else torch.zeros(len(chosen), int(lengths.max()), dtype=torch.bool)
        for row, i in enumerate(chosen):
            offsets[row, :len(lines[i])] = lines[i]
            if starts is not None:
                starts[row, :len(lines[i])] = torch.from_numpy(np.asarray(word_starts[i], dtype=bool))
        log_likelihood, output = model.sequence_log_likelihood(offsets.to(device), lengths.to(device), slope=slope,
                                                                 oracle=oracle)
        core = output.core
        if isinstance(core, HMLSTMOutput):  # s_z as the path gave them, else recomputed from its output
            core = with_preactivations(model.core, shift_inputs(offsets.to(device)), core)
        return log_likelihood, BoundaryCounts.of_batch(core.boundaries, offsets, lengths,
                                                       getattr(core, "preactivations", None), slope,
                                                       getattr(model.core, "z_on_copy", "keep"), starts)

    return score_in_batches(model, [order[begin:begin + batch_size] for begin in range(0, len(order), batch_size)],
                            len(lines), score, progress)


def evaluate_lines(model: HandwritingModel, lines: list[torch.Tensor], slope: float = 1.0,
                   batch_size: int = 32, device: torch.device | str = "cpu",
                   names: Sequence[str] | None = None, progress: bool = False,
                   pen_up_window: int = PEN_UP_WINDOW,
                   word_starts: Sequence[np.ndarray] | None = None) -> Evaluation:
    """The paper's metric over `lines` (normalised offsets), see the module docstring; with `word_starts`
    (per line, scoring.word_starts) also where the firings fall against the words' starts.

    Raises ValueError naming the first line (by `names`, else its index) whose log-likelihood
    is not finite.
    """
    if not lines:
        raise ValueError("nothing to evaluate: no lines")
    if word_starts is not None and len(word_starts) != len(lines):
        raise ValueError(f"word_starts must give one array per line: {len(word_starts)} for {len(lines)} lines")
    totals, counts = sequence_log_likelihoods(model, lines, slope, batch_size, device, progress=progress,
                                              word_starts=word_starts)
    check_finite(totals, lines, names)
    return summarise(totals, sum(len(line) for line in lines), counts, pen_up_window)


def check_same_statistics(model_stats: dict, data_stats: dict, checkpoint: Path) -> None:
    """The model only means something on data normalised the way it was trained."""
    for key in ("mean", "std"):
        if not np.allclose(model_stats[key], data_stats[key], rtol=1e-5, atol=1e-6):
            raise ValueError(
                f"checkpoint {checkpoint} was trained with normalisation {key} {list(model_stats[key])}, but the "
                f"prepared file's is {list(data_stats[key])}: use the same prepared file and --scheme as in training"
            )
