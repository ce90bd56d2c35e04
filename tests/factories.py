"""Small data and models the tests build for themselves (shared by several test files)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from data_prep.prepare import prepare
from handwriting_hm.hmlstm.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel

TINY = HandwritingConfig(hidden_sizes=(16, 16, 16), embedding_size=16, n_mixtures=3)


def stroke_xml(strokes: list[list[tuple[int, int]]]) -> str:
    """A line stroke file in the release's exact layout."""
    body = []
    for stroke in strokes:
        body.append('    <Stroke colour="black" start_time="1.00" end_time="2.00">')
        body.extend(f'      <Point x="{x}" y="{y}" time="1.{i:02d}"/>\r' for i, (x, y) in enumerate(stroke))
        body.append("    </Stroke>")
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession>\n  <WhiteboardDescription>\n'
        '    <DiagonallyOppositeCoords x="6512" y="1376"/>\n  </WhiteboardDescription>\n  <StrokeSet>\n'
        + "\n".join(body)
        + "\n  </StrokeSet>\n</WhiteboardCaptureSession>\n"
    )


def transcription(lines: list[str]) -> str:
    return "OCR:\r\n\r\nprinted prompt\r\n\r\nCSR:\r\n\r\n" + "\r\n".join(lines) + "\r\n"


def random_strokes(rng: np.random.Generator, n_points: int) -> list[list[tuple[int, int]]]:
    """`n_points` samples of a pen walk, split into strokes of 5 to 20 samples."""
    xy = np.cumsum(rng.integers(-20, 21, size=(n_points, 2)), axis=0) + 1000
    strokes, begin = [], 0
    while begin < n_points:
        end = min(n_points, begin + int(rng.integers(5, 21)))
        strokes.append([(int(x), int(y)) for x, y in xy[begin:end]])
        begin = end
    return strokes


def make_prepared(folder: Path, n_forms: int = 6) -> Path:
    """10 lines of 20 to 59 samples per form, prepared with no length filter (paper split 90/5/5)."""
    rng = np.random.default_rng(0)
    root = folder / "iam"
    for f in range(n_forms):
        form = f"a{f:02d}-000u"
        for k in range(1, 11):
            path = root / "lineStrokes" / form[:3] / form[:7] / f"{form}-{k:02d}.xml"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(stroke_xml(random_strokes(rng, int(rng.integers(20, 60)))), encoding="latin-1")
        text = root / "ascii" / form[:3] / form[:7] / f"{form}.txt"
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text(transcription([f"line {k}" for k in range(1, 11)]))
    out = folder / "iam.npz"
    prepare(root / "lineStrokes", root / "ascii", out, None, min_points=0, workers=1, progress=False)
    return out


def write_tiny_checkpoint(path: Path, stats: dict | None = None, **config_changes) -> Path:
    """A 3 x 16 HM-LSTM with random weights (TINY, with config_changes), saved as a loadable handwriting checkpoint."""
    torch.manual_seed(0)
    config = dataclasses.replace(TINY, **config_changes)
    model = HandwritingModel(config)
    save_checkpoint(path, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "handwriting",
        "config": config.to_dict(), "model": model.state_dict(),
        "metadata": {"stats": stats or {"mean": [0.0, 0.0], "std": [1.0, 1.0]}},
    })
    return path
