"""How both prepared files are stored: one `.npz` of named arrays plus a JSON `metadata` record
that carries a `format_version`. Written atomically, read with allow_pickle=False, and every
way a file can be wrong is one line. Used by data_prep (the IAM-OnDB file) and lm (the text
corpora); it lives here, beside `atomic`, so that both can import it.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Any, Sequence

import numpy as np

from .atomic import atomic_write
from .cli import first_line


def write_archive(path: str | os.PathLike, arrays: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    """Write the arrays and the metadata (as JSON) atomically: an interrupted run never leaves a
    half-written file and never replaces a good one."""
    with atomic_write(path) as file:
        np.savez(file, **arrays, metadata=np.array(json.dumps(metadata)))


def read_archive(path: str | os.PathLike, names: Sequence[str], what: str, prepare_command: str,
                 format_version: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The arrays `names` and the metadata of a file that `write_archive` wrote. OSError (one line)
    if there is no file; ValueError (one line) if it is not a `what` file or not of `format_version`;
    both say to run `prepare_command`."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in names}
            metadata = json.loads(str(archive["metadata"]))
    except FileNotFoundError:
        raise OSError(f"{path}: no such prepared file (run `{prepare_command}` first)") from None
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a prepared {what} file ({first_line(error)})") from None
    if metadata.get("format_version") != format_version:
        raise ValueError(f"{path}: prepared-file format {metadata.get('format_version')!r} is not {format_version}; "
                         f"run `{prepare_command}` again")
    return arrays, metadata
