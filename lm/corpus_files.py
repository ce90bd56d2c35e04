"""Where a corpus's data files come from: a local folder or file, or a sha256-verified download.

Downloads go to a cache folder and are checked by sha256 of the data files themselves (the
archive checksums are not published; the data files' are): a mismatch is an error, nothing is
prepared from a corrupt download. text8 has no published checksum we could confirm: its size
(10^8) is checked instead, and `expected_sha256` enforces one when given.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from handwriting_hm.hmlstm.atomic import atomic_write


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


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
