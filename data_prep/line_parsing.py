"""Parsing every line stroke file of a source, in a pool of worker processes.

The one process that decompresses the archive feeds the XML files to the workers; each worker
parses and cleans one line and returns its offsets. Results come back in the source's order.
"""
from __future__ import annotations

import functools
import itertools
import multiprocessing
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from data_prep.cleaning import CleaningConfig, clean, to_offsets
from data_prep.iam_xml import line_id_from_path, parse_strokes
from data_prep.sources import Source

# Files in flight between the reading process and the workers: enough to keep every worker busy,
# few enough that a fast reader does not hold the whole unpacked archive in memory.
_MAX_IN_FLIGHT = 512


@dataclass
class ParsedLine:
    """One line stroke file after parsing and cleaning."""

    name: str  # path inside the source
    line_id: str = ""
    form: str = ""
    index: int = 0
    offsets: np.ndarray | None = None  # None: skipped (error) or dropped by cleaning
    raw_points: int = 0
    error: str = ""
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
    if workers <= 1:
        results: Iterable[ParsedLine] = map(work, files)
        pool = None
    else:
        slots = threading.Semaphore(_MAX_IN_FLIGHT)
        pool = multiprocessing.Pool(workers)
        results = _release_each(pool.imap(work, _bounded(files, slots), chunksize=16), slots)
    # The bar counts compressed bytes read for an archive (its total is known up front).
    bar = tqdm(total=source.progress_total or None, unit="B" if source.path.is_file() else "file",
               unit_scale=True, desc="reading lines", disable=not progress)
    with bar:
        try:
            for line in results:
                bar.update(source.progress_done - bar.n)
                yield line
        finally:
            if pool is not None:
                pool.terminate()


def _bounded(items: Iterable[tuple[str, bytes]], slots: threading.Semaphore) -> Iterator[tuple[str, bytes]]:
    for item in items:
        slots.acquire()
        yield item


def _release_each(results: Iterable[ParsedLine], slots: threading.Semaphore) -> Iterator[ParsedLine]:
    for line in results:
        slots.release()
        yield line
