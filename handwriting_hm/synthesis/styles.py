"""Where a style (a real line to prime the synthesis model with, Graves §5.5) comes from.

A style is `(offsets, text)`: the line's offsets (T, 3) = dx, dy, end_of_stroke in the raw units
of the training data (IAM-OnDB sensor units, y up), and the text it says. Sources:

- a line of a prepared IAM-OnDB file, by id (`style_from_line`);
- strokes as a pen records them (`style_from_strokes`): a list of pen-down strokes, each a list
  of (x, y) in screen coordinates (y down, as a canvas gives them), flipped to y up here;
- a file of such strokes (`style_from_file`): JSON `{"text": "...", "strokes": [[[x, y], ...], ...]}`
  or InkML (`<trace>` elements of "x y" pairs; the text from `<annotation type="transcription">`
  or the `text` argument).

The coordinates are used as they are: strokes in other units than the training data's (canvas
pixels, say) should be scaled by the caller first.

Bounds (docs/limits.md): a style file of at most MAX_FILE_BYTES, at most MAX_POINTS points (the
longest IAM-OnDB line has 1,940), coordinates within +-MAX_COORDINATE, a text of at most
MAX_TEXT characters; anything outside them is refused with one line before any work.
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Sequence

import numpy as np

INKML = "{http://www.w3.org/2003/InkML}"
MAX_FILE_BYTES = 10 * 2**20
MAX_POINTS = 3_000  # the model reads about 300 style points a second on one busy core (measured)
MAX_COORDINATE = 1e6  # sensor units, as the training data
MAX_TEXT = 300  # characters, as the text to write
EXPECTED = "a list of strokes, each a non-empty list of [x, y] points"


def check_style(offsets: np.ndarray, text: str) -> None:
    """Raise ValueError, one line, for a style outside the bounds: more than MAX_POINTS points, a text
    that is not a string of at most MAX_TEXT characters."""
    if len(offsets) > MAX_POINTS:
        raise ValueError(f"a style has at most {MAX_POINTS:,} points, got {len(offsets):,}")
    if not isinstance(text, str):
        raise ValueError(f"a style's text must be a string, got {text!r:.80}")
    if len(text) > MAX_TEXT:
        raise ValueError(f"a style's text has at most {MAX_TEXT} characters, got {len(text):,}")


def style_from_line(data: str | os.PathLike, line_id: str) -> tuple[np.ndarray, str]:
    """An IAM-OnDB line of a prepared file as a style: its raw offsets (T, 3) and its text."""
    from data_prep.prepared_file import load_prepared  # data_prep is needed only to read the prepared file

    arrays, _ = load_prepared(data)
    found = np.flatnonzero(arrays["line_ids"] == line_id)
    if len(found) == 0:
        raise ValueError(f"{data}: no line {line_id!r} (ids look like a01-000u-01)")
    index = int(found[0])
    if not arrays["texts"][index]:
        raise ValueError(f"{data}: line {line_id!r} has no transcription, so it cannot prime the window")
    begin, end = arrays["starts"][index], arrays["starts"][index + 1]
    return arrays["offsets"][begin:end].copy(), str(arrays["texts"][index])


def style_from_strokes(strokes: Sequence[Sequence[Sequence[float]]], text: str) -> tuple[np.ndarray, str]:
    """Pen-down strokes in screen coordinates (y down) -> offsets (T, 3), y up, the first offset (0, 0)
    as in the prepared data, end_of_stroke on each stroke's last point."""
    if (not isinstance(strokes, (list, tuple)) or not strokes
            or not all(isinstance(stroke, (list, tuple, np.ndarray)) and len(stroke) for stroke in strokes)):
        raise ValueError(f"a style's strokes must be {EXPECTED}, got {strokes!r:.80}")
    count = sum(map(len, strokes))
    if count > MAX_POINTS:
        raise ValueError(f"a style has at most {MAX_POINTS:,} points, got {count:,}")
    try:
        arrays = [np.asarray(stroke, dtype=np.float64) for stroke in strokes]
    except (TypeError, ValueError):  # ragged points, or not numbers
        raise ValueError(f"a style's strokes must be {EXPECTED}: every point two numbers") from None
    if any(a.ndim != 2 or a.shape[1] != 2 for a in arrays):
        raise ValueError(f"a style's strokes must be {EXPECTED}: every point two numbers")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("a style's points must be finite numbers")
    if any(np.abs(a).max() > MAX_COORDINATE for a in arrays):
        raise ValueError(f"a style's coordinates must lie within +-{MAX_COORDINATE:,.0f}")
    if not text:
        raise ValueError("a style needs the text its strokes say")
    points = np.concatenate(arrays) * np.array([1.0, -1.0])  # y up, as the training data
    offsets = np.zeros((len(points), 3), dtype=np.float32)
    offsets[1:, :2] = np.diff(points, axis=0)
    offsets[np.cumsum([len(a) for a in arrays]) - 1, 2] = 1.0
    check_style(offsets, text)
    return offsets, text


def style_from_file(path: str | os.PathLike, text: str | None = None) -> tuple[np.ndarray, str]:
    """A JSON or InkML strokes file (by its suffix) as a style; `text` overrides the file's own."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{path}: a style file has at most {MAX_FILE_BYTES // 2**20} MB, this one {size:,} bytes")
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the style file ({error})") from None
    if path.suffix.lower() == ".json":
        strokes, file_text = _json_strokes(path, content)
    elif path.suffix.lower() in (".inkml", ".xml"):
        strokes, file_text = _inkml_strokes(path, content)
    else:
        raise ValueError(f"{path}: a style file is .json or .inkml")
    if not (text or file_text):
        raise ValueError(f"{path}: the file does not say its text: give it")
    try:
        return style_from_strokes(strokes, text or file_text)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def _json_strokes(path: Path, content: str) -> tuple[list, str]:
    expected = '{"text": ..., "strokes": [[[x, y], ...], ...]}'
    try:
        document = json.loads(content)
        strokes, text = document["strokes"], document.get("text", "")
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path}: not a strokes file {expected} ({error})") from None
    except RecursionError:
        raise ValueError(f"{path}: not a strokes file {expected} (nested too deep)") from None
    if not isinstance(text, str):
        raise ValueError(f"{path}: \"text\" must be a string, got {text!r:.80}")
    return strokes, text


def _inkml_strokes(path: Path, content: str) -> tuple[list, str]:
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as error:
        raise ValueError(f"{path}: not an InkML file of 'x y' traces ({error})") from None
    traces = [trace.text or "" for trace in root.iter(INKML + "trace")]
    count = sum(trace.count(",") + 1 for trace in traces)  # counted before a list of points is made
    if count > MAX_POINTS:
        raise ValueError(f"{path}: a style has at most {MAX_POINTS:,} points, got {count:,}")
    strokes = [[_inkml_point(path, number, point) for point in trace.split(",")]
               for number, trace in enumerate(traces, start=1)]
    texts = [a.text.strip() for a in root.iter(INKML + "annotation")
             if a.get("type") == "transcription" and a.text and a.text.strip()]
    return strokes, texts[0] if texts else ""


def _inkml_point(path: Path, number: int, point: str) -> list[float]:
    """One point of trace `number`: its first two values, x and y."""
    values = point.split()[:2]
    try:
        if len(values) == 2:
            return [float(value) for value in values]
    except ValueError:
        pass
    raise ValueError(f"{path}: trace {number} is not a comma-separated list of 'x y' points "
                     f"(at {point.strip()[:40]!r})")
