"""x @ weight.t() for a few rows of x, through a small C kernel (few_rows.c) where it is faster; and the
C library that holds it, with the sparse path's time loop (sparse_loop.c).

The sparse training path and the sampler multiply a handful of rows (the rows of a layer that
compute at one step) by a weight of 1601 x 400. torch's CPU BLAS is slow at that shape; the C
kernel reads each weight once for all the rows. The C sources are compiled on first use with the
machine's C compiler (a few seconds; `cc`, or $CC, a shell word list such as "ccache gcc", under a time
limit) into one library in a cache folder ($HANDWRITING_HM_CACHE, else ~/.cache/handwriting_hm), with
the SHA-256 of its bytes beside it, and loaded with ctypes once its size, checksum and symbols are
checked; a cached library that fails a check is rebuilt. Where they cannot be
(no compiler, no AVX2, not Linux, or HANDWRITING_HM_NO_C_KERNEL=1), `times_transposed` is plain
torch, the sparse path runs its Python loop, and the library says so once.

The kernel beats torch for a few rows per thread and loses from about 8 (docs/speed.md, "The few-row
kernel"): hence FEW_ROWS_PER_THREAD.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import Tensor

from ..atomic import atomic_write

FOLDER = Path(__file__).resolve().parents[1] / "csrc"  # the C sources
HEADER = "hmlstm.h"  # included by both sources: its digest is a define, so that the library's name follows it
COMPILE = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-fPIC",
           f"-DHMLSTM_H_DIGEST={hashlib.sha256((FOLDER / HEADER).read_bytes()).hexdigest()[:16]}")
# by the CPU's capability (torch's reading of it): with AVX-512 few_rows.c's tiles are twice as wide
# (docs/speed.md, "The few-row kernel", has the measurement)
VECTOR_FLAGS = {"AVX2": (), "AVX512": ("-mavx512f",)}
# source -> its own flags. The sparse loop's exp() loops vectorise only under -ffast-math (through
# glibc's libmvec); each file is compiled on its own and the library linked without it, as linking
# with -ffast-math would add a constructor that flushes denormals to zero in the whole process.
SOURCES = {"few_rows.c": (), "sparse_loop.c": ("-ffast-math",)}
LINK = ("-shared", "-fopenmp")
LIBRARIES = ("-lmvec", "-lm")
FEW_ROWS_PER_THREAD = 8  # the kernel is used for at most this many rows per intra-op thread
# what a cached library must hold to be loaded: few_rows.c's kernels and sparse_loop.c's entry points
REQUIRED = ("few_rows_times_transposed", "tile_product", "sparse_loop_forward", "sparse_loop_backward",
            "sparse_loop_struct_size")
LARGEST = 16 * 2**20  # bytes; the library this package builds is about 60 KB
BUILD_SECONDS = 300  # the whole build's time limit (it took 8 s on a 2-core machine): a hanging compiler is stopped


def cache_folder() -> Path:
    return Path(os.environ.get("HANDWRITING_HM_CACHE") or Path.home() / ".cache" / "handwriting_hm")


def compiler() -> list[str]:
    """The C compiler's command: $CC read as a shell word list ("ccache gcc"), else cc or gcc on PATH."""
    named = os.environ.get("CC", "").strip()
    if named:
        try:
            return shlex.split(named)
        except ValueError as error:
            raise RuntimeError(f"CC={named!r} is not a shell word list ({error})") from None
    found = shutil.which("cc") or shutil.which("gcc")
    if found is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC) on PATH")
    return [found]


def _compile(command: list[str], deadline: float) -> None:
    """Run one compiler command in its own process group, killed whole (a wrapper's children too) at `deadline`."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            _, errors = process.communicate(timeout=max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise RuntimeError(f"{command[0]} took longer than the build's time limit of {BUILD_SECONDS} s") from None
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {errors.strip().splitlines()[-1:] or process.returncode}")


def checksum_of(library: Path) -> Path:
    """The file beside `library` that holds the SHA-256 of its bytes, written when it was built."""
    return library.with_name(library.name + ".sha256")


def library_path(folder: Path) -> Path:
    """Where `build` puts the library in `folder`: a name per sources and flags (for this CPU's capability)."""
    vector = VECTOR_FLAGS[torch.backends.cpu.get_cpu_capability()]
    recipe = repr((COMPILE, vector, SOURCES, LINK, LIBRARIES)).encode()
    digest = hashlib.sha256(b"".join((FOLDER / name).read_bytes() for name in SOURCES) + recipe).hexdigest()[:16]
    return folder / f"handwriting_hm-{digest}.so"


def build(folder: Path, rebuild: bool = False) -> Path:
    """Compile the C sources into one library in `folder` (atomically; a name per sources and flags), with its
    checksum beside it, and return its path. An existing library is kept unless `rebuild`."""
    command = compiler()
    vector = VECTOR_FLAGS[torch.backends.cpu.get_cpu_capability()]
    library = library_path(folder)
    if library.exists() and not rebuild:
        return library
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + BUILD_SECONDS
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        objects = [str(Path(scratch) / f"{name}.o") for name in SOURCES]
        built = Path(scratch) / library.name
        commands = [[*command, *COMPILE, *vector, *flags, "-c", str(FOLDER / name), "-o", target]
                    for (name, flags), target in zip(SOURCES.items(), objects)]
        commands.append([*command, *LINK, *objects, "-o", str(built), *LIBRARIES])
        for step in commands:
            _compile(step, deadline)
        with atomic_write(checksum_of(library)) as file:
            file.write(hashlib.sha256(built.read_bytes()).hexdigest().encode())
        os.replace(built, library)
    return library


def load(library: Path) -> ctypes.CDLL:
    """Load `library` once its size, its checksum and its symbols are checked, from a private copy of the checked
    bytes (a memfd): neither a damaged file nor one changed in the cache afterwards is ever mapped. Raises
    RuntimeError, saying what is wrong, where a check fails."""
    try:
        size = library.stat().st_size
        if size > LARGEST:
            raise RuntimeError(f"{library} is {size:,} bytes, not a library this package builds")
        data, expected = library.read_bytes(), checksum_of(library).read_text().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise RuntimeError(f"{library} cannot be checked ({error})") from None
    if hashlib.sha256(data).hexdigest() != expected:
        raise RuntimeError(f"{library} does not match the checksum written beside it when it was built")
    descriptor = os.memfd_create(library.name)
    try:
        with os.fdopen(os.dup(descriptor), "wb") as copy:
            copy.write(data)
        loaded = ctypes.CDLL(f"/proc/self/fd/{descriptor}")
    finally:
        os.close(descriptor)
    missing = [name for name in REQUIRED if not hasattr(loaded, name)]
    if missing:
        raise RuntimeError(f"{library} lacks {', '.join(missing)}")
    return loaded


def wanted_here() -> bool:
    """Whether `library` tries to build or load the C library here: Linux, AVX2, HANDWRITING_HM_NO_C_KERNEL unset."""
    return (os.environ.get("HANDWRITING_HM_NO_C_KERNEL") != "1" and sys.platform.startswith("linux")
            and torch.backends.cpu.get_cpu_capability() in VECTOR_FLAGS)


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled C library (few_rows.c and sparse_loop.c), or None (said once on stderr) where it cannot run here.
    A cached library that fails its checks is rebuilt (said in one line) before it is given up."""
    if not wanted_here():
        return None
    try:
        path = build(cache_folder())
        try:
            return load(path)
        except RuntimeError as damage:
            warnings.warn(f"rebuilding the C kernels' library: {damage}", stacklevel=2)
        return load(build(cache_folder(), rebuild=True))
    except (OSError, RuntimeError) as error:
        warnings.warn(f"the C kernels are unavailable, using torch's operations instead: {error}", stacklevel=2)
        return None


def function(name: str, argtypes: list, restype: type | None = None) -> ctypes._CFuncPtr | None:
    """The library's function `name`, its argument and result types set; None where the library cannot run here."""
    compiled = library()
    if compiled is None:
        return None
    found = getattr(compiled, name)
    found.argtypes, found.restype = argtypes, restype
    return found


@functools.lru_cache(maxsize=1)
def kernel() -> ctypes._CFuncPtr | None:
    """The compiled few_rows_times_transposed, or None where the library cannot run here."""
    return function("few_rows_times_transposed", [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int])


def available_for(tensor: Tensor) -> bool:
    """Whether times_transposed can take the C kernel for products with this tensor's dtype and device."""
    return tensor.dtype == torch.float32 and tensor.device.type == "cpu" and kernel() is not None


def _plain_float32_product(x: Tensor, weight: Tensor, inner: int) -> bool:
    """Whether x @ (weight, read along its dimension `inner`) is a 2-D float32 CPU product outside autograd,
    which the C kernels can take."""
    return (x.dtype == torch.float32 and weight.dtype == torch.float32 and x.device.type == "cpu"
            and weight.device.type == "cpu" and x.dim() == 2 and weight.dim() == 2 and x.shape[1] == weight.shape[inner]
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)))


def times_transposed(x: Tensor, weight: Tensor) -> Tensor:
    """x @ weight.t() for x (m, k) and weight (n, k): by the C kernel for float32 CPU tensors of at most
    FEW_ROWS_PER_THREAD rows per intra-op thread, by torch otherwise. Not differentiable through the
    kernel: the callers are autograd Functions and samplers, which run without autograd."""
    threads = torch.get_num_threads()
    compiled = kernel()
    if compiled is None or x.shape[0] > FEW_ROWS_PER_THREAD * threads or not _plain_float32_product(x, weight, 1):
        return x @ weight.t()
    x, weight = x.contiguous(), weight.contiguous()
    y = x.new_empty(x.shape[0], weight.shape[0])
    if y.numel():
        compiled(x.data_ptr(), weight.data_ptr(), y.data_ptr(), x.shape[0], weight.shape[0], x.shape[1], threads)
    return y


@functools.lru_cache(maxsize=1)
def _tile_product() -> ctypes._CFuncPtr | None:
    return function("tile_product", [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int] * 2)


def times(x: Tensor, weight_t: Tensor) -> Tensor:
    """x @ weight_t for x (m, k) and weight_t (k, n), float32 CPU and outside autograd, by few_rows.c's tiles
    (the sparse C loop's products of three rows and more), else by torch."""
    compiled = _tile_product()
    if compiled is None or not _plain_float32_product(x, weight_t, 0):
        return x @ weight_t
    x, weight_t = x.contiguous(), weight_t.contiguous()
    y = x.new_empty(x.shape[0], weight_t.shape[1])
    if y.numel():
        compiled(x.data_ptr(), weight_t.data_ptr(), y.data_ptr(), x.shape[0], weight_t.shape[1], x.shape[1],
                 torch.get_num_threads(), 0)
    return y
