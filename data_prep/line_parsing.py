"""Parsing every line stroke file of a source, in a pool of worker processes.

The one process that decompresses the archive feeds the XML files to the workers; each worker
parses and cleans one line and returns its offsets. Results come back in the source's order.

The pool must never leave the run hanging. `concurrent.futures` notices when a worker dies
(an out-of-memory kill, say) and fails every pending result with BrokenProcessPool, which
becomes one OSError line here; `multiprocessing.Pool` would silently start a new worker and
wait forever for the lost task. Workers ignore Ctrl-C: the main process alone handles it,
cancels what is queued, and the workers exit after the chunk they hold.
"""
from __future__ import annotations

import functools
import itertools
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from tqdm import tqdm

from data_prep.cleaning import CleaningConfig, clean, to_offsets
from data_prep.iam_xml import implausible_coordinate, line_id_from_path, parse_strokes
from data_prep.sources import Source

# Files in flight between the reading process and the workers: enough to keep every worker busy,
# few enough that a fast reader does not hold the whole unpacked archive in memory. They travel
# in chunks, as one message per file would cost more than parsing it.
_MAX_IN_FLIGHT = 512
_CHUNK = 16

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class ParsedLine:
    """One line stroke file after parsing and cleaning."""

    name: str  # path inside the source
    line_id: str = ""
    form: str = ""
    index: int = 0
    offsets: np.ndarray | None = None  # None: skipped (error) or dropped by cleaning
    raw_points: int = 0
    error: str = ""  # why the file is unusable
    implausible: bool = False  # unusable because a coordinate is non-finite or absurd
    problems: list[str] = field(default_factory=list)
    cleaning: dict[str, int] = field(default_factory=dict)


def parse_line(item: tuple[str, bytes], cleaning: CleaningConfig) -> ParsedLine:
    """Worker: one XML file -> cleaned offsets (runs in a pool process)."""
    name, data = item
    line = ParsedLine(name)
    try:
        line.line_id, line.form, line.index = line_id_from_path(name)
        points, line.problems = parse_strokes(data)
    except ValueError as error:
        line.error = str(error)
        return line
    implausible = implausible_coordinate(points)
    if implausible is not None:
        line.error, line.implausible = implausible, True
        return line
    line.raw_points = len(points)
    cleaned, line.cleaning = clean(points, cleaning)
    if cleaned is not None:
        line.offsets = to_offsets(cleaned)
    return line


def parse_lines(source: Source, cleaning: CleaningConfig, workers: int, progress: bool) -> Iterator[ParsedLine]:
    """Every `.xml` file of `source`, parsed, in the source's order."""
    files = source.files(".xml")
    first = next(files, None)  # opens the source here, so an unreadable archive fails loudly now
    if first is None:
        return
    files = itertools.chain([first], files)
    work = functools.partial(parse_line, cleaning=cleaning)
    results = map(work, files) if workers <= 1 else _map_in_processes(work, files, workers)
    # The bar counts compressed bytes read for an archive (its total is known up front).
    bar = tqdm(total=source.progress_total or None, unit="B" if source.path.is_file() else "file",
               unit_scale=True, desc="reading lines", disable=not progress)
    with bar:
        for line in results:
            bar.update(source.progress_done - bar.n)
            yield line


def _map_in_processes(function: Callable[[Item], Result], items: Iterable[Item], workers: int) -> Iterator[Result]:
    """`function` of every item, in order, computed by `workers` processes with at most
    `_MAX_IN_FLIGHT` items submitted and not yet consumed; OSError if a worker dies."""
    pool = ProcessPoolExecutor(workers, initializer=_ignore_interrupts)
    pending: deque[Future[list[Result]]] = deque()
    try:
        for chunk in _chunks(items, _CHUNK):
            pending.append(pool.submit(_apply, function, chunk))
            if len(pending) * _CHUNK >= _MAX_IN_FLIGHT:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    except BrokenProcessPool:
        raise OSError("a parsing process died (killed by the system, perhaps for lack of memory); "
                      "nothing was written: run again, with fewer --workers if memory is short") from None
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _ignore_interrupts() -> None:
    """Pool initializer: Ctrl-C reaches the whole process group; only the main process acts on it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _chunks(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _apply(function: Callable[[Item], Result], chunk: list[Item]) -> list[Result]:
    return [function(item) for item in chunk]
