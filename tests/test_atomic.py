"""The one atomic writer every stage uses."""
import pytest

from handwriting_hm.hmlstm.atomic import atomic_write


def test_success_replaces_the_file(tmp_path):
    path = tmp_path / "sub" / "out.bin"
    with atomic_write(path) as file:
        file.write(b"new")
    assert path.read_bytes() == b"new"
    assert [p.name for p in path.parent.iterdir()] == ["out.bin"]


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_write(path) as file:
            file.write(b"half")
            raise RuntimeError("disk full")
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_interrupt_leaves_no_file_at_all_when_there_was_none(tmp_path):
    path = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path) as file:
            file.write(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
