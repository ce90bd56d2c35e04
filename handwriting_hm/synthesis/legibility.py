"""How legible written lines are, read by an off-the-shelf recogniser.

A line is drawn as a PNG (drawing.render_png, ink only) and read by Tesseract, Debian's
`tesseract-ocr` package, run as a program: no Python dependency. Tesseract is trained on print,
not on handwriting, so its absolute error rates on handwriting are high; what it gives is a fixed
reader to compare two sets of lines with: the real IAM-OnDB lines of some texts against lines a
synthesis model writes for the same texts.

The character error rate (CER) of a line is the edit distance (insertions, deletions,
substitutions) from the line's text to what was read, over the text's length; a set of lines
scores the summed distances over the summed lengths. Whitespace runs are made single spaces on
both sides first, and case counts.

    handwriting-hm legibility --data iam.npz --lines 50                      # the real lines only
    handwriting-hm legibility --data iam.npz --lines 50 --synthesis best.pt  # and the model's
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

from ..hmlstm.atomic import atomic_write

Recogniser = Callable[[Path], str]  # a PNG of one line -> the text read


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions that turn one into the other."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def normalise_spaces(text: str) -> str:
    return " ".join(text.split())


class ErrorRate(NamedTuple):
    lines: int
    errors: int  # summed edit distances
    characters: int  # summed reference lengths

    @property
    def rate(self) -> float:
        return self.errors / self.characters if self.characters else float("nan")


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRate:
    """The summed edit distance over the summed reference length, spaces normalised on both sides."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} readings")
    pairs = [(normalise_spaces(r), normalise_spaces(h)) for r, h in zip(references, hypotheses)]
    return ErrorRate(len(pairs), sum(edit_distance(r, h) for r, h in pairs), sum(len(r) for r, _ in pairs))


def tesseract_recogniser(executable: str = "tesseract") -> Recogniser:
    """Tesseract reading one line of text (page segmentation mode 7). ValueError (one line) if it is not installed."""
    found = shutil.which(executable)
    if found is None:
        raise ValueError(f"{executable} not found: install Tesseract (Debian, Ubuntu: apt install tesseract-ocr)")

    def recognise(png: Path) -> str:
        result = subprocess.run([found, str(png), "stdout", "--psm", "7"], capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            raise ValueError(f"{executable} failed on {png}: {result.stderr.strip().splitlines()[-1:]}")
        return result.stdout.strip()

    return recognise


def read_lines(lines: Sequence[np.ndarray], recognise: Recogniser, description: str = "reading") -> list[str]:
    """Draw each line (raw offsets (T, 3)) as a PNG, ink only, and read it."""
    from ..drawing.png import render_png  # matplotlib: imported here, so that --help answers at once

    readings = []
    with tempfile.TemporaryDirectory() as folder:
        for index, offsets in enumerate(tqdm(lines, desc=description, unit="line", leave=False)):
            png = Path(folder) / f"line{index}.png"
            render_png(offsets, path=png)
            readings.append(recognise(png))
    return readings


# ----------------------------------------------------------------------------- CLI

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, type=Path, help="prepared file from `handwriting-hm prepare`")
    parser.add_argument("--lines", type=int, default=50, help="lines of the split to read, spread over it (default 50)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--scheme", default="paper", help="split scheme of the prepared file (default paper)")
    parser.add_argument("--synthesis", type=Path, help="also write the same texts with this synthesis model")
    parser.add_argument("--bias", type=float, default=1.0, help="Graves's sampling bias for the model (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write every text and reading as JSON here")


def run(args: argparse.Namespace) -> int:
    from data_prep.dataset import HandwritingDataset  # CLI glue: reading the prepared file

    if args.lines < 1:
        raise ValueError(f"--lines must be at least 1, got {args.lines}")
    recognise = tesseract_recogniser()
    dataset = HandwritingDataset(args.data, split=args.split, scheme=args.scheme)
    chosen = np.linspace(0, len(dataset) - 1, min(args.lines, len(dataset))).round().astype(int)
    real, texts = [], []
    for index in chosen:
        offsets, text = dataset[int(index)]
        real.append(dataset.denormalise(offsets).numpy())
        texts.append(text)
    report = {"recogniser": "tesseract --psm 7", "split": args.split, "texts": texts,
              "real": read_lines(real, recognise, "reading the real lines")}
    rows = [("real IAM-OnDB lines", character_error_rate(texts, report["real"]))]
    if args.synthesis is not None:
        from .model import load_synthesis_model
        from .write import check_synthesis_checkpoint, write_in_batches

        loaded = load_synthesis_model(check_synthesis_checkpoint(args.synthesis))
        written = write_in_batches(texts, loaded, bias=args.bias, seed=args.seed, progress="writing the lines")
        report["generated"] = read_lines([line.offsets for line in written], recognise, "reading the written lines")
        rows.append((f"written by {args.synthesis.name} (bias {args.bias:g})",
                     character_error_rate(texts, report["generated"])))
    print(f"Tesseract on {len(texts)} lines of the {args.split} split:")
    for name, score in rows:
        print(f"  {name}: CER {score.rate:.1%} ({score.errors} errors in {score.characters} characters)")
    if args.out is not None:
        with atomic_write(args.out) as file:
            file.write(json.dumps(report, indent=1, ensure_ascii=False).encode("utf-8"))
    return 0
