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
    """Read a prepared file into (arrays, metadata); ValueError if it is not one we can read."""
    return read_archive(path, ARRAYS, "IAM-OnDB", "handwriting-hm prepare", FORMAT_VERSION)
