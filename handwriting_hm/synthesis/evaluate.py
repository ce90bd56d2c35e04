"""The synthesis model's log-likelihood of lines, each given its text: batching lines with their texts,
scoring a batch, and the paper's metric over a split (scoring.py's numbers: the mean log-likelihood per
line with its 95% interval, per point, the detectors' rates).

`evaluate_synthesis` scores a checkpoint on a prepared IAM-OnDB file, on the scheme it was trained on
(`handwriting-hm evaluate` runs it for a synthesis checkpoint); training validates with `evaluate_lines`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from ..hmlstm.trainer import move_to
from ..mixture import mixture_log_likelihood
from ..scoring import BoundaryCounts, Evaluation, check_finite, score_in_batches, summarise
from ..unconditional.model import shift_inputs
from .alphabet import Alphabet
from .model import SynthesisOutput, SynthesisState, load_synthesis_model


@dataclass
class SynthesisBatch:
    offsets: Tensor  # (B, T, 3) normalised offsets, zeros past each line's end
    lengths: Tensor  # (B,) points per line
    text: Tensor  # (B, U, V) one-hot characters, zero rows past each text's end
    text_lengths: Tensor  # (B,) characters per text
    # a later chunk of the lines (see `task.chunks`): the point before offsets[:, 0], the first input;
    # None at the lines' start, where the input is a zero vector and the state starts from zeros
    previous: Tensor | None = None

    def inputs(self) -> Tensor:
        """The inputs that predict `offsets` (B, T, 3): the point before each one."""
        return shift_inputs(self.offsets, self.previous)


def collate_lines(lines: Sequence[tuple[Tensor, str]], alphabet: Alphabet, points: int = 0) -> SynthesisBatch:
    """Pad (offsets (T_i, 3), text) pairs into one batch, at least `points` points long."""
    lengths = torch.tensor([len(offsets) for offsets, _ in lines], dtype=torch.long)
    offsets = torch.zeros(len(lines), max(int(lengths.max()), points), 3)
    for row, (line, _) in enumerate(lines):
        offsets[row, :len(line)] = line
    text, text_lengths = alphabet.one_hot([text for _, text in lines])
    return SynthesisBatch(offsets, lengths, text, text_lengths)


def line_log_likelihoods(model: torch.nn.Module, batch: SynthesisBatch, slope: float,
                         state: SynthesisState | None = None) -> tuple[Tensor, SynthesisOutput]:
    """Each line's total log-likelihood given its text (B,), nats, and the model's output; from
    `state` (a later chunk's) or from zeros. Calls the module itself (not sequence_log_likelihood),
    so that it also runs through the trainer's DDP wrapper."""
    output = model(batch.inputs(), batch.text, state=state, lengths=batch.lengths, slope=slope)
    per_point = mixture_log_likelihood(output.params, batch.offsets)
    valid = torch.arange(batch.offsets.shape[1], device=per_point.device)[None, :] < batch.lengths[:, None]
    return (per_point * valid).sum(dim=1), output


@torch.no_grad()
def evaluate_lines(model: torch.nn.Module, lines: Sequence[tuple[Tensor, str]], alphabet: Alphabet,
                   batch_size: int, slope: float, progress: bool = False) -> Evaluation:
    """The paper's metric over `lines`, each given its text, with its interval and the boundaries'
    rates (scoring.py's numbers); a line whose log-likelihood is not finite is named (by its text)."""
    if not lines:
        raise ValueError("nothing to evaluate: no lines")
    device = next(model.parameters()).device

    def score(chosen: Sequence[int]) -> tuple[Tensor, BoundaryCounts]:
        batch = move_to(collate_lines([lines[i] for i in chosen], alphabet), device)
        log_likelihoods, output = line_log_likelihoods(model, batch, slope)
        return log_likelihoods, BoundaryCounts.of_batch(output.boundaries, batch.offsets, batch.lengths)

    batches = [range(begin, min(begin + batch_size, len(lines))) for begin in range(0, len(lines), batch_size)]
    totals, counts = score_in_batches(model, batches, len(lines), score, progress)
    check_finite(totals, [offsets for offsets, _ in lines], [repr(text) for _, text in lines])
    return summarise(totals, sum(len(offsets) for offsets, _ in lines), counts)


def iam_lines(path: str | Path, split: str, scheme: str = "paper") -> tuple[list[tuple[Tensor, str]], dict]:
    """(offsets, text) of every transcribed line of one split, normalised with the scheme's
    training statistics, and those statistics."""
    from data_prep.dataset import HandwritingDataset  # data_prep is needed only to read the prepared file

    dataset = HandwritingDataset(path, split=split, scheme=scheme)
    lines = [dataset[i] for i in range(len(dataset)) if dataset.texts[i]]
    stats = {"mean": [float(v) for v in dataset.stats["mean"]], "std": [float(v) for v in dataset.stats["std"]]}
    return lines, stats


def evaluate_synthesis(checkpoint: str | Path, data: str | Path, split: str = "test", batch_size: int = 32,
                       max_lines: int | None = None, device: torch.device | str = "cpu",
                       progress: bool = False) -> Evaluation:
    """The paper's metric for a synthesis checkpoint: the mean log-likelihood per line of one split
    (nats; of its first `max_lines` transcribed lines if given), each line given its text, on the
    scheme the checkpoint was trained on."""
    loaded = load_synthesis_model(checkpoint)
    lines, stats = iam_lines(data, split, loaded.metadata.get("scheme", "paper"))
    if stats != {key: list(value) for key, value in loaded.stats.items()}:
        raise ValueError(f"{data}: its normalisation statistics differ from those {checkpoint} was trained with")
    lines = lines[:max_lines]
    if not lines:
        raise ValueError(f"{data}: no transcribed lines in the {split} split to evaluate")
    loaded.model.impl = "auto"  # the fastest loop there is: the same numbers up to rounding
    return evaluate_lines(loaded.model.to(device), lines, loaded.model.alphabet, batch_size, loaded.slope, progress)
