"""Writing files so that a crash leaves the old file or the new one, never half of one.

Every stage of the project writes through `atomic_write`: prepared data here, and downstream
checkpoints, pictures and drawings. It lives in the first package of the chain so that all of
them can import it.

The temporary file is named `.<name>.<pid>.<random>.tmp` beside the destination. A write that
was killed (kill -9, power loss) leaves one behind; the next write to the same destination
removes those whose process is gone, and no one else's files.
"""
from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file beside `path` for binary writing; when the block ends normally,
    flush it to disk and rename it over `path`. If anything fails, remove it and re-raise:
    `path` is left as it was. The folder is created if needed; the file gets the permissions
    any program's new file gets (0666 less the umask), not the temporary file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fchmod(file.fileno(), 0o666 & ~current_umask())
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files a killed `atomic_write` to `path` left behind; returns them.

    Only files named as `atomic_write` names them for this destination, and only those whose
    writing process no longer runs: a write in progress elsewhere keeps its file.
    """
    ours = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]+\.tmp")
    removed = []
    for candidate in path.parent.iterdir():
        match = ours.fullmatch(candidate.name)
        if match and not _process_exists(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def current_umask() -> int:
    """The process's umask, read without changing it (setting it, as os.umask does, would race
    with other threads creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc (macOS): the only portable way is to set it and set it back
    os.umask(mask)
    return mask


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True
