"""The C library in the kernel cache: checked before it is loaded, rebuilt when bad, never able to crash the
process; $CC read as a shell word list; the build under a time limit."""
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from handwriting_hm.hmlstm.paths import few_rows

ROOT = Path(__file__).resolve().parents[3]

needs_compiler = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None or torch.backends.cpu.get_cpu_capability()
    not in ("AVX2", "AVX512") or not sys.platform.startswith("linux"),
    reason="the C library needs Linux, a C compiler and an AVX2 CPU")

# a fresh process that loads the library and runs both of its kernels: the few-row product and the sparse C loop
USE_THE_LIBRARY = """
import warnings, torch
warnings.simplefilter("always")
from handwriting_hm.hmlstm.paths import few_rows, sparse_native
x, weight = torch.randn(2, 400), torch.randn(1601, 400)
torch.testing.assert_close(few_rows.times_transposed(x, weight), x @ weight.t(), rtol=1e-4, atol=1e-3)
print("kernel", few_rows.kernel() is not None, "loop", sparse_native._entry_points() is not None)
"""


def use_the_library(cache: Path, **environment: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HANDWRITING_HM_CACHE": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           **environment}
    env.pop("HANDWRITING_HM_NO_C_KERNEL", None)
    return subprocess.run([sys.executable, "-c", USE_THE_LIBRARY], env=env, capture_output=True, text=True,
                          timeout=240)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A cache folder with the library built in it, to copy from."""
    cache = tmp_path_factory.mktemp("built")
    result = use_the_library(cache)
    assert result.returncode == 0, result.stderr
    return cache


@pytest.fixture
def cache(built, tmp_path):
    copy = tmp_path / "cache"
    shutil.copytree(built, copy)
    return copy


def the_library(cache: Path) -> Path:
    (library,) = cache.glob("handwriting_hm-*.so")
    return library


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:4096])


def garbage(path: Path) -> None:
    path.write_bytes(os.urandom(path.stat().st_size))


def empty(path: Path) -> None:
    path.write_bytes(b"")


def missing_a_symbol(path: Path) -> None:
    """A well-formed library that lacks the sparse loop's entry points: few_rows.c alone."""
    source = path.parent / "alone.c"
    source.write_text((few_rows.FOLDER / "few_rows.c").read_text())
    subprocess.run(["cc", "-O1", "-mavx2", "-mfma", "-fopenmp", "-fPIC", "-shared", "-I", str(few_rows.FOLDER), str(source),
                    "-o", str(path)],
                   check=True)
    source.unlink()


@needs_compiler
@pytest.mark.parametrize("damage", [truncated, garbage, empty, missing_a_symbol])
def test_a_damaged_library_in_the_cache_is_rebuilt_not_loaded(cache, damage):
    library = the_library(cache)
    good = library.read_bytes()
    damage(library)
    assert library.read_bytes() != good
    result = use_the_library(cache)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "kernel True loop True" in result.stdout
    assert "rebuilding" in result.stderr and "Traceback" not in result.stderr
    assert library.read_bytes() == good  # rebuilt in place: the next run loads it without a word
    again = use_the_library(cache)
    assert again.returncode == 0 and "kernel True loop True" in again.stdout
    assert "rebuilding" not in again.stderr and "unavailable" not in again.stderr


@needs_compiler
def test_a_library_changed_after_it_was_loaded_cannot_crash_the_process(cache):
    """The loaded code is a private copy of the verified bytes: truncating the cached file under a running
    process (another user's rebuild, a full disk) does not take its code away."""
    script = USE_THE_LIBRARY + """
from pathlib import Path
(library,) = Path(__import__("os").environ["HANDWRITING_HM_CACHE"]).glob("handwriting_hm-*.so")
library.write_bytes(library.read_bytes()[:4096])
torch.testing.assert_close(few_rows.times_transposed(x, weight), x @ weight.t(), rtol=1e-4, atol=1e-3)
print("still running")
"""
    env = {**os.environ, "HANDWRITING_HM_CACHE": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("HANDWRITING_HM_NO_C_KERNEL", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert "still running" in result.stdout


@needs_compiler
@pytest.mark.parametrize("compiler", ["ccache gcc", "env gcc", "'gcc'"])
def test_cc_is_read_as_a_shell_word_list(tmp_path, compiler):
    if compiler.startswith("ccache") and shutil.which("ccache") is None:
        compiler = f"env CCACHE_DISABLE=1 {shutil.which('gcc')}"  # still a command with its arguments
    result = use_the_library(tmp_path, CC=compiler)
    assert result.returncode == 0, result.stderr
    assert "kernel True loop True" in result.stdout and "unavailable" not in result.stderr


@pytest.fixture
def fresh_library(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDWRITING_HM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HANDWRITING_HM_NO_C_KERNEL", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    few_rows.library.cache_clear()
    yield
    monkeypatch.undo()
    few_rows.library.cache_clear()


def test_a_compiler_that_hangs_is_stopped_by_the_time_limit(tmp_path, monkeypatch, fresh_library):
    hanging = tmp_path / "hanging-cc"
    hanging.write_text("#!/bin/sh\nsleep 120\n")  # sleep is the script's child, holding its output open
    hanging.chmod(0o755)
    monkeypatch.setenv("CC", str(hanging))
    monkeypatch.setattr(few_rows, "BUILD_SECONDS", 1)
    start = time.monotonic()
    with pytest.warns(UserWarning, match=r"C kernels are unavailable.*1 s"):
        assert few_rows.library() is None
    assert time.monotonic() - start < 10


def test_a_cc_that_is_no_word_list_falls_back_with_one_line(monkeypatch, fresh_library):
    monkeypatch.setenv("CC", "'gcc")
    with pytest.warns(UserWarning, match="C kernels are unavailable.*CC") as said:
        assert few_rows.library() is None
    assert len(said) == 1 and "\n" not in str(said[0].message)


@needs_compiler
def test_a_command_says_the_rebuild_in_one_line(cache, tmp_path):
    from tests.factories import write_tiny_checkpoint

    truncated(the_library(cache))
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    env = {**os.environ, "HANDWRITING_HM_CACHE": str(cache), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("HANDWRITING_HM_NO_C_KERNEL", None)
    result = subprocess.run([sys.executable, "-m", "handwriting_hm.cli", "sample", "--checkpoint", str(checkpoint),
                             "--n-samples", "2", "--n-points", "20", "--out", str(tmp_path / "s.svg")],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("handwriting-hm: warning: rebuilding the C kernels' library: ")
    assert result.stderr.count("\n") == 1, result.stderr
