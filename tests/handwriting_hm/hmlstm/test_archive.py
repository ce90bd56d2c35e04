"""hmlstm/archive.py: the one way both prepared files are written and read."""
import numpy as np
import pytest

from handwriting_hm.hmlstm.archive import read_archive, write_archive


def read(path, version=1):
    return read_archive(path, ("ids",), "toy", "toy prepare", version)


def test_arrays_and_metadata_come_back(tmp_path):
    path = tmp_path / "toy.npz"
    write_archive(path, {"ids": np.arange(5, dtype=np.uint8)}, {"format_version": 1, "note": "é"})
    arrays, metadata = read(path)
    assert arrays["ids"].tolist() == [0, 1, 2, 3, 4] and metadata == {"format_version": 1, "note": "é"}
    assert [p.name for p in tmp_path.iterdir()] == ["toy.npz"]  # no temporary file left beside it


def test_every_wrong_file_is_one_line_that_says_what_to_run(tmp_path):
    path = tmp_path / "toy.npz"
    with pytest.raises(OSError, match=r"no such prepared file \(run `toy prepare` first\)$"):
        read(path)
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError) as raised:
        read(path)
    assert str(raised.value).startswith(f"{path}: not a prepared toy file (") and "\n" not in str(raised.value)
    write_archive(path, {"other": np.zeros(2)}, {"format_version": 1})
    with pytest.raises(ValueError, match="not a prepared toy file"):
        read(path)  # an array is missing
    write_archive(path, {"ids": np.zeros(2)}, {"format_version": 1})
    with pytest.raises(ValueError, match=r"prepared-file format 1 is not 2; run `toy prepare` again"):
        read(path, version=2)
