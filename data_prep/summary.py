"""`handwriting-hm summary`: what a prepared IAM-OnDB file holds, in words and in a picture.

Prints the lines per split of every scheme, samples per line (min / mean / max), the
transcription alphabet and the preparation report's warnings and skipped items; `--png` draws a
few random lines from the file (offsets summed back into pen positions), titled with their text,
so a person can see that preparation went right.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from data_prep.prepared_file import load_prepared
from data_prep.splits import SCHEMES, select


def summarise(path: str | os.PathLike) -> str:
    """The summary text of the prepared file at `path`."""
    arrays, metadata = load_prepared(path)
    lengths = np.diff(arrays["starts"])
    texts = arrays["texts"].tolist()
    out = [f"{path}: {len(lengths)} lines, {int(lengths.sum())} points (format {metadata['format_version']})"]
    for scheme, named_splits in SCHEMES.items():
        if scheme not in metadata["stats"]:
            out.append(f"{scheme}: not available (prepared without split lists)")
            continue
        stats = metadata["stats"][scheme]
        out.append(f"{scheme}: train mean (dx, dy) = ({stats['mean'][0]:.3f}, {stats['mean'][1]:.3f}), "
                   f"std = ({stats['std'][0]:.3f}, {stats['std'][1]:.3f})")
        for split in named_splits:
            chosen = lengths[select(scheme, split, arrays["paper_split"], arrays["official_list"])]
            if len(chosen):
                out.append(f"  {split:<10} {len(chosen):6d} lines, points per line "
                           f"min {chosen.min()} / mean {chosen.mean():.1f} / max {chosen.max()}")
            else:
                out.append(f"  {split:<10}      0 lines")
    alphabet = sorted(set("".join(texts)))
    out.append(f"alphabet ({len(alphabet)} symbols): {''.join(alphabet)!r}")
    out.append(f"lines without transcription: {sum(1 for text in texts if not text)}")
    report = metadata["report"]
    if report["cleaning"]:
        out.append("cleaning: " + ", ".join(f"{name} {n}" for name, n in report["cleaning"].items()))
    out.extend(f"warning at preparation: {warning}" for warning in report.get("warnings", []))  # absent before
    out.append(f"skipped at preparation: {len(report['skipped'])}")
    out.extend(f"  {item}: {why}" for item, why in report["skipped"])
    return "\n".join(out)


def draw_lines(path: str | os.PathLike, png: str | os.PathLike, count: int = 4, seed: int = 0) -> list[str]:
    """Draw `count` random lines of the prepared file into `png`; returns their ids."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    arrays, _ = load_prepared(path)
    starts = arrays["starts"]
    chosen = np.random.default_rng(seed).choice(len(starts) - 1, size=min(count, len(starts) - 1), replace=False)
    figure, axes = plt.subplots(len(chosen), 1, figsize=(10, 1.8 * len(chosen)), squeeze=False)
    for axis, line in zip(axes[:, 0], chosen):
        offsets = arrays["offsets"][starts[line] : starts[line + 1]]
        positions = np.cumsum(offsets[:, :2], axis=0)
        ends = np.flatnonzero(offsets[:, 2] > 0) + 1
        for stroke in np.split(positions, ends):
            if len(stroke):
                axis.plot(stroke[:, 0], stroke[:, 1], color="black", linewidth=1)
        axis.set_aspect("equal")
        axis.axis("off")
        axis.set_title(f"{arrays['line_ids'][line]}: {arrays['texts'][line]}", fontsize=9, loc="left")
    figure.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png, dpi=100)
    plt.close(figure)
    return [str(arrays["line_ids"][line]) for line in chosen]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `handwriting-hm summary`."""
    parser.add_argument("prepared", type=Path, help="a file written by `handwriting-hm prepare`")
    parser.add_argument("--png", type=Path, default=None, help="also draw random lines into this PNG")
    parser.add_argument("--lines", type=int, default=4, help="how many lines to draw (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="which random lines (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Run `handwriting-hm summary`."""
    print(summarise(args.prepared))
    if args.png is not None:
        drawn = draw_lines(args.prepared, args.png, args.lines, args.seed)
        print(f"drew {', '.join(drawn)} into {args.png}")
    return 0
