"""Character-level corpora for the language model: sources -> one prepared `.npz` -> batches.

Three corpora (paper §4.1), each read from local files (`path`) or downloaded:

  ptb     Mikolov's `ptb.char.{train,valid,test}.txt`. One symbol per whitespace-separated
          token plus one end-of-line symbol ("\\n") per non-empty line: 5,017,482 / 393,042 /
          442,423 symbols, 50 in the vocabulary (49 characters, "_" between words, and EOL).
          The vocabulary is the training split's; valid or test symbols outside it are an error.
  text8   one file of a-z and space (27 symbols, a fixed vocabulary); split 90% / 5% / 5% in
          order, which is exactly 90M / 5M / 5M for the real 10^8 characters.
  enwik8  one file of bytes; the vocabulary is every byte value occurring in the file (each byte
          is stored as the character with that code, latin-1); split 90% / 5% / 5% in order.

Downloads go to a cache folder and are checked by sha256 of the data files themselves (the
archive checksums are not published; the data files' are): a mismatch is an error, nothing is
prepared from a corrupt download. text8 has no published checksum we could confirm: its size
(10^8) and alphabet are checked instead, and `expected_sha256` enforces one when given.

The prepared file holds `train`, `valid`, `test` (uint8 ids), `vocab` (one-character strings,
index = id) and `metadata` (JSON: format_version, dataset, counts, sha256 of every source
file). It is written atomically and loads with allow_pickle=False.

Batches for truncated BPTT (`bptt_windows`): the stream of (input, target) pairs is cut into
`batch_size` contiguous rows, and the rows are read in consecutive windows of `bptt` steps, so
row r of window k+1 continues exactly where row r of window k stopped: the final state of one
batch is the right initial state of the next.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor

from handwriting_hm.hmlstm.atomic import atomic_write

FORMAT_VERSION = 1
SPLITS = ("train", "valid", "test")
EOL = "\n"  # the PTB end-of-line symbol
TEXT8_ALPHABET = " abcdefghijklmnopqrstuvwxyz"
SPLIT_FRACTIONS = (0.9, 0.05, 0.05)  # text8 and enwik8: first 90%, next 5%, last 5%


@dataclass(frozen=True)
class Download:
    """Where a corpus comes from and what its data files must hash to (None: not published)."""

    url: str
    members: dict[str, str | None]  # data file name inside the archive -> expected sha256


DOWNLOADS: dict[str, Download] = {
    "ptb": Download("http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz", {
        "ptb.char.train.txt": "e313d91425e06c4f0a8fb6e881dcce0c291f2a0e9f4dda54833069b122f91da9",
        "ptb.char.valid.txt": "21661f63ec355085879458b6524644d4add5573541b4be14fb52ab2e2e995eb8",
        "ptb.char.test.txt": "1ef5607ac3c463b16e38bfe7900dd3bfc91de5a96e0f21e7eab5188b465b8ebe",
    }),
    "text8": Download("http://mattmahoney.net/dc/text8.zip", {"text8": None}),
    "enwik8": Download("http://mattmahoney.net/dc/enwik8.zip", {
        "enwik8": "2b49720ec4d78c3c9fabaee6e4179a5e997302b3a70029f30f2d582218c024a8",
    }),
}
DATASETS = tuple(DOWNLOADS)
TEXT8_SIZE = 100_000_000


# ----------------------------------------------------------------------------- reading sources

def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ptb_symbols(text: str, where: str = "text") -> str:
    """PTB char text -> its symbols as one string: the tokens of each non-empty line, then EOL."""
    symbols = []
    for number, line in enumerate(text.split("\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        long_token = next((token for token in tokens if len(token) != 1), None)
        if long_token is not None:
            raise ValueError(f"{where} line {number}: token {long_token!r} is not one character "
                             "(not a character-level PTB file)")
        symbols.append("".join(tokens) + EOL)
    return "".join(symbols)


def split_sizes(total: int, fractions: tuple[float, ...] = SPLIT_FRACTIONS) -> tuple[int, int, int]:
    """Sizes of train / valid / test for `total` symbols: 90M / 5M / 5M for 10^8."""
    valid = round(total * fractions[1])
    test = round(total * fractions[2])
    return total - valid - test, valid, test


def to_ids(symbols: str, vocab: list[str], where: str) -> np.ndarray:
    """Map a string of symbols to uint8 ids; a symbol outside `vocab` is a ValueError naming it."""
    codes = np.frombuffer(symbols.encode("utf-32-le"), dtype=np.uint32)
    table = np.full(max(max(map(ord, vocab)), int(codes.max(initial=0))) + 1, -1, dtype=np.int64)
    table[[ord(symbol) for symbol in vocab]] = np.arange(len(vocab))
    ids = table[codes]
    if (ids < 0).any():
        unknown = sorted({chr(c) for c in np.unique(codes[ids < 0])})
        raise ValueError(f"{where}: {len(unknown)} symbol(s) outside the vocabulary: "
                         + ", ".join(repr(s) for s in unknown[:20]))
    return ids.astype(np.uint8)


def corpus_from_files(dataset: str, files: dict[str, Path]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Read a corpus's data files (names as in DOWNLOADS) into (vocab, ids per split)."""
    if dataset == "ptb":
        symbols = {split: ptb_symbols(files[f"ptb.char.{split}.txt"].read_text(encoding="ascii", errors="strict"),
                                      str(files[f"ptb.char.{split}.txt"])) for split in SPLITS}
        vocab = sorted(set(symbols["train"]))
    elif dataset == "text8":
        path = files["text8"]
        text = path.read_bytes().decode("latin-1")
        vocab = list(TEXT8_ALPHABET)
        to_ids(text, vocab, str(path))  # checks the alphabet before splitting
        symbols = dict(zip(SPLITS, _split(text)))
    elif dataset == "enwik8":
        text = files["enwik8"].read_bytes().decode("latin-1")  # byte b -> chr(b), one to one
        vocab = sorted(set(text))
        symbols = dict(zip(SPLITS, _split(text)))
    else:
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {', '.join(DATASETS)}")
    for split, text in symbols.items():
        if not text:
            raise ValueError(f"{dataset}: the {split} split is empty")
    if len(vocab) < 2 or len(vocab) > 256:
        raise ValueError(f"{dataset}: vocabulary of {len(vocab)} symbols (need 2 to 256)")
    return vocab, {split: to_ids(text, vocab, f"{dataset} {split}") for split, text in symbols.items()}


def _split(text: str) -> tuple[str, str, str]:
    train, valid, _ = split_sizes(len(text))
    return text[:train], text[train:train + valid], text[train + valid:]


# ----------------------------------------------------------------------------- downloading

def download(url: str, destination: Path, timeout: float = 60.0) -> None:
    """Fetch `url` to `destination` atomically; any network failure is one OSError line."""
    try:
        with atomic_write(destination) as file, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, file, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or error
        raise OSError(f"cannot download {url}: {reason} (offline? pass --path to local files instead)") from None


def extract_members(archive: Path, names: list[str], folder: Path) -> dict[str, Path]:
    """Pull the named data files (matched by base name) out of a .zip or .tgz into `folder`."""
    found: dict[str, Path] = {}
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as bundle:
                for member in bundle.namelist():
                    if Path(member).name in names:
                        found[Path(member).name] = _write(folder / Path(member).name, bundle.read(member))
        else:
            with tarfile.open(archive) as bundle:
                for member in bundle:
                    if member.isfile() and Path(member.name).name in names:
                        found[Path(member.name).name] = _write(folder / Path(member.name).name,
                                                               bundle.extractfile(member).read())
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, io.UnsupportedOperation) as error:
        raise ValueError(f"{archive}: corrupt or unreadable archive ({type(error).__name__}); delete it and retry") from None
    missing = sorted(set(names) - set(found))
    if missing:
        raise ValueError(f"{archive}: does not contain {', '.join(missing)} (corrupt or wrong download)")
    return found


def _write(path: Path, data: bytes) -> Path:
    with atomic_write(path) as file:
        file.write(data)
    return path


def verify(dataset: str, files: dict[str, Path], expected: dict[str, str | None]) -> dict[str, str]:
    """sha256 of every data file, checked against `expected` where it is known."""
    digests = {}
    for name, path in files.items():
        digest = sha256_file(path)
        want = expected.get(name)
        if want is not None and digest != want:
            raise ValueError(f"{path}: sha256 {digest} does not match the expected {want} "
                             "(corrupt or altered download; delete it and retry)")
        digests[name] = digest
    # A download of text8 has no published checksum to meet: its size must be the real one.
    if dataset == "text8" and "text8" in expected and expected["text8"] is None \
            and files["text8"].stat().st_size != TEXT8_SIZE:
        raise ValueError(f"{files['text8']}: {files['text8'].stat().st_size} bytes, text8 has {TEXT8_SIZE}")
    return digests


def expected_hashes(dataset: str, expected_sha256: str | None) -> dict[str, str | None]:
    """The checksums a corpus's data files must have: the published ones, or the one given."""
    expected = dict(DOWNLOADS[dataset].members)
    if expected_sha256 is None:
        return expected
    if len(expected) != 1:
        raise ValueError(f"--sha256 applies to one-file corpora (text8, enwik8), not {dataset}")
    return {name: expected_sha256.lower() for name in expected}


def fetch(dataset: str, cache: Path, url: str | None = None, expected_sha256: str | None = None) -> dict[str, Path]:
    """Download (unless cached) and extract a corpus's data files, verified by sha256."""
    spec = DOWNLOADS[dataset]
    url = url or spec.url
    expected = expected_hashes(dataset, expected_sha256)
    archive = cache / Path(urllib.request.url2pathname(url.rsplit("/", 1)[-1]) or f"{dataset}.download").name
    if not archive.exists():
        download(url, archive)
    files = extract_members(archive, list(expected), cache / dataset)
    verify(dataset, files, expected)
    return files


def local_files(dataset: str, path: Path) -> dict[str, Path]:
    """The data files of a corpus in a local folder (or the one file itself for text8/enwik8)."""
    names = list(DOWNLOADS[dataset].members)
    if path.is_file() and len(names) == 1:
        return {names[0]: path}
    if not path.is_dir():
        raise OSError(f"{path}: no such folder" + (" or file" if len(names) == 1 else ""))
    files = {name: path / name for name in names}
    missing = [name for name, file in files.items() if not file.is_file()]
    if missing:
        raise OSError(f"{path}: missing {', '.join(missing)}")
    return files


# ----------------------------------------------------------------------------- the prepared file

@dataclass
class PreparedText:
    """A prepared corpus: the vocabulary (index = id) and the ids of each split."""

    vocab: list[str]
    splits: dict[str, np.ndarray]
    metadata: dict[str, Any]


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
    vocab, splits = corpus_from_files(dataset, files)
    metadata = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "counts": {split: int(ids.size) for split, ids in splits.items()},
        "vocab_size": len(vocab),
        "sources_sha256": sources,
    }
    write_prepared(Path(output), vocab, splits, metadata)
    return PreparedText(vocab, splits, metadata)


def write_prepared(path: Path, vocab: list[str], splits: dict[str, np.ndarray], metadata: dict[str, Any]) -> None:
    """Write the .npz atomically."""
    with atomic_write(path) as file:
        np.savez(file, **splits, vocab=np.array(vocab, dtype="<U1"), metadata=np.array(json.dumps(metadata)))


def load_prepared(path: str | os.PathLike) -> PreparedText:
    """Read a prepared file; ValueError (one line) if it is not one we wrote or a split is empty."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            splits = {split: archive[split] for split in SPLITS}
            vocab = [str(symbol) for symbol in archive["vocab"]]
            metadata = json.loads(str(archive["metadata"]))
    except FileNotFoundError:
        raise OSError(f"{path}: no such prepared file (run `hm-lm prepare` first)") from None
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a prepared hm-lm file ({type(error).__name__})") from None
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: prepared-file format {metadata.get('format_version')!r} is not {FORMAT_VERSION}")
    for split, ids in splits.items():
        if ids.size == 0:
            raise ValueError(f"{path}: the {split} split is empty")
        if int(ids.max()) >= len(vocab):
            raise ValueError(f"{path}: the {split} split has ids outside its {len(vocab)}-symbol vocabulary")
    return PreparedText(vocab, splits, metadata)


# ----------------------------------------------------------------------------- batches

def bptt_rows(ids: np.ndarray | Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """(inputs, targets), each (batch_size, n): the stream's (x_t, x_{t+1}) pairs in contiguous rows.

    Row r holds pairs r*n .. (r+1)*n - 1; the last (len(ids) - 1) % batch_size pairs are dropped.
    """
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    per_row = (ids.numel() - 1) // batch_size
    if per_row < 1:
        raise ValueError(f"{ids.numel()} symbols are too few for {batch_size} rows")
    used = per_row * batch_size
    return ids[:used].view(batch_size, per_row), ids[1:used + 1].view(batch_size, per_row)


def bptt_windows(inputs: Tensor, targets: Tensor, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive (batch, <= bptt) windows of the rows; the last may be shorter."""
    for start in range(0, inputs.shape[1], bptt):
        yield inputs[:, start:start + bptt], targets[:, start:start + bptt]


def evaluation_rows(ids: np.ndarray | Tensor, rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs, targets, mask), each (rows, n): every one of the len(ids) - 1 pairs exactly once.

    Rows are contiguous pieces of ceil((len - 1) / rows) pairs; the last is padded (mask False).
    Row r > 0 starts with the symbol row r - 1 predicted last as its input, so no target is
    skipped: only the split's first symbol, which has no context, is never scored.
    """
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    pairs = ids.numel() - 1
    if pairs < 1:
        raise ValueError("need at least 2 symbols to score one")
    rows = max(1, min(rows, pairs))
    per_row = -(-pairs // rows)
    padded = per_row * rows
    inputs = torch.zeros(padded, dtype=torch.long)
    targets = torch.zeros(padded, dtype=torch.long)
    inputs[:pairs], targets[:pairs] = ids[:-1], ids[1:]
    mask = torch.arange(padded) < pairs
    return inputs.view(rows, per_row), targets.view(rows, per_row), mask.view(rows, per_row)


# ----------------------------------------------------------------------------- user text

def encode_text(text: str, vocab: list[str], dataset: str) -> list[int]:
    """Ids of free text for a model trained on `dataset`.

    Documented replacements: ptb writes a run of spaces between words as "_" and a newline as
    its end-of-line symbol; enwik8 reads the text's UTF-8 bytes. Any other character the
    vocabulary lacks is a ValueError that names it.
    """
    if dataset == "ptb":
        symbols = EOL.join("_".join(line.split()) for line in text.split("\n"))
    elif dataset == "enwik8":
        symbols = text.encode("utf-8").decode("latin-1")
    else:
        symbols = text
    if not symbols:
        raise ValueError("the text is empty")
    known = set(vocab)
    unknown = sorted({symbol for symbol in symbols if symbol not in known})
    if unknown:
        shown = "".join(symbol for symbol in vocab if symbol.isprintable())
        raise ValueError(f"the text has characters this {dataset} model does not know: "
                         + " ".join(repr(s) for s in unknown[:20]) + f" (it knows {shown!r})")
    index = {symbol: i for i, symbol in enumerate(vocab)}
    return [index[symbol] for symbol in symbols]
