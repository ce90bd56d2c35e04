"""`hm-lm prepare {ptb,text8,enwik8}`: local files or a sha256-verified download -> one prepared .npz."""
from __future__ import annotations

import argparse
from pathlib import Path

from .corpus import corpus_from_files
from .corpus_files import DATASETS, DOWNLOADS, expected_hashes, fetch, local_files, sha256_file, verify
from .prepared_text import FORMAT_VERSION, PreparedText, write_prepared_text


def prepare(dataset: str, output: Path, path: Path | None = None, cache: Path | None = None,
            url: str | None = None, expected_sha256: str | None = None) -> PreparedText:
    """Read (or download) a corpus and write its prepared file atomically; return what was written."""
    if dataset not in DOWNLOADS:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    if path is not None:
        files = local_files(dataset, Path(path))
        # Local copies are checked only when asked: a user may prepare a slice or another version.
        expected = expected_hashes(dataset, expected_sha256) if expected_sha256 is not None else {}
        sources = verify(dataset, files, expected)
    else:
        files = fetch(dataset, Path(cache or Path.home() / ".cache" / "hm-lm"), url, expected_sha256)
        sources = {name: sha256_file(file) for name, file in files.items()}
    _refuse_to_overwrite_an_input(Path(output), list(files.values()))
    vocab, splits = corpus_from_files(dataset, files)
    metadata = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "counts": {split: int(ids.size) for split, ids in splits.items()},
        "vocab_size": len(vocab),
        "sources_sha256": sources,
    }
    prepared = PreparedText(vocab, splits, metadata)
    write_prepared_text(Path(output), prepared)
    return prepared


def _refuse_to_overwrite_an_input(output: Path, inputs: list[Path]) -> None:
    """The prepared file must not replace a data file it is read from (symbolic links resolved)."""
    for source in inputs:
        if output.exists() and output.samefile(source):
            raise ValueError(f"{output}: is the input {source}; write the prepared file elsewhere")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--path", help="local data: the folder with ptb.char.{train,valid,test}.txt, "
                                       "or the text8 / enwik8 file (or its folder); without it, download")
    parser.add_argument("--output", "-o", help="prepared file to write (default: data/DATASET.npz)")
    parser.add_argument("--cache", help="download folder (default: ~/.cache/hm-lm)")
    parser.add_argument("--url", help="download from this address instead of the canonical one: "
                                      + ", ".join(f"{name} {spec.url}" for name, spec in DOWNLOADS.items()))
    parser.add_argument("--sha256", help="the sha256 the text8 or enwik8 data file must have")


def run(args: argparse.Namespace) -> int:
    output = Path(args.output or Path("data") / f"{args.dataset}.npz")
    prepared = prepare(args.dataset, output, path=Path(args.path) if args.path else None,
                       cache=Path(args.cache) if args.cache else None, url=args.url, expected_sha256=args.sha256)
    counts = prepared.metadata["counts"]
    print(f"wrote {output}: {args.dataset}, vocabulary {len(prepared.vocab)}, "
          + " / ".join(f"{split} {n:,}" for split, n in counts.items()) + " symbols")
    for name, digest in prepared.metadata["sources_sha256"].items():
        print(f"  {name} sha256 {digest}")
    return 0
