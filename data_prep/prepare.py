"""`handwriting-hm prepare`: IAM-OnDB archives or folders -> one training-ready `.npz`.

Reads `lineStrokes` (XML per line) and `ascii` (transcription per form) straight from their
archives, parses the line files in a worker pool fed by the one decompressing process, matches
each line to its transcription, optionally cleans it, assigns the paper and official splits, and
writes the prepared file atomically (see `prepared_file.py` for its layout). Bad items are
skipped and listed in the report; only an unreadable source or no usable line at all is fatal.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from data_prep.cleaning import JUMP_ACTIONS, CleaningConfig, clean, to_offsets
from data_prep.iam_xml import line_id_from_path, parse_strokes, parse_transcription
from data_prep.prepared_file import FORMAT_VERSION, write_prepared
from data_prep.sources import Source
from data_prep.splits import OFFICIAL_LISTS, PAPER_MIN_POINTS, PAPER_SEED, SCHEMES, paper_split, parse_split_list, select

# Files in flight between the reading process and the workers: enough to keep every worker busy,
# few enough that a fast reader does not hold the whole unpacked archive in memory.
_MAX_IN_FLIGHT = 512


@dataclass
class PrepareReport:
    """What a preparation run produced, skipped and changed."""

    output: str
    lines: int
    points: int
    split_counts: dict[str, dict[str, int]]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (item, why), item left out
    untranscribed: list[tuple[str, str]] = field(default_factory=list)  # kept with text ""
    cleaning: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def format(self) -> str:
        """A human-readable summary, every skipped item included."""
        out = [f"wrote {self.output}: {self.lines} lines, {self.points} points in {self.seconds:.1f} s"]
        for scheme, counts in self.split_counts.items():
            out.append(f"  {scheme}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
        if self.cleaning:
            out.append("  cleaning: " + ", ".join(f"{name} {n}" for name, n in self.cleaning.items()))
        out.append(f"  lines kept without transcription (text ''): {len(self.untranscribed)}")
        out.extend(f"    {item}: {why}" for item, why in self.untranscribed)
        out.append(f"  skipped items: {len(self.skipped)}")
        out.extend(f"    {item}: {why}" for item, why in self.skipped)
        return "\n".join(out)


@dataclass
class _ParsedLine:
    name: str  # path inside the source
    line_id: str = ""
    form: str = ""
    index: int = 0
    offsets: np.ndarray | None = None  # None: skipped (error) or dropped by cleaning
    raw_points: int = 0
    error: str = ""
    problems: list[str] = field(default_factory=list)
    cleaning: dict[str, int] = field(default_factory=dict)


def _parse_line(item: tuple[str, bytes], cleaning: CleaningConfig) -> _ParsedLine:
    """Worker: one XML file -> cleaned offsets (runs in a pool process)."""
    name, data = item
    line = _ParsedLine(name)
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


def _bounded(items: Iterable[tuple[str, bytes]], slots: threading.Semaphore) -> Iterator[tuple[str, bytes]]:
    for item in items:
        slots.acquire()
        yield item


def _parse_all(source: Source, cleaning: CleaningConfig, workers: int, progress: bool) -> Iterator[_ParsedLine]:
    files = source.files(".xml")
    first = next(files, None)  # opens the source here, so an unreadable archive fails loudly now
    if first is None:
        return
    files = itertools.chain([first], files)
    work = functools.partial(_parse_line, cleaning=cleaning)
    if workers <= 1:
        results: Iterable[_ParsedLine] = map(work, files)
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


def _release_each(results: Iterable[_ParsedLine], slots: threading.Semaphore) -> Iterator[_ParsedLine]:
    for line in results:
        slots.release()
        yield line


def _read_transcriptions(source: Source, report: PrepareReport) -> dict[str, list[str]]:
    texts: dict[str, list[str]] = {}
    for name, data in source.files(".txt"):
        try:
            texts[Path(name).stem] = parse_transcription(data.decode("latin-1"))
        except ValueError as error:
            report.skipped.append((name, f"transcription file unusable: {error}"))
    report.skipped.extend(source.problems)
    if not texts:
        raise ValueError(f"{source.path}: no usable transcription (.txt) files")
    return texts


def _read_official_lists(
    splits_dir: Path, forms: np.ndarray, report: PrepareReport
) -> tuple[np.ndarray, dict[str, str]]:
    """Per-line list codes (-1 = in no list) and the lists' checksums."""
    known_forms = set(forms.tolist())
    form_code: dict[str, int] = {}
    checksums: dict[str, str] = {}
    for code, name in enumerate(OFFICIAL_LISTS):
        path = splits_dir / f"{name}.txt"
        try:
            data = path.read_bytes()
        except OSError as error:
            report.skipped.append((str(path), f"split list unreadable ({error.strerror or error})"))
            continue
        checksums[name] = hashlib.sha256(data).hexdigest()
        for form in parse_split_list(data.decode("latin-1")):
            if form not in known_forms:
                report.skipped.append((f"{name}.txt: {form}", "form has no line files"))
            elif form in form_code:
                report.skipped.append((f"{name}.txt: {form}", f"form already in {OFFICIAL_LISTS[form_code[form]]}"))
            else:
                form_code[form] = code
    codes = np.array([form_code.get(form, -1) for form in forms.tolist()], dtype=np.int8)
    return codes, checksums


def _split_statistics(offsets: np.ndarray, starts: np.ndarray, lines: np.ndarray) -> dict[str, list[float]]:
    """Mean and std of dx and dy over the given lines, leaving out each line's first row (the
    zero offset that only marks where the line starts)."""
    rows = np.concatenate([np.arange(starts[i] + 1, starts[i + 1]) for i in lines])
    values = offsets[rows, :2].astype(np.float64)
    return {"mean": values.mean(axis=0).tolist(), "std": values.std(axis=0).tolist()}


def prepare(
    strokes: str | os.PathLike,
    transcriptions: str | os.PathLike,
    out: str | os.PathLike,
    splits: str | os.PathLike | None = None,
    *,
    cleaning: CleaningConfig = CleaningConfig(),
    min_points: int = PAPER_MIN_POINTS,
    seed: int = PAPER_SEED,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Prepare IAM-OnDB into the single file `out` and return the report.

    `strokes` and `transcriptions` are `lineStrokes` and `ascii` archives (.tar, .tar.gz, .tar.xz)
    or folders; `splits` is a folder with the task-1 lists (trainset.txt, testset_v.txt, ...),
    without which only the `paper` scheme is available. `min_points` and `seed` define the paper
    split. Raises ValueError/OSError for fatal problems; nothing is written then.
    """
    started = time.perf_counter()
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give the prepared file's name, e.g. {out / 'iam_ondb.npz'}")
    if splits is not None and not Path(splits).is_dir():
        raise OSError(f"{splits}: no such folder of split lists")
    report = PrepareReport(output=str(out), lines=0, points=0, split_counts={})
    stroke_source, text_source = Source(Path(strokes)), Source(Path(transcriptions))
    texts = _read_transcriptions(text_source, report)

    parsed: dict[str, _ParsedLine] = {}
    cleaning_totals: dict[str, int] = {}
    workers = workers or min(os.cpu_count() or 1, 8)
    for line in _parse_all(stroke_source, cleaning, workers, progress):
        if line.error:
            report.skipped.append((line.name, line.error))
            continue
        if line.line_id in parsed:
            report.skipped.append((line.name, f"line {line.line_id} already read from {parsed[line.line_id].name}"))
            continue
        parsed[line.line_id] = line
        report.skipped.extend((line.line_id, problem) for problem in line.problems)
        for key, value in line.cleaning.items():
            cleaning_totals[key] = cleaning_totals.get(key, 0) + value
    report.skipped.extend(stroke_source.problems)
    if not parsed:
        raise ValueError(f"{stroke_source.path}: no usable line stroke (.xml) files")

    # Splits are drawn over every parsed line in id order, before cleaning may drop some, so the
    # same raw files always give the same split whatever the cleaning settings.
    ordered = [parsed[line_id] for line_id in sorted(parsed)]
    paper_codes = paper_split(np.array([line.raw_points for line in ordered]), min_points, seed)
    forms = np.array([line.form for line in ordered])
    split_checksums: dict[str, str] = {}
    official_codes = np.full(len(ordered), -1, dtype=np.int8)
    if splits is not None:
        official_codes, split_checksums = _read_official_lists(Path(splits), forms, report)

    keep = np.array([line.offsets is not None for line in ordered])
    report.skipped.extend((line.line_id, "dropped by cleaning (pen-down jump over --max-jump)") for line in ordered if line.offsets is None)
    ordered = [line for line in ordered if line.offsets is not None]
    if not ordered:
        raise ValueError("cleaning dropped every line; nothing to write")
    paper_codes, official_codes, forms = paper_codes[keep], official_codes[keep], forms[keep]

    line_texts = []
    for line in ordered:
        written = texts.get(line.form)
        if written is None:
            report.untranscribed.append((line.line_id, f"no transcription file for form {line.form}"))
        elif not 1 <= line.index <= len(written):
            report.untranscribed.append((line.line_id, f"{line.form}.txt has no CSR line {line.index} (it has {len(written)})"))
        line_texts.append(written[line.index - 1] if written and 1 <= line.index <= len(written) else "")

    lengths = np.array([len(line.offsets) for line in ordered])
    starts = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    offsets = np.concatenate([line.offsets for line in ordered])
    arrays = {
        "offsets": offsets,
        "starts": starts,
        "line_ids": np.array([line.line_id for line in ordered]),
        "forms": forms,
        "texts": np.array(line_texts),
        "raw_points": np.array([line.raw_points for line in ordered], dtype=np.int32),
        "paper_split": paper_codes,
        "official_list": official_codes,
    }

    stats: dict[str, dict[str, list[float]]] = {}
    for scheme, named_splits in SCHEMES.items():
        counts = {name: int(select(scheme, name, paper_codes, official_codes).sum()) for name in named_splits}
        if scheme != "paper" and splits is None:
            continue
        report.split_counts[scheme] = counts
        train = np.flatnonzero(select(scheme, "train", paper_codes, official_codes))
        if len(train):
            stats[scheme] = _split_statistics(offsets, starts, train)

    report.lines, report.points = len(ordered), int(len(offsets))
    report.cleaning = cleaning_totals
    report.seconds = time.perf_counter() - started
    metadata: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "sources": {
            "strokes": {"path": str(stroke_source.path), "sha256": stroke_source.sha256},
            "transcriptions": {"path": str(text_source.path), "sha256": text_source.sha256},
            "split_lists": split_checksums,
        },
        "settings": {"cleaning": asdict(cleaning), "paper_min_points": min_points, "paper_seed": seed},
        "stats": stats,
        "report": asdict(report),
    }
    write_prepared(out, arrays, metadata)
    report.seconds = time.perf_counter() - started
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `handwriting-hm prepare`."""
    parser.add_argument("--strokes", required=True, type=Path,
                        help="lineStrokes-all.tar.gz / .tar.xz, or the unpacked lineStrokes folder")
    parser.add_argument("--ascii", required=True, type=Path,
                        help="ascii-all.tar.gz / .tar.xz, or the unpacked ascii folder")
    parser.add_argument("--splits", type=Path, default=None,
                        help="folder with trainset.txt, testset_v.txt, testset_t.txt, testset_f.txt "
                             "(needed for the official and graves schemes)")
    parser.add_argument("--out", required=True, type=Path, help="prepared file to write, e.g. data/iam_ondb.npz")
    parser.add_argument("--min-points", type=int, default=PAPER_MIN_POINTS,
                        help="paper split: keep lines with at least this many raw samples (default %(default)s)")
    parser.add_argument("--seed", type=int, default=PAPER_SEED, help="paper split shuffle seed (default %(default)s)")
    parser.add_argument("--workers", type=int, default=None, help="parsing processes (default: CPU count, at most 8)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    cleaning = parser.add_argument_group("cleaning (all off by default: they change the paper's data)")
    cleaning.add_argument("--drop-duplicates", action="store_true",
                          help="drop a sample identical to the previous one of its stroke")
    cleaning.add_argument("--max-jump", type=float, default=None,
                          help="a pen-down step longer than this many sensor units is a recording glitch")
    cleaning.add_argument("--jump-action", choices=JUMP_ACTIONS, default="cap",
                          help="what to do with such a step: cap its length, or drop the line (default %(default)s)")
    cleaning.add_argument("--resample-step", type=float, default=None,
                          help="resample every stroke at this arc length in sensor units")


def run(args: argparse.Namespace) -> int:
    """Run `handwriting-hm prepare`."""
    cleaning = CleaningConfig(
        drop_duplicates=args.drop_duplicates,
        max_jump=args.max_jump,
        jump_action=args.jump_action,
        resample_step=args.resample_step,
    )
    report = prepare(
        args.strokes, args.ascii, args.out, args.splits,
        cleaning=cleaning, min_points=args.min_points, seed=args.seed,
        workers=args.workers, progress=not args.no_progress,
    )
    print(report.format())
    return 0
