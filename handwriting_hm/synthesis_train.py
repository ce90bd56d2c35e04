"""Training the synthesis model with the shared Trainer (checkpoints, resume, logs as for every task).

`SynthesisTask` trains on whole lines, each with its text: a batch pads the offsets after each
line's end and the one-hot texts with zero rows after theirs, and the loss is the mean negative
log-likelihood per valid point. Validation reports it per point and per sequence (nats, Graves's
and the HM-LSTM paper's convention).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor

from .alphabet import Alphabet
from .hmlstm.trainer import TrainingTask, distributed_from_env, shard_batches


@dataclass
class SynthesisBatch:
    offsets: Tensor  # (B, T, 3) normalised offsets, zeros past each line's end
    lengths: Tensor  # (B,) points per line
    text: Tensor  # (B, U, V) one-hot characters, zero rows past each text's end
    text_lengths: Tensor  # (B,) characters per text


def collate_lines(lines: Sequence[tuple[Tensor, str]], alphabet: Alphabet) -> SynthesisBatch:
    """Pad (offsets (T_i, 3), text) pairs into one batch."""
    lengths = torch.tensor([len(offsets) for offsets, _ in lines], dtype=torch.long)
    offsets = torch.zeros(len(lines), int(lengths.max()), 3)
    for row, (line, _) in enumerate(lines):
        offsets[row, :len(line)] = line
    text, text_lengths = alphabet.one_hot([text for _, text in lines])
    return SynthesisBatch(offsets, lengths, text, text_lengths)


class SynthesisTask(TrainingTask):
    """Shuffled batches of whole lines with their texts; mean NLL per point; validation per point and per line."""

    def __init__(self, alphabet: Alphabet, train_lines: Sequence[tuple[Tensor, str]],
                 validation_lines: Sequence[tuple[Tensor, str]], batch_size: int, slope: float = 1.0,
                 seed: int = 0) -> None:
        if batch_size < 1 or not train_lines or not validation_lines:
            raise ValueError("need batch_size >= 1 and at least one training and one validation line")
        for _, text in (*train_lines, *validation_lines):
            alphabet.check(text)  # fail before training, not in the middle of an epoch
        self.alphabet = alphabet
        self.train_lines = list(train_lines)
        self.validation_lines = list(validation_lines)
        self.batch_size = batch_size
        self.slope = slope
        self.seed = seed

    def batches(self, epoch: int) -> Iterator[SynthesisBatch]:
        # Lines of about the same length go together, so that little of a batch is padding; the
        # order comes from a generator seeded by the epoch, so batches(epoch) is repeatable.
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.train_lines), generator=generator).tolist()
        pool = 50 * self.batch_size
        groups = []
        for begin in range(0, len(order), pool):
            by_length = sorted(order[begin:begin + pool], key=lambda i: len(self.train_lines[i][0]))
            groups += [by_length[i:i + self.batch_size] for i in range(0, len(by_length), self.batch_size)]
        shuffled = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
        every = (collate_lines([self.train_lines[i] for i in group], self.alphabet) for group in shuffled)
        where = distributed_from_env()
        return shard_batches(every, where.rank, where.world_size)

    def loss(self, model: torch.nn.Module, batch: SynthesisBatch) -> tuple[Tensor, int]:
        points = int(batch.lengths.sum())
        log_likelihood, _ = model.sequence_log_likelihood(batch.offsets, batch.text, lengths=batch.lengths,
                                                          slope=self.slope)
        return -log_likelihood.sum() / points, points

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        total, points = 0.0, 0
        for begin in range(0, len(self.validation_lines), self.batch_size):
            batch = collate_lines(self.validation_lines[begin:begin + self.batch_size], self.alphabet)
            log_likelihood, _ = model.sequence_log_likelihood(batch.offsets.to(device), batch.text.to(device),
                                                              lengths=batch.lengths.to(device), slope=self.slope)
            total += float(log_likelihood.sum())
            points += int(batch.lengths.sum())
        return {"val_loss": -total / points, "val_ll_per_sequence": total / len(self.validation_lines)}
