"""The files a request gives: a drawing's record (points, offsets, boundaries, operations) as JSON, and
`save_samples`, which writes what `handwriting-hm sample` and the app both offer: one SVG, PNG or JSON
file holding every sample of a request, so the same seed gives the same file from either."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..hmlstm.atomic import atomic_write

from .geometry import Sample, offsets_to_points, _check_boundaries, _check_offsets
from .png import render_grid_png
from .svg import render_svg, stack_svgs


OPERATION_NAMES = ("COPY", "UPDATE", "FLUSH")
SAVE_FORMATS = (".svg", ".png", ".json")


def drawing_record(
    offsets: np.ndarray,
    boundaries: np.ndarray | None = None,
    operations: np.ndarray | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Absolute points, offsets, boundaries and operations as lists, and the `extra` fields."""
    offsets = _check_offsets(offsets)
    boundaries = _check_boundaries(boundaries, len(offsets))
    operations = _check_operations(operations, len(offsets))
    record: dict[str, Any] = {
        "points": offsets_to_points(offsets).tolist(),
        "offsets": offsets.tolist(),
        "boundaries": None if boundaries is None else boundaries.astype(int).tolist(),
        "operations": None if operations is None else operations.tolist(),
        "operation_names": list(OPERATION_NAMES),
    }
    clashes = sorted(set(extra) & set(record))
    if clashes:
        raise ValueError(f"extra fields {clashes} would overwrite the drawing's own fields")
    record.update(extra)
    return record


def to_json(
    offsets: np.ndarray,
    boundaries: np.ndarray | None = None,
    operations: np.ndarray | None = None,
    **extra: Any,
) -> str:
    """`drawing_record` as a JSON document."""
    return json.dumps(drawing_record(offsets, boundaries, operations, **extra), default=_json_default, allow_nan=False)


def _json_default(value: Any) -> Any:
    """Let numpy arrays and scalars (and anything with .tolist(), e.g. tensors) in `extra` through."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def samples_document(samples: Sequence[Sample], parameters: Mapping[str, Any], colour_by: str = "ink",
                     marker_layer: int | None = None, straighten: bool = False) -> dict[str, Any]:
    """The JSON file of one request: its parameters, how it was drawn, and every sample's raw data
    (points and offsets in the training data's units, never straightened)."""
    return {
        "parameters": dict(parameters),
        "drawing": {"colour_by": colour_by, "marker_layer": marker_layer, "straighten": straighten},
        "samples": [drawing_record(s.offsets, s.boundaries, s.operations, operation_counts=s.operation_counts(),
                                   copied_fraction=s.copied_fraction()) for s in samples],
    }


def render_samples(suffix: str, samples: Sequence[Sample], parameters: Mapping[str, Any], colour_by: str = "ink",
                   marker_layer: int | None = None, straighten: bool = False) -> bytes:
    """One file's bytes (suffix .svg, .png or .json) holding every sample: SVG drawings stacked top
    to bottom, PNG rows (titled when there are several), or the `samples_document`."""
    style = {"colour_by": colour_by, "marker_layer": marker_layer, "straighten": straighten}
    suffix = suffix.lower()
    if suffix == ".svg":
        return stack_svgs([render_svg(s.offsets, s.boundaries, **style) for s in samples]).encode("utf-8")
    if suffix == ".png":
        titles = [f"sample {i}" for i in range(1, len(samples) + 1)] if len(samples) > 1 else None
        return render_grid_png([s.offsets for s in samples], titles=titles,
                               boundaries=[s.boundaries for s in samples], **style)
    if suffix == ".json":
        return json.dumps(samples_document(samples, parameters, **style), allow_nan=False).encode("utf-8")
    raise ValueError(f"cannot save a drawing as {suffix!r}: the extension must be one of {', '.join(SAVE_FORMATS)}")


def save_samples(path: str | os.PathLike, samples: Sequence[Sample], parameters: Mapping[str, Any],
                 colour_by: str = "ink", marker_layer: int | None = None, straighten: bool = False) -> None:
    """Write `render_samples` for `path`'s extension to `path`, atomically."""
    data = render_samples(Path(path).suffix, samples, parameters, colour_by, marker_layer, straighten)
    with atomic_write(path) as file:
        file.write(data)


def _check_operations(operations: Any, length: int) -> np.ndarray | None:
    if operations is None:
        return None
    array = np.asarray(operations)
    if array.ndim != 2 or array.shape[0] != length:
        raise ValueError(f"operations must have shape (T, L) with T={length}; got shape {array.shape}")
    if not np.isin(array, range(len(OPERATION_NAMES))).all():
        raise ValueError(f"operations must contain only the codes 0..{len(OPERATION_NAMES) - 1} ({', '.join(OPERATION_NAMES)})")
    return array.astype(np.int64)
