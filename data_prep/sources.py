"""Reading the files of a source that is either a tar archive (.tar, .tar.gz, .tar.xz) or a folder.

Archives are streamed member by member, so nothing is unpacked to disk. A source that breaks
part-way (a truncated archive) yields what it could read and then records the problem, so the
caller decides whether a partial source is an error (the default of `prepare`) or not.

A cut archive must not pass as a short complete one. tarfile in stream mode ends an archive
quietly at a missing, short or garbled header block, which is where a cut often lands, and a
compressed stream cut short decodes without complaint as far as it goes. So the decompressor is
ours (chosen by magic number) and is read to its end, which raises if the stream was cut, and
only the end-of-archive block of zeros ends the tar stream (`_CheckedTarInfo`).

A file is read whole, so its size is checked first (the tar header's, or the folder entry's):
one over MAX_FILE_BYTES is an error that names it, whatever an archive's compressed size.
"""
from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_DECOMPRESSORS = {  # magic number -> reader of the decompressed stream
    b"\x1f\x8b": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    b"\xfd7zXZ\x00": lzma.LZMAFile,
    b"BZh": bz2.BZ2File,
}
_READ_ERRORS = (tarfile.TarError, lzma.LZMAError, zlib.error, EOFError, OSError)

# The largest file of the release is a 105 KB line stroke file; 16 MiB is over 150 times that,
# and small enough that a few in flight to the parsing workers cannot exhaust memory.
MAX_FILE_BYTES = 16 << 20
_EXTENDED_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                     tarfile.GNUTYPE_LONGLINK)


class _DamagedTar(tarfile.TarError):
    """A tar stream that ends, or breaks, where a member header should be."""


class _CheckedTarInfo(tarfile.TarInfo):
    """Tar headers that tell a damaged or missing header from the end-of-archive block (tarfile
    itself takes both for the end of the archive when it reads a stream), and that refuse an
    extended header (long name, pax) over MAX_FILE_BYTES, which tarfile would read whole."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        try:
            header = super().frombuf(buf, encoding, errors)
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError) as error:
            raise _DamagedTar(f"no valid member header where one should be: {error}") from None
        if header.type in _EXTENDED_HEADERS and header.size > MAX_FILE_BYTES:
            raise _DamagedTar(f"an extended header of {header.size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit")
        return header


class _CountingReader:
    """A read-only file wrapper that remembers how many bytes were read and hashes them."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.position = 0
        self.sha256 = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.raw.read(size)
        self.position += len(chunk)
        self.sha256.update(chunk)
        return chunk


@dataclass
class Source:
    """A folder or archive of files; iterate with `files(suffix)`.

    After iteration, `sha256` is the checksum of the archive (or, for a folder, of the names and
    contents of the files read) and `problems` lists `(item, reason)` for what could not be read
    (an unreadable file, an archive that ends early).
    `progress_done` / `progress_total` count compressed bytes (archive) or files (folder).
    """

    path: Path
    sha256: str = ""
    progress_total: int = 0
    progress_done: int = 0

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.problems: list[tuple[str, str]] = []
        if not self.path.exists():
            raise OSError(f"{self.path}: no such file or folder")
        if not self.path.is_dir():
            self.progress_total = self.path.stat().st_size

    def files(self, suffix: str) -> Iterator[tuple[str, bytes]]:
        """Yield `(path inside the source, contents)` for every file ending in `suffix`, sorted
        for folders and in archive order for archives."""
        if self.path.is_dir():
            yield from self._folder_files(suffix)
        else:
            yield from self._archive_files(suffix)

    def _folder_files(self, suffix: str) -> Iterator[tuple[str, bytes]]:
        names = sorted(
            str(Path(root, name).relative_to(self.path)).replace(os.sep, "/")
            for root, _, names in os.walk(self.path)
            for name in names
            if name.endswith(suffix)
        )
        self.progress_total = len(names)
        digest = hashlib.sha256()
        for self.progress_done, name in enumerate(names, start=1):
            try:
                self._check_size(name, (self.path / name).stat().st_size)
                data = (self.path / name).read_bytes()
            except OSError as error:
                self.problems.append((name, f"unreadable ({error.strerror or error})"))
                continue
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            yield name, data
        self.sha256 = digest.hexdigest()

    def _archive_files(self, suffix: str) -> Iterator[tuple[str, bytes]]:
        with open(self.path, "rb") as raw:
            head = raw.read(8)
            raw.seek(0)
            decompress = next((opener for magic, opener in _DECOMPRESSORS.items() if head.startswith(magic)), None)
            reader = _CountingReader(raw)
            stream = decompress(reader) if decompress else reader  # no known magic: a plain tar
            try:
                archive = tarfile.open(fileobj=stream, mode="r|", tarinfo=_CheckedTarInfo)  # type: ignore[arg-type]
            except _READ_ERRORS as error:
                raise ValueError(f"{self.path}: not a readable tar archive ({error})") from None
            yielded = 0
            try:
                for member in archive:
                    self.progress_done = reader.position
                    if not member.isfile() or not member.name.endswith(suffix):
                        continue
                    self._check_size(member.name, member.size)
                    handle = archive.extractfile(member)
                    assert handle is not None  # regular files always have contents
                    data = handle.read()
                    yielded += 1
                    yield member.name, data
                while stream.read(1 << 20):  # to the end of the compressed stream: raises if it was cut
                    pass
            except _READ_ERRORS as error:
                reason = (
                    f"archive is damaged or ends early after {yielded} {suffix} files "
                    f"({error or type(error).__name__}); the rest cannot be read"
                )
                self.problems.append((str(self.path), reason))
            finally:
                archive.close()
            while reader.read(1 << 20):  # hash the rest, so the checksum is the whole file's
                pass
            self.progress_done = reader.position
        self.sha256 = reader.sha256.hexdigest()

    def _check_size(self, name: str, size: int) -> None:
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{self.path}: {name} is {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit for one "
                             "file (the release's largest is 105 KB): not an IAM-OnDB file")
