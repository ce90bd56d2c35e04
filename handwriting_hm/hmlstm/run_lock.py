"""One trainer at a time in a run folder: an exclusive lock on `run_dir/.lock` while it writes there.

Two trainers writing one folder interleave `log.jsonl` and leave `best.pt` to whichever saved last.
`locked_run_dir` takes `fcntl.flock` on the lock file without waiting: a second trainer is refused
with one line naming the process that holds it. The operating system releases the lock when its
process ends, however it ends (kill -9 included), so a stale lock file never blocks a later run.
"""
from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK = ".lock"


@contextmanager
def locked_run_dir(run_dir: str | os.PathLike, take: bool = True) -> Iterator[None]:
    """Hold the run folder's lock (creating the folder) for the block; with take=False (a process that
    does not write there, e.g. a distributed run's other ranks) do nothing. ValueError, one line, where
    another process holds it."""
    if not take:
        yield
        return
    path = Path(run_dir) / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="ascii") as file:
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            raise ValueError(f"{run_dir} is in use by another trainer (process {holder} holds {path}): wait for it "
                             f"to end or choose another run folder") from None
        file.truncate(0)
        file.write(str(os.getpid()))
        file.flush()
        yield
