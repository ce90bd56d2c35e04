"""Writing files so that a crash leaves the old file or the new one, never half of one.

Every stage of the project writes through `atomic_write`: prepared data here, and downstream
checkpoints, pictures and drawings. It lives in the first package of the chain so that all of
them can import it.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for binary writing; when the block ends normally,
    flush it to disk and rename it over `path`. If anything fails, remove it and re-raise:
    `path` is left as it was. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
