"""`handwriting-hm prepare`: IAM-OnDB archives or folders -> one training-ready `.npz`.

`prepare()` runs its stages in order, each a function below:
  1. read every form's transcription (`ascii`);
  2. parse and clean every line stroke file (`lineStrokes`) in a worker pool fed by the one
     decompressing process (`line_parsing.py`);
  3. assign the paper and official splits, over every parsed line;
  4. drop the lines cleaning removed;
  5. match each line to its transcription;
  6. put the lines end to end into the prepared file's arrays;
  7. count the splits and compute each scheme's training statistics;
then it writes the prepared file atomically (see `prepared_file.py` for its layout). Bad items
are skipped and listed in the report. Fatal: an unreadable source, no usable line at all, and an
incomplete input (an archive that is damaged or ends early, a listed form whose line files or
transcription are missing) unless `allow_partial`, which keeps what could be read and warns.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.cleaning import JUMP_ACTIONS, CleaningConfig
from data_prep.iam_xml import parse_transcription
from data_prep.line_parsing import ParsedLine, parse_lines
from data_prep.prepared_file import FORMAT_VERSION, write_prepared
from data_prep.sources import Source
from data_prep.splits import OFFICIAL_LISTS, PAPER_MIN_POINTS, PAPER_SEED, SCHEMES, paper_split, parse_split_list, select

_NAMED_IN_A_WARNING = 5  # a warning or error line names this many items, then counts the rest


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
    incomplete: list[tuple[str, str]] = field(default_factory=list)  # (item, what is missing), allow_partial
    warnings: list[str] = field(default_factory=list)  # one line each, also printed to stderr
    seconds: float = 0.0

    def format(self) -> str:
        """A human-readable summary, every skipped item included."""
        out = [f"wrote {self.output}: {self.lines} lines, {self.points} points in {self.seconds:.1f} s"]
        out.extend(f"  warning: {warning}" for warning in self.warnings)
        for scheme, counts in self.split_counts.items():
            out.append(f"  {scheme}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
        if self.cleaning:
            out.append("  cleaning: " + ", ".join(f"{name} {n}" for name, n in self.cleaning.items()))
        out.append(f"  lines kept without transcription (text ''): {len(self.untranscribed)}")
        out.extend(f"    {item}: {why}" for item, why in self.untranscribed)
        out.append(f"  skipped items: {len(self.skipped)}")
        out.extend(f"    {item}: {why}" for item, why in self.skipped)
        return "\n".join(out)


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
    allow_partial: bool = False,
) -> PrepareReport:
    """Prepare IAM-OnDB into the single file `out` and return the report.

    `strokes` and `transcriptions` are `lineStrokes` and `ascii` archives (.tar, .tar.gz, .tar.xz)
    or folders; `splits` is a folder with the task-1 lists (trainset.txt, testset_v.txt, ...),
    without which only the `paper` scheme is available. `min_points` and `seed` define the paper
    split. `allow_partial` prepares from what could be read of an incomplete input, with a
    warning that lists what is missing. Raises ValueError/OSError for fatal problems; nothing is
    written then.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_paths(out, [Path(strokes), Path(transcriptions)], None if splits is None else Path(splits))
    report = PrepareReport(output=str(out), lines=0, points=0, split_counts={})
    stroke_source, text_source = Source(Path(strokes)), Source(Path(transcriptions))
    texts = _read_transcriptions(text_source, report, allow_partial)
    lines = _read_lines(stroke_source, cleaning, workers or min(os.cpu_count() or 1, 8), progress, report, allow_partial)
    forms = np.array([line.form for line in lines])
    paper_codes, official_codes, split_checksums = _assign_splits(
        lines, forms, set(texts), splits, min_points, seed, report, allow_partial)
    keep = _drop_lines_cleaning_removed(lines, report)
    lines = [line for line, kept in zip(lines, keep) if kept]
    line_texts = _match_transcriptions(lines, texts, report)
    arrays = _line_arrays(lines, line_texts, forms[keep], paper_codes[keep], official_codes[keep])
    stats = _scheme_statistics(arrays, splits is not None, report)
    if report.incomplete:
        report.warnings.append(f"incomplete input, prepared from what could be read: {_name_items(report.incomplete)}")

    report.lines, report.points = len(lines), int(len(arrays["offsets"]))
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


def _check_paths(out: Path, sources: list[Path], splits: Path | None) -> None:
    """Fail before any reading when the split folder is missing or the output cannot be written
    without harm. The output must not replace an input: not an input file (symbolic links
    resolved), nor any file inside an input folder."""
    if out.is_dir():
        raise ValueError(f"{out}: is a folder; give the prepared file's name, e.g. {out / 'iam_ondb.npz'}")
    if splits is not None and not splits.is_dir():
        raise OSError(f"{splits}: no such folder of split lists")
    if not out.exists():
        return  # a new file cannot be an input
    for source in sources + ([splits] if splits is not None else []):
        if (source.is_file() and out.samefile(source)) or (source.is_dir() and out.resolve().is_relative_to(source.resolve())):
            raise ValueError(f"{out}: is the input {source}, or inside it; write the prepared file elsewhere")


def _accept_partial(missing: list[tuple[str, str]], allow_partial: bool, report: PrepareReport) -> None:
    """An incomplete input is an error naming what is missing, unless `allow_partial`: then it
    goes into `report.incomplete`, which `prepare` turns into one warning line."""
    if missing and not allow_partial:
        raise ValueError(f"{_name_items(missing)} (pass --allow-partial to prepare from what could be read)")
    report.incomplete.extend(missing)


def _name_items(items: list[tuple[str, str]]) -> str:
    """`item: why; ...` for the first few items, then how many more, to fit one line."""
    named = "; ".join(f"{item}: {why}" for item, why in items[:_NAMED_IN_A_WARNING])
    if len(items) > _NAMED_IN_A_WARNING:
        named += f"; and {len(items) - _NAMED_IN_A_WARNING} more"
    return named


def _read_transcriptions(source: Source, report: PrepareReport, allow_partial: bool) -> dict[str, list[str]]:
    """Stage 1: every form's written lines, by form id; unusable files are skipped and listed."""
    texts: dict[str, list[str]] = {}
    for name, data in source.files(".txt"):
        try:
            texts[Path(name).stem] = parse_transcription(data.decode("latin-1"))
        except ValueError as error:
            report.skipped.append((name, f"transcription file unusable: {error}"))
    _accept_partial(source.problems, allow_partial, report)
    report.skipped.extend(source.problems)
    if not texts:
        raise ValueError(f"{source.path}: no usable transcription (.txt) files")
    return texts


def _read_lines(
    source: Source, cleaning: CleaningConfig, workers: int, progress: bool, report: PrepareReport, allow_partial: bool
) -> list[ParsedLine]:
    """Stage 2: parse and clean every line file; the usable ones sorted by line id.

    Files that cannot be parsed and second copies of a line are skipped and listed; lines with
    a non-finite or absurd coordinate also get one warning line. The cleaning counts of all
    lines are added up into the report.
    """
    parsed: dict[str, ParsedLine] = {}
    implausible: list[tuple[str, str]] = []
    for line in parse_lines(source, cleaning, workers, progress):
        if line.error:
            report.skipped.append((line.name, line.error))
            if line.implausible:
                implausible.append((line.name, line.error))
            continue
        if line.line_id in parsed:
            report.skipped.append((line.name, f"line {line.line_id} already read from {parsed[line.line_id].name}"))
            continue
        parsed[line.line_id] = line
        report.skipped.extend((line.line_id, problem) for problem in line.problems)
        for key, value in line.cleaning.items():
            report.cleaning[key] = report.cleaning.get(key, 0) + value
    _accept_partial(source.problems, allow_partial, report)
    report.skipped.extend(source.problems)
    if implausible:
        report.warnings.append(f"dropped {len(implausible)} line file(s) with a non-finite or absurd coordinate: "
                               + _name_items(implausible))
    if not parsed:
        raise ValueError(f"{source.path}: no usable line stroke (.xml) files")
    return [parsed[line_id] for line_id in sorted(parsed)]


def _assign_splits(
    lines: list[ParsedLine], forms: np.ndarray, transcribed: set[str], splits: str | os.PathLike | None,
    min_points: int, seed: int, report: PrepareReport, allow_partial: bool,
) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    """Stage 3: per-line paper split codes, official list codes, and the lists' checksums.

    Splits are drawn over every parsed line in id order, before cleaning may drop some, so the
    same raw files always give the same split whatever the cleaning settings. A listed form
    with line files but no transcription, or the reverse, means a source is incomplete.
    """
    paper_codes = paper_split(np.array([line.raw_points for line in lines]), min_points, seed)
    if splits is None:
        return paper_codes, np.full(len(lines), -1, dtype=np.int8), {}
    official_codes, checksums, missing = _read_official_lists(Path(splits), forms, transcribed, report)
    _accept_partial(missing, allow_partial, report)
    return paper_codes, official_codes, checksums


def _read_official_lists(
    splits_dir: Path, forms: np.ndarray, transcribed: set[str], report: PrepareReport
) -> tuple[np.ndarray, dict[str, str], list[tuple[str, str]]]:
    """Per-line list codes (-1 = in no list), the lists' checksums, and the listed forms that
    have only one of their line files and their transcription."""
    known_forms = set(forms.tolist())
    form_code: dict[str, int] = {}
    checksums: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
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
                if form in transcribed:
                    missing.append((f"{name}.txt: {form}", "listed form has a transcription but no line files"))
            elif form in form_code:
                report.skipped.append((f"{name}.txt: {form}", f"form already in {OFFICIAL_LISTS[form_code[form]]}"))
            else:
                form_code[form] = code
                if form not in transcribed:
                    missing.append((f"{name}.txt: {form}", "listed form has line files but no transcription file"))
    codes = np.array([form_code.get(form, -1) for form in forms.tolist()], dtype=np.int8)
    return codes, checksums, missing


def _drop_lines_cleaning_removed(lines: list[ParsedLine], report: PrepareReport) -> np.ndarray:
    """Stage 4: which lines to keep (a mask); lines cleaning dropped are listed as skipped."""
    keep = np.array([line.offsets is not None for line in lines])
    report.skipped.extend(
        (line.line_id, "dropped by cleaning (pen-down jump over --max-jump)") for line in lines if line.offsets is None
    )
    if not keep.any():
        raise ValueError("cleaning dropped every line; nothing to write")
    return keep


def _match_transcriptions(lines: list[ParsedLine], texts: dict[str, list[str]], report: PrepareReport) -> list[str]:
    """Stage 5: each line's CSR text; "" (and listed) where its form has no such line."""
    line_texts = []
    for line in lines:
        written = texts.get(line.form)
        if written is None:
            report.untranscribed.append((line.line_id, f"no transcription file for form {line.form}"))
        elif not 1 <= line.index <= len(written):
            report.untranscribed.append((line.line_id, f"{line.form}.txt has no CSR line {line.index} (it has {len(written)})"))
        line_texts.append(written[line.index - 1] if written and 1 <= line.index <= len(written) else "")
    return line_texts


def _line_arrays(
    lines: list[ParsedLine], texts: list[str], forms: np.ndarray, paper_codes: np.ndarray, official_codes: np.ndarray
) -> dict[str, np.ndarray]:
    """Stage 6: the prepared file's arrays (see `prepared_file.py`), lines end to end."""
    lengths = np.array([len(line.offsets) for line in lines])
    return {
        "offsets": np.concatenate([line.offsets for line in lines]),
        "starts": np.concatenate(([0], np.cumsum(lengths))).astype(np.int64),
        "line_ids": np.array([line.line_id for line in lines]),
        "forms": forms,
        "texts": np.array(texts),
        "raw_points": np.array([line.raw_points for line in lines], dtype=np.int32),
        "paper_split": paper_codes,
        "official_list": official_codes,
    }


def _scheme_statistics(
    arrays: dict[str, np.ndarray], have_lists: bool, report: PrepareReport
) -> dict[str, dict[str, list[float]]]:
    """Stage 7: line counts per split into the report, and each scheme's training statistics.

    Without the split lists only the paper scheme is counted.
    """
    paper_codes, official_codes = arrays["paper_split"], arrays["official_list"]
    stats: dict[str, dict[str, list[float]]] = {}
    for scheme, named_splits in SCHEMES.items():
        if scheme != "paper" and not have_lists:
            continue
        report.split_counts[scheme] = {
            name: int(select(scheme, name, paper_codes, official_codes).sum()) for name in named_splits
        }
        train = np.flatnonzero(select(scheme, "train", paper_codes, official_codes))
        if len(train):
            stats[scheme] = _split_statistics(arrays["offsets"], arrays["starts"], train)
    return stats


def _split_statistics(offsets: np.ndarray, starts: np.ndarray, lines: np.ndarray) -> dict[str, list[float]]:
    """Mean and std of dx and dy over the given lines, leaving out each line's first row (the
    zero offset that only marks where the line starts)."""
    rows = np.concatenate([np.arange(starts[i] + 1, starts[i + 1]) for i in lines])
    values = offsets[rows, :2].astype(np.float64)
    return {"mean": values.mean(axis=0).tolist(), "std": values.std(axis=0).tolist()}


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
    parser.add_argument("--allow-partial", action="store_true",
                        help="prepare from what could be read of an incomplete input (an archive that is damaged "
                             "or ends early, listed forms missing their line files or transcription), with a "
                             "warning listing what is missing; without it that is an error")
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
        workers=args.workers, progress=not args.no_progress, allow_partial=args.allow_partial,
    )
    print(report.format())
    for warning in report.warnings:
        print(f"handwriting-hm prepare: warning: {warning}", file=sys.stderr)
    return 0
