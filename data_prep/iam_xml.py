"""Parsing of the two IAM-OnDB file kinds: line stroke XML and form transcriptions.

A line stroke file (`lineStrokes/.../<form>-<kk>.xml`) holds one `<StrokeSet>` of `<Stroke>`
elements, each a run of `<Point x=".." y=".." time=".."/>` samples with y growing downward.
A transcription file (`ascii/.../<form>.txt`) holds the printed prompt after `OCR:` and what the
writer actually wrote after `CSR:`, one written line per text line.

Parsing every file with ElementTree is too slow for the 445 MB release, so the exact layout the
release uses goes through a regular-expression fast path; anything that departs from it (other
attribute order, missing attributes, truncation) goes through a strict ElementTree parser that
names what is wrong.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import PurePosixPath

import numpy as np

# The fast path turns a <StrokeSet> of the release's exact layout into "x y time x y time ..."
# by deleting its fixed markup, then lets numpy parse the numbers in one call.
_STROKE_START = re.compile(rb"<Stroke [^<>]*>")
_MARKUP = (b"</Stroke>", b'<Point x="', b'" y="', b'" time="', b'"/>')
_NUMBER_CHARACTERS = b"0123456789.-+eE \t\r\n"
_LINE_NAME = re.compile(r"^(?P<form>[A-Za-z0-9]+-[A-Za-z0-9]+)-(?P<index>\d+)$")

# A coordinate beyond this many sensor units is a recording error, not handwriting: the release's
# samples lie within x -51..7,224 and y 93..9,181 (the whiteboard is about 7,000 units wide), so
# the bound is over 100 times that; below it float32 offsets still hold whole units exactly (2^24).
MAX_COORDINATE = 1_000_000


def line_id_from_path(path: str) -> tuple[str, str, int]:
    """`.../a01-000u-01.xml` -> ("a01-000u-01", "a01-000u", 1); ValueError if not that shape."""
    stem = PurePosixPath(path).stem
    match = _LINE_NAME.match(stem)
    if match is None:
        raise ValueError(f"file name {PurePosixPath(path).name!r} is not <form>-<kk>.xml")
    return stem, match["form"], int(match["index"])


def parse_strokes(data: bytes) -> tuple[np.ndarray, list[str]]:
    """Parse one line stroke file into absolute pen samples.

    Returns `(points, problems)`: `points` is float64 (T, 3) with columns x, y (sensor units,
    y still growing downward) and end_of_stroke (1 on the last sample of each stroke);
    `problems` names each sample that was skipped and why. Raises ValueError when the file as a
    whole cannot be used (malformed XML, no `<StrokeSet>`, no samples).
    """
    points = _parse_fast(data)
    problems: list[str] = []
    if points is None:
        points, problems = _parse_strict(data)
    if len(points) == 0:
        raise ValueError("no pen samples")
    return points, problems


def _parse_fast(data: bytes) -> np.ndarray | None:
    """The release's exact layout, or None when the file needs the strict parser."""
    begin, end = data.find(b"<StrokeSet>"), data.find(b"</StrokeSet>")
    if begin < 0 or end < begin or not data.rstrip().endswith(b"</WhiteboardCaptureSession>"):
        return None
    body = data[begin + len(b"<StrokeSet>") : end]
    per_stroke = [stroke.count(b"<Point") for stroke in body.split(b"</Stroke>")]
    n_points = sum(per_stroke)
    text, n_strokes = _STROKE_START.subn(b" ", body)
    for markup in _MARKUP:
        text = text.replace(markup, b" ")
    # Anything left besides numbers (another attribute order, an extra attribute, a stray tag)
    # means the layout is not the one assumed here; so does a stroke that is not closed.
    if text.translate(None, _NUMBER_CHARACTERS) or n_strokes != len(per_stroke) - 1 or per_stroke[-1]:
        return None
    try:
        values = np.array(text.split(), dtype=np.float64)
    except ValueError:  # e.g. "1e" or "--3": let the strict parser name it
        return None
    if values.size != 3 * n_points or n_points == 0:
        return None  # a sample lacks an attribute
    points = values.reshape(n_points, 3)
    points[:, 2] = 0.0  # the time column becomes end_of_stroke
    last_of_stroke = np.cumsum(per_stroke[:-1]) - 1
    points[last_of_stroke[last_of_stroke >= 0], 2] = 1.0
    return points


def _parse_strict(data: bytes) -> tuple[np.ndarray, list[str]]:
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise ValueError(f"malformed XML ({error})") from None
    stroke_set = root if root.tag == "StrokeSet" else root.find(".//StrokeSet")
    if stroke_set is None:
        raise ValueError("no <StrokeSet> element")
    rows: list[tuple[float, float, float]] = []
    problems: list[str] = []
    for stroke_number, stroke in enumerate(stroke_set.iter("Stroke"), start=1):
        n_before = len(rows)
        for point_number, point in enumerate(stroke.iter("Point"), start=1):
            try:
                rows.append((float(point.attrib["x"]), float(point.attrib["y"]), 0.0))
            except KeyError as missing:
                problems.append(f"stroke {stroke_number} point {point_number}: no {missing.args[0]!r} attribute, point skipped")
            except ValueError:
                problems.append(f"stroke {stroke_number} point {point_number}: non-numeric coordinate, point skipped")
        if len(rows) > n_before:
            rows[-1] = rows[-1][:2] + (1.0,)
    points = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return points, problems


def implausible_coordinate(points: np.ndarray) -> str | None:
    """Why `points` (from `parse_strokes`) cannot be handwriting, or None: the first coordinate
    that is not finite (nan, inf) or lies beyond +-MAX_COORDINATE, which would otherwise turn the
    training statistics into NaN or inf (1e300 becomes inf in the float32 offsets)."""
    bad = ~(np.abs(points[:, :2]) <= MAX_COORDINATE)  # NaN compares False, so it is bad too
    if not bad.any():
        return None
    row, column = (int(i) for i in np.argwhere(bad)[0])
    return (f"sample {row + 1}: {'xy'[column]} = {float(points[row, column])!r} is non-finite or beyond "
            f"+-{MAX_COORDINATE:,} sensor units; line dropped")


def parse_transcription(text: str) -> list[str]:
    """The written lines (non-empty lines after `CSR:`) of one form's transcription file.

    Raises ValueError when the file has no `CSR:` section.
    """
    lines = [line.strip() for line in text.splitlines()]
    try:
        start = lines.index("CSR:") + 1
    except ValueError:
        raise ValueError("no 'CSR:' section") from None
    return [line for line in lines[start:] if line]
