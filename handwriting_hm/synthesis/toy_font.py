"""Proof that the synthesis model's window works, without the big model.

A made-up stroke font: each character is one pen stroke of a few fixed offsets, drawn with a
little Gaussian noise, with a pen-up after its last point. Lines are random strings. A small
synthesis model is trained on them by the shared Trainer on the CPU; it then writes held-out
strings, and a nearest-template reader decodes what it wrote. Only a model that writes the
character its window points at, and moves the window one character per stroke, reads back right.

    python -m handwriting_hm.synthesis.toy_font        # trains (about a minute of one CPU thread), prints the accuracy
"""
from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .alphabet import Alphabet
from ..hmlstm.trainer import TrainConfig, Trainer
from .legibility import edit_distance
from ..letter_boundaries import BoundaryHits, boundary_hits, character_ends
from .model import KIND, SynthesisConfig, SynthesisModel
from .generate import write_texts
from .task import SynthesisTask


@dataclass
class ToyFontConfig:
    characters: str = "abcdefghij"
    points_per_character: int = 4  # offsets per character stroke, the last one with the pen-up
    noise: float = 0.05  # std of the noise on every offset (the templates' offsets have std 1)
    min_characters: int = 2  # per line
    max_characters: int = 5
    seed: int = 0


@dataclass
class ToyTrainingConfig:
    train_lines: int = 2000
    validation_lines: int = 64
    test_lines: int = 100
    hidden_sizes: tuple[int, ...] = (64, 64)
    batch_size: int = 64
    lr: float = 5e-3
    max_steps: int = 600
    bias: float = 2.0  # Graves's sampling bias when writing the test lines: neat, near-mean strokes


class ToyFont:
    """Templates (V, P, 2): character v is the stroke of offsets templates[v], then a pen-up."""

    def __init__(self, config: ToyFontConfig) -> None:
        self.config = config
        self.alphabet = Alphabet(config.characters)
        generator = torch.Generator().manual_seed(config.seed)
        self.templates = torch.randn(len(config.characters), config.points_per_character, 2, generator=generator)

    def random_texts(self, count: int, generator: torch.Generator) -> list[str]:
        low, high = self.config.min_characters, self.config.max_characters
        lengths = torch.randint(low, high + 1, (count,), generator=generator).tolist()
        return ["".join(self.config.characters[i] for i in torch.randint(len(self.alphabet), (n,), generator=generator))
                for n in lengths]

    def write(self, text: str, generator: torch.Generator) -> Tensor:
        """The offsets (T, 3) of `text` in this font, with noise."""
        strokes = self.templates[self.alphabet.encode(text)]  # (U, P, 2)
        strokes = strokes + self.config.noise * torch.randn(strokes.shape, generator=generator)
        pen_up = torch.zeros(*strokes.shape[:2], 1)
        pen_up[:, -1] = 1.0
        return torch.cat([strokes, pen_up], dim=-1).flatten(0, 1)

    def read(self, offsets: Tensor) -> str:
        """Split (T, 3) offsets at the pen-ups and name each stroke's nearest template."""
        ends = (offsets[:, 2] > 0.5).nonzero().flatten().tolist()
        if not ends or ends[-1] != len(offsets) - 1:
            ends.append(len(offsets) - 1)  # a last stroke without its pen-up still counts
        text, begin = [], 0
        for end in ends:
            if end >= begin:
                stroke = resample(offsets[begin:end + 1, :2], self.config.points_per_character)
                distances = ((self.templates - stroke) ** 2).sum(dim=(1, 2))
                text.append(self.config.characters[int(distances.argmin())])
            begin = end + 1
        return "".join(text)

    def lines(self, texts: Sequence[str], generator: torch.Generator) -> list[tuple[Tensor, str]]:
        return [(self.write(text, generator), text) for text in texts]


def resample(stroke: Tensor, points: int) -> Tensor:
    """A stroke of n offsets (n, 2) as `points` offsets along the same path (linear in the point index)."""
    if len(stroke) == points:
        return stroke
    path = torch.cat([stroke.new_zeros(1, 2), stroke.cumsum(dim=0)])  # positions, the start included
    where = torch.linspace(0, len(stroke), points + 1)
    left = where.floor().long().clamp(max=len(stroke) - 1)
    fraction = (where - left)[:, None]
    positions = path[left] * (1 - fraction) + path[left + 1] * fraction
    return positions.diff(dim=0)


def character_accuracy(read: Sequence[str], truth: Sequence[str]) -> float:
    """1 - (edit distance / characters), over all lines together."""
    return 1.0 - sum(edit_distance(r, t) for r, t in zip(read, truth)) / sum(len(t) for t in truth)


def train_toy_model(font: ToyFont, config: ToyTrainingConfig, run_dir: str | Path,
                    quiet: bool = True) -> tuple[SynthesisModel, list[str]]:
    """Train a small synthesis model on random lines of `font` with the shared Trainer; return
    it and held-out test texts (none of which occurs among the training texts)."""
    generator = torch.Generator().manual_seed(font.config.seed + 1)
    train_texts = font.random_texts(config.train_lines, generator)
    seen = set(train_texts)
    test_texts = [text for text in font.random_texts(4 * config.test_lines, generator) if text not in seen]
    test_texts = test_texts[:config.test_lines]
    validation = font.lines(font.random_texts(config.validation_lines, generator), generator)
    model_config = SynthesisConfig(alphabet=font.config.characters, hidden_sizes=config.hidden_sizes,
                                   embedding_size=config.hidden_sizes[0], n_mixtures=3, layer_norm=True,
                                   initial_window_step=1.0 / font.config.points_per_character)
    torch.manual_seed(font.config.seed)
    model = SynthesisModel(model_config)
    task = SynthesisTask(font.alphabet, font.lines(train_texts, generator), validation, config.batch_size)
    trainer = Trainer(model, task, TrainConfig(lr=config.lr, max_steps=config.max_steps, eval_every=config.max_steps,
                                               device="cpu", quiet=quiet),
                      run_dir, kind=KIND, model_config=model_config.to_dict(), metadata={"toy_font": True})
    trainer.fit()
    return model.eval(), test_texts


class ToyResult(NamedTuple):
    accuracy: float  # of the characters read back from what the model wrote
    layer1_at_character_ends: BoundaryHits  # z^1 firings on the last point of a character (the window's)


def evaluate_toy(font: ToyFont, model: SynthesisModel, texts: Sequence[str], bias: float) -> ToyResult:
    """Write every text once and read it back: the character accuracy, and where layer 1's boundaries fell."""
    written = write_texts(model, texts, bias=bias, generator=torch.Generator().manual_seed(0))
    read, lines = [], []
    for offsets, length, boundaries, log_phi, text in zip(written.offsets, written.lengths, written.boundaries,
                                                          written.log_phi, texts):
        read.append(font.read(offsets[:length]))
        attended = log_phi[:length, :len(text)].argmax(dim=-1).numpy()
        lines.append(boundary_hits(boundaries[:length, 0].numpy(), character_ends(attended), tolerance=0))
    return ToyResult(character_accuracy(read, texts), BoundaryHits(*(sum(column) for column in zip(*lines))))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m handwriting_hm.synthesis.toy_font", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=ToyTrainingConfig.max_steps, help="training steps")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    font = ToyFont(ToyFontConfig())
    config = ToyTrainingConfig(max_steps=args.steps)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as run_dir:
        model, texts = train_toy_model(font, config, run_dir, quiet=False)
    trained = time.monotonic() - started
    result = evaluate_toy(font, model, texts, config.bias)
    hits = result.layer1_at_character_ends
    print(f"toy font: {len(texts)} held-out lines written at bias {config.bias:g}, character accuracy "
          f"{result.accuracy:.1%} (training {trained:.0f} s, {config.max_steps} steps, 1 thread); "
          f"z1 fired {hits.firings} times, {hits.hit_rate:.1%} of them on a character's last point "
          f"(chance {hits.chance_rate:.1%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
