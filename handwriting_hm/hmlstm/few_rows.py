"""x @ weight.t() for a few rows of x, through a small C kernel (few_rows.c) where it is faster.

The sparse training path and the sampler multiply a handful of rows (the rows of a layer that
compute at one step) by a weight of 1601 x 400. torch's CPU BLAS is slow at that shape; the C
kernel reads each weight once for all the rows. It is compiled on first use with the machine's C
compiler (about a second; `cc`, or $CC) into a cache folder ($HANDWRITING_HM_CACHE, else
~/.cache/handwriting_hm) and loaded with ctypes. Where it cannot be (no compiler, no AVX2, not
Linux, or HANDWRITING_HM_NO_C_KERNEL=1), `times_transposed` is plain torch and says so once.

Measured on a 2-core AMD EPYC (Zen 3), seven 1601 x 400 weights in turn, 2026-11-24: with two
threads the kernel took 0.07-0.23 ms for 1 to 8 rows against torch's 0.22-0.43 ms; with one
thread it is faster up to about 4 rows (1.2-1.8x) and slower from 8. Hence FEW_ROWS_PER_THREAD.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("few_rows.c")
FLAGS = ("-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC")
FEW_ROWS_PER_THREAD = 8  # the kernel is used for at most this many rows per intra-op thread


def cache_folder() -> Path:
    return Path(os.environ.get("HANDWRITING_HM_CACHE") or Path.home() / ".cache" / "handwriting_hm")


def build(folder: Path) -> Path:
    """Compile few_rows.c into `folder` (atomically; a name per source and flags) and return the library's path."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC) on PATH")
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:16]
    library = folder / f"few_rows-{digest}.so"
    if library.exists():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        built = Path(scratch) / library.name
        result = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(built)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
        os.replace(built, library)
    return library


@functools.lru_cache(maxsize=1)
def kernel() -> ctypes._CFuncPtr | None:
    """The compiled few_rows_times_transposed, or None (said once on stderr) where it cannot run here."""
    if os.environ.get("HANDWRITING_HM_NO_C_KERNEL") == "1":
        return None
    if not sys.platform.startswith("linux") or torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    try:
        function = ctypes.CDLL(str(build(cache_folder()))).few_rows_times_transposed
    except (OSError, RuntimeError) as error:
        warnings.warn(f"few-row C kernel unavailable, using torch's products instead: {error}", stacklevel=2)
        return None
    function.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    function.restype = None
    return function


def available_for(tensor: Tensor) -> bool:
    """Whether times_transposed can take the C kernel for products with this tensor's dtype and device."""
    return tensor.dtype == torch.float32 and tensor.device.type == "cpu" and kernel() is not None


def times_transposed(x: Tensor, weight: Tensor) -> Tensor:
    """x @ weight.t() for x (m, k) and weight (n, k): by the C kernel for float32 CPU tensors of at most
    FEW_ROWS_PER_THREAD rows per intra-op thread, by torch otherwise. Not differentiable through the
    kernel: the callers are autograd Functions and samplers, which run without autograd."""
    threads = torch.get_num_threads()
    if (x.shape[0] > FEW_ROWS_PER_THREAD * threads or x.dtype != torch.float32 or weight.dtype != torch.float32
            or x.device.type != "cpu" or weight.device.type != "cpu" or x.dim() != 2 or weight.dim() != 2
            or x.shape[1] != weight.shape[1]
            or (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return x @ weight.t()
    function = kernel()
    if function is None:
        return x @ weight.t()
    x, weight = x.contiguous(), weight.contiguous()
    y = x.new_empty(x.shape[0], weight.shape[0])
    if y.numel():
        function(x.data_ptr(), weight.data_ptr(), y.data_ptr(), x.shape[0], weight.shape[0], x.shape[1], threads)
    return y
