"""`hm-lm compare` and `handwriting-hm compare`: a table of training runs from their logs, for comparing
recipes at equal budgets.

For each run folder it reads log.jsonl: the validation record with the lowest `val_loss` (the trainer's
metric) among those measured as the free model is (a validation taken while an oracle forced the
boundaries, `val_oracle`, is another measure and is left out), the steps it took to get there, the
task's headline figure (BPC for the language model, the log-likelihood per sequence for handwriting),
the detectors' figures logged with it (firing rate, precision, recall, F1 and lift at the task's events,
share in the straight-through window; for handwriting, where logged, precision and lift at the words'
starts), and the mean training speed (steps/s over the "train" records).
--steps N and --minutes M hold every run to the same budget: only validations at step <= N and within M
minutes of training time (`elapsed_s`, summed over resumes) count. Prints a Markdown table, or JSON lines
with --json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .run_log import LOG, read_log

DETECTOR_FIGURES = ("rate", "precision", "recall", "f1", "lift", "window")
# where a handwriting run's validation knew the lines' words: precision and lift at the words' starts
WORD_FIGURES = ("word_precision", "word_lift")
# the tasks' headline figures, as logged, and their column titles
HEADLINES = {"val_bpc": "val BPC", "val_ll_per_sequence": "val LL/sequence"}


def summarise(run_dir: Path, max_step: int | None = None, max_minutes: float | None = None) -> dict:
    """The best free validation record of a run (within the budget, if given), its headline figure, its
    detectors' figures and its mean speed."""
    log = run_dir / LOG
    if not log.is_file():
        raise ValueError(f"{run_dir}: no {LOG} here (not a run folder?)")
    records = read_log(log)
    validations = [r for r in records if r.get("type") == "val" and r.get("val_loss") is not None
                   and (max_step is None or r["step"] <= max_step)
                   and (max_minutes is None or r.get("elapsed_s", 0.0) <= 60.0 * max_minutes)]
    if not validations:
        raise ValueError(f"{run_dir}: the run has not validated yet" + ("" if max_step is None and max_minutes is None
                                                                         else " within the budget"))
    free = [r for r in validations if not r.get("val_oracle")]
    if not free:
        raise ValueError(f"{run_dir}: every validation so far forced the boundaries (the oracle): none is free yet")
    best = min(free, key=lambda r: r["val_loss"])
    speeds = [r["steps_per_s"] for r in records if r.get("type") == "train" and r.get("steps_per_s")]
    summary = {"run": run_dir.name, "step": best["step"], "last_step": validations[-1]["step"],
               "minutes": best.get("elapsed_s", 0.0) / 60.0, "steps_per_s": sum(speeds) / len(speeds) if speeds else None}
    summary.update({key: best[key] for key in HEADLINES if best.get(key) is not None})
    for key, value in best.items():
        if key.startswith("z") and key.split("_", 1)[-1] in DETECTOR_FIGURES + WORD_FIGURES:
            summary[key] = value
    return summary


def table(summaries: list[dict]) -> str:
    """A Markdown table of `summarise` results, one row per run."""
    headlines = [key for key in HEADLINES if any(key in s for s in summaries)]
    detectors = sorted({key.split("_")[0] for s in summaries for key in s if key.startswith("z")})
    words = [figure for figure in WORD_FIGURES if any(f"{d}_{figure}" in s for s in summaries for d in detectors)]
    head = (["run", "best step"] + [HEADLINES[key] for key in headlines]
            + [f"{d} {f}" for d in detectors for f in ("rate", "precision", "recall", "F1", "lift", "in window")]
            + [f"{d} {figure.replace('_', ' ')}" for d in detectors for figure in words] + ["steps/s"])

    def cell(value, digits: int = 3) -> str:
        return "–" if value is None else f"{value:.{digits}f}"

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summaries:
        row = [s["run"], str(s["step"])]
        row += [cell(s.get(key), 3 if key == "val_bpc" else 1) for key in headlines]
        row += [cell(s.get(f"{d}_{f}"), 2) for d in detectors for f in DETECTOR_FIGURES]
        row += [cell(s.get(f"{d}_{figure}"), 2) for d in detectors for figure in words]
        row.append(cell(s["steps_per_s"], 2))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run folders (each with a log.jsonl)")
    parser.add_argument("--json", action="store_true", help="one JSON line per run instead of the table")
    parser.add_argument("--steps", type=int, help="count only validations at step <= N (an equal step budget)")
    parser.add_argument("--minutes", type=float, help="count only validations within M minutes of training time")


def run(args: argparse.Namespace) -> int:
    summaries, left_out = [], []
    for folder in args.runs:
        try:
            summaries.append(summarise(Path(folder), args.steps, args.minutes))
        except ValueError as error:  # the others are still worth a table
            left_out.append(str(error))
    if not summaries:
        raise ValueError("; ".join(left_out))
    print("\n".join(json.dumps(s) for s in summaries) if args.json else table(summaries))
    for reason in left_out:
        print(f"left out {reason}", file=sys.stderr)
    return 0
