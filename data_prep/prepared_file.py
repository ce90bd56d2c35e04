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

import json
import os
import zipfile
from typing import Any

import numpy as np

from handwriting_hm.hmlstm.atomic import atomic_write

FORMAT_VERSION = 1
ARRAYS = ("offsets", "starts", "line_ids", "forms", "texts", "raw_points", "paper_split", "official_list")


def write_prepared(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    """Write atomically: a temporary file in the same folder, then a rename over `path`, so an
    interrupted run never leaves a half-written file and never replaces a good one."""
    with atomic_write(path) as file:
        np.savez(file, **arrays, metadata=np.array(json.dumps(metadata)))


def load_prepared(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a prepared file into (arrays, metadata); ValueError if it is not one we can read."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in ARRAYS}
            metadata = json.loads(str(archive["metadata"]))
    except FileNotFoundError:
        raise OSError(f"{path}: no such prepared file (run `handwriting-hm prepare` first)") from None
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a prepared IAM-OnDB file ({error})") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: prepared-file format {metadata.get('format_version')} is not {FORMAT_VERSION}; prepare it again"
        )
    return arrays, metadata
