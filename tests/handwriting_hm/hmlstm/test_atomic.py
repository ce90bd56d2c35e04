"""The one atomic writer every stage uses."""
import os
import stat
import subprocess
import sys

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


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_the_file_follows_the_umask_not_the_temporary_files_0600(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        with atomic_write(tmp_path / "out.bin") as file:
            file.write(b"new")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == mode


def test_a_killed_writers_temporary_is_removed_by_the_next_write_to_the_same_place(tmp_path):
    # a process that has exited: its pid names no running process (until reused, which takes long)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    stale = tmp_path / f".out.bin.{dead_pid}.abc123_x.tmp"
    live = tmp_path / f".out.bin.{os.getpid()}.q1w2e3r4.tmp"  # a write in progress in a running process
    other_destination = tmp_path / f".other.bin.{dead_pid}.abc123_x.tmp"
    not_ours = tmp_path / ".out.bin.tmp"
    for path in (stale, live, other_destination, not_ours):
        path.write_bytes(b"half")
    with atomic_write(tmp_path / "out.bin") as file:
        file.write(b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out.bin", live.name, other_destination.name, not_ours.name])
