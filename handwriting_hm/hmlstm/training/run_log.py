"""The run's log (log.jsonl: one JSON record per line, appended across resumes) and the learning curves drawn
from it (curves.png: train loss, the validation metric, the learning rate and the detectors' health)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..atomic import atomic_write

LOG = "log.jsonl"
CURVES = "curves.png"


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append_log(log_path: Path, record: dict) -> None:
    """Append one JSON record as a line and flush it, so a crash loses at most that line."""
    line = json.dumps({key: _json_safe(value) for key, value in record.items()}, allow_nan=False)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def read_log(log_path: str | Path) -> list[dict]:
    """The records of a log.jsonl; a torn last line (crash mid-write) is ignored."""
    records = []
    for line in Path(log_path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_learning_curves(log_path: str | Path, png_path: str | Path, metric: str = "val_loss") -> None:
    """Draw train loss, validation `metric` and the learning rate against steps from a log.jsonl.

    When a run was resumed, steps logged after its checkpoint appear twice in the log;
    the latest record of each step wins.
    """
    # Figure without pyplot: no global backend state, safe to call from any thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    for record in read_log(log_path):
        if record.get("type") == "train":
            train[record["step"]] = record
        elif record.get("type") == "val":
            val[record["step"]] = record

    detectors = sorted({int(key[1:-5]) for record in val.values() for key in record
                        if key.startswith("z") and key.endswith("_rate")})
    figure = Figure(figsize=(9, 8 if detectors else 6))
    figure.subplots_adjust(left=0.09, right=0.98, top=0.97, bottom=0.08, hspace=0.08)
    FigureCanvasAgg(figure)
    axes = figure.subplots(3 if detectors else 2, 1, sharex=True, height_ratios=[3, 1, 1.5] if detectors else [3, 1])
    losses, rates = axes[0], axes[1]
    train_points = [(step, r["loss"]) for step, r in sorted(train.items()) if r.get("loss") is not None]
    val_points = [(step, r[metric]) for step, r in sorted(val.items()) if r.get(metric) is not None]
    if train_points:
        losses.plot(*zip(*train_points), label="train loss", linewidth=1)
    if val_points:
        losses.plot(*zip(*val_points), "o-", label=metric, markersize=3)
    losses.set_ylabel("loss")
    losses.grid(alpha=0.3)
    if train_points or val_points:
        losses.legend()
    rate_points = [(step, r["lr"]) for step, r in sorted(train.items()) if r.get("lr")]
    if rate_points:
        rates.plot(*zip(*rate_points), color="tab:green", drawstyle="steps-post")
        rates.set_yscale("log")
    rates.set_ylabel("learning rate")
    rates.grid(alpha=0.3)
    if detectors:  # the detectors' health: firing rate (solid) and share in the straight-through window (dashed)
        health = axes[2]
        for l in detectors:
            for key, style in ((f"z{l}_rate", "-"), (f"z{l}_window", "--")):
                points = [(step, r[key]) for step, r in sorted(val.items()) if r.get(key) is not None]
                if points:
                    health.plot(*zip(*points), style, marker="o", markersize=2, color=f"C{l - 1}",
                                label=f"z{l} {'rate' if key.endswith('rate') else 'in window'}")
        health.set_ylim(-0.02, 1.02)
        health.set_ylabel("detectors")
        health.legend(fontsize=7, ncol=2)
        health.grid(alpha=0.3)
    axes[-1].set_xlabel("step")

    with atomic_write(png_path) as file:
        figure.savefig(file, format="png", dpi=100)
