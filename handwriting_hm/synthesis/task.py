"""Training the synthesis model with the shared Trainer (checkpoints, resume, logs as for every task).

`SynthesisTask` trains on whole lines, each with its text: a batch pads the offsets after each
line's end and the one-hot texts with zero rows after theirs, and the loss is the mean negative
log-likelihood per valid point. Validation reports it per point and per sequence (nats, Graves's
and the HM-LSTM paper's convention).

With `chunk_points` it trains the same batches of whole lines in consecutive chunks of that many
points, one optimiser step each, the state (core, window position, window vector) carried from
chunk to chunk and cut from the graph between them: truncated BPTT, as the language model trains.
The forward pass is the whole line's, so the log-likelihoods of a line's chunks add up to the
line's; what changes is that a line gives several updates instead of one (IAM-OnDB lines have
about 650 points), and that no gradient reaches back across a chunk's start.

On IAM-OnDB (`train_synthesis`, or `handwriting-hm train --preset synthesis --data FILE --run-dir
DIR`, whose flags `train.py` shares with the handwriting presets through `hmlstm/presets.py`): the
alphabet is every character of the prepared file's transcriptions, lines without a transcription
are left out (8 in the release), `resume` continues a run exactly and `init_from` starts one from
another synthesis model's weights. `evaluate.evaluate_synthesis` gives the paper's metric, the test
log-likelihood per line, each given its text.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from .alphabet import Alphabet, alphabet_of_prepared
from .evaluate import SynthesisBatch, collate_lines, evaluate_lines, iam_lines, line_log_likelihoods
from ..hmlstm.checkpoint import load_checkpoint
from ..hmlstm.core import LEARNING_ONLY
from ..hmlstm.trainer import (LATEST, Trainer, TrainingTask, distributed_from_env, seed_everything, shard_batches,
                             share_lines)
# the settings and the preset, defined without torch (for the parser); clients import them here too
from .config import KIND, PRESET_NAME, PRESETS, SynthesisConfig, SynthesisPreset, SynthesisTaskSettings
from .model import SynthesisModel, SynthesisState

__all__ = ["PRESET_NAME", "PRESETS", "SynthesisPreset", "SynthesisTask", "SynthesisTaskSettings", "chunks", "main",
           "train_synthesis"]


def chunks(batch: SynthesisBatch, points: int) -> Iterator[SynthesisBatch]:
    """`batch`'s lines in consecutive pieces of `points` points (the last may be shorter), each with
    its rows' valid points in `lengths` (0 for a line that has ended) and the point before it."""
    for start in range(0, batch.offsets.shape[1], points):
        yield SynthesisBatch(batch.offsets[:, start:start + points], (batch.lengths - start).clamp(0, points),
                             batch.text, batch.text_lengths, None if start == 0 else batch.offsets[:, start - 1])


class SynthesisTask(TrainingTask):
    """Shuffled batches of whole lines with their texts (in chunks of `chunk_points` points with the
    state carried, if given); mean NLL per point; validation per point and per whole line."""

    def __init__(self, alphabet: Alphabet, train_lines: Sequence[tuple[Tensor, str]],
                 validation_lines: Sequence[tuple[Tensor, str]], batch_size: int, slope: float = 1.0,
                 seed: int = 0, chunk_points: int | None = None) -> None:
        if batch_size < 1 or not train_lines or not validation_lines:
            raise ValueError("need batch_size >= 1 and at least one training and one validation line")
        if chunk_points is not None and chunk_points < 1:
            raise ValueError(f"chunk_points must be at least 1 (or None for whole lines), got {chunk_points}")
        for _, text in (*train_lines, *validation_lines):
            alphabet.check(text)  # fail before training, not in the middle of an epoch
        self.alphabet = alphabet
        self.train_lines = list(train_lines)
        self.validation_lines = list(validation_lines)
        self.batch_size = batch_size
        self.slope = slope
        self.seed = seed
        self.chunk_points = chunk_points
        self.state: SynthesisState | None = None  # carried from one chunk to the next

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
        where = distributed_from_env()
        if self.chunk_points is None:
            every = (collate_lines([self.train_lines[i] for i in group], self.alphabet) for group in shuffled)
            return shard_batches(every, where.rank, where.world_size)
        return self._chunked(shuffled, where.rank, where.world_size)

    def _chunked(self, groups: list[list[int]], rank: int, world_size: int) -> Iterator[SynthesisBatch]:
        # every process goes as far as the group's longest line, so all take the same number of steps
        for mine, group in share_lines(groups, rank, world_size):
            longest = max(len(self.train_lines[i][0]) for i in group)
            yield from chunks(collate_lines([self.train_lines[i] for i in mine], self.alphabet, longest),
                              self.chunk_points)

    def on_epoch_start(self, epoch: int) -> None:
        self.state = None

    def loss(self, model: torch.nn.Module, batch: SynthesisBatch) -> tuple[Tensor, int]:
        state = None if batch.previous is None or self.state is None else self.state.to(batch.offsets.device)
        log_likelihoods, output = line_log_likelihoods(model, batch, self.slope, state)
        if self.chunk_points is not None:
            carried = output.state.detach()
            self.state = carried if all(bool(torch.isfinite(t).all()) for t in carried.tensors()) else None
        points = int(batch.lengths.sum())
        # a process whose lines have all ended before this chunk (DDP) has no point: its loss is 0
        return -log_likelihoods.sum() / max(points, 1), points

    def state_dict(self) -> dict:
        return {"carried": None if self.state is None else [t.cpu() for t in self.state.tensors()]}

    def load_state_dict(self, state: dict) -> None:
        carried = state.get("carried")
        self.state = None if carried is None else SynthesisState.from_tensors(carried)

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        result = evaluate_lines(model, self.validation_lines, self.alphabet, self.batch_size, self.slope)
        return {"val_loss": -result.nats_per_point, "val_ll_per_sequence": result.log_likelihood_per_sequence,
                **{f"val_boundary_rate_{l + 1}": rate for l, rate in enumerate(result.boundary_rate)}}


# ----------------------------------------------------------------------------- IAM-OnDB

def train_synthesis(data: str | Path, run_dir: str | Path, preset: SynthesisPreset, resume: bool = False,
                    init_from: str | Path | None = None, impl: str = "reference") -> dict:
    """Train (with `resume`, continue; with `init_from`, start from that synthesis model's weights) a
    synthesis model on a prepared IAM-OnDB file; the Trainer's summary. impl: see SynthesisModel."""
    model_config = preset.model
    train_lines, stats = iam_lines(data, "train", preset.scheme)
    source = Path(run_dir) / LATEST if resume else init_from
    if source is not None:  # its own model, whatever the preset says now, but for how a new run learns
        checkpoint = load_checkpoint(source, kind=KIND)
        model_config = SynthesisConfig.from_dict(checkpoint["config"])
        if init_from is not None:
            model_config = replace(model_config, **{name: getattr(preset.model, name) for name in LEARNING_ONLY
                                                     if hasattr(preset.model, name)})
        if checkpoint["metadata"].get("stats") != stats:  # the weights mean something only on data normalised so
            raise ValueError(f"{data}: its normalisation statistics differ from those {source} was trained with")
    elif not model_config.alphabet:
        model_config = SynthesisConfig(**{**asdict(model_config), "alphabet": alphabet_of_prepared(data).characters})
    alphabet = Alphabet(model_config.alphabet)
    validation, _ = iam_lines(data, "validation", preset.scheme)
    count = min(preset.validation_lines or len(validation), len(validation))
    step = max(1, len(validation) // count)
    seed_everything(preset.train.seed)  # the model's initial weights
    model = SynthesisModel(model_config, impl=impl)
    task = SynthesisTask(alphabet, train_lines, validation[::step][:count], preset.batch_size, seed=preset.train.seed,
                         chunk_points=preset.chunk_points)
    metadata = {"stats": stats, "scheme": preset.scheme, "data": str(data), "preset": PRESET_NAME,
                "task": preset.task().to_dict()}  # what `handwriting-hm train --resume` restores
    trainer = Trainer(model, task, preset.train, run_dir, kind=KIND, model_config=model_config.to_dict(),
                      metadata=metadata)
    return trainer.fit(resume=resume, init_from=init_from)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m handwriting_hm.synthesis.task ARGS`: the same as `handwriting-hm train --preset synthesis ARGS`."""
    from ..cli import main as handwriting_hm

    return handwriting_hm(["train", "--preset", PRESET_NAME, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
