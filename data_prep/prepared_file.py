"""The prepared file: one `.npz` with every line's offsets, text and split codes, plus metadata.

Arrays (L lines, N samples in all):
  offsets        float32 (N, 3)  dx, dy (sensor units, y up), end_of_stroke, all lines end to end
  starts         int64 (L + 1)   line i is offsets[starts[i]:starts[i + 1]]
  line_ids       str (L)         e.g. "a01-000u-01", sorted
  forms          str (L)         e.g. "a01-000u" (the release has no writer ids in these files)
  texts          str (L)         the CSR transcription, "" where the release has none
  raw_points     int32 (L)       samples in the XML before cleaning (the paper's length filter)
  paper_split    int8 (L)        see `splits.py`
  official_list  int8 (L)        see `splits.py`
  metadata       str ()          JSON: format_version, sources (sha256), settings, stats per
                                 scheme, the preparation report
Everything loads with `allow_pickle=False`.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from handwriting_hm.hmlstm.archive import read_archive, write_archive

FORMAT_VERSION = 1
ARRAYS = ("offsets", "starts", "line_ids", "forms", "texts", "raw_points", "paper_split", "official_list")


def write_prepared(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    """Write atomically (see hmlstm/archive.py)."""
    write_archive(path, arrays, metadata)


def load_prepared(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a prepared file into (arrays, metadata); ValueError if it is not one we can read, or if its
    arrays disagree (`check_consistent`)."""
    arrays, metadata = read_archive(path, ARRAYS, "IAM-OnDB", "handwriting-hm prepare", FORMAT_VERSION)
    check_consistent(path, arrays)
    return arrays, metadata


def check_consistent(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Raise ValueError, one line, unless the arrays agree as the module docstring says: offsets (N, 3),
    starts L + 1 integers from 0 to N that never decrease, and one entry per line in each per-line array."""
    offsets, starts = arrays["offsets"], arrays["starts"]
    if offsets.ndim != 2 or offsets.shape[1:] != (3,) or offsets.dtype.kind != "f":
        problem = f"offsets are {offsets.dtype} {offsets.shape}, not (N, 3) numbers"
    elif starts.ndim != 1 or starts.dtype.kind not in "iu" or len(starts) == 0:
        problem = f"starts are {starts.dtype} {starts.shape}, not L + 1 whole numbers"
    elif starts[0] != 0 or starts[-1] != len(offsets) or bool((np.diff(starts) < 0).any()):
        problem = (f"starts do not cut the {len(offsets):,} offsets into lines (they must rise from 0 to "
                   f"{len(offsets):,}; they run from {starts.min()} to {starts.max()})")
    else:
        wrong = [f"{name} has shape {arrays[name].shape}" for name in ARRAYS[2:]
                 if arrays[name].shape != (len(starts) - 1,)]
        if not wrong:
            return
        problem = f"{', '.join(wrong)} entries for {len(starts) - 1} lines"
    raise ValueError(f"{path}: the prepared file's arrays disagree: {problem}; run `handwriting-hm prepare` again")
