"""Which path runs an HM-LSTM's forward pass, and the call into it: the one module that names every path.

The reference loop (core.HMLSTM) is the specification; the fast paths in paths/ compute the same function
faster where they can run: "fused" (one autograd Function, a hand-written backward), "sparse" (only the rows
that do not COPY; its time loop in C for float32 on the CPU), "triton" (Triton kernels, CUDA or Triton's
interpreter). `impl_choice` picks one for "auto" and says why; `run_path` calls it. The speeds behind the
"auto" policy are in docs/speed.md.
"""
from __future__ import annotations


import torch
from torch import Tensor

from .cell_types import HMLSTMLike, HMLSTMOutput, HMLSTMState, Slope, slope_value
from .paths.few_rows import library as few_rows_library
from .settings import IMPLEMENTATIONS, STEPWISE_IMPLEMENTATIONS  # named there, without torch, for the parsers

FAST_PATHS = ("fused", "sparse", "triton")
SPARSE_BELOW = 0.2  # stepwise "auto" on the CPU: the sparse step while layer 1 fires less often than this


def c_loop_available() -> bool:
    """Whether the C library (the sparse path's C loop and the few-row kernel) runs here."""
    return few_rows_library() is not None


def check_impl(impl: str) -> None:
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown impl {impl!r}: choose one of {', '.join(IMPLEMENTATIONS)}")


def resolve_impl(impl: str, device: torch.device | str = "cpu", boundary_mode: str = "step",
                 copy_gradient: str = "straight", c_loop_only: str | None = None) -> str:
    """The path that runs: `impl` itself, or for "auto" the fastest that can run here (impl_choice says why)."""
    return impl_choice(impl, device, boundary_mode, copy_gradient, c_loop_only)[0]


def impl_choice(impl: str, device: torch.device | str = "cpu", boundary_mode: str = "step",
                copy_gradient: str = "straight", c_loop_only: str | None = None) -> tuple[str, str]:
    """(path, one line saying why). "auto" picks, per device, what handwriting_hm.bench measured fastest:
    on the CPU the sparse path where it can run (binary boundaries), else the fused path; on a GPU the
    Triton kernels where triton is installed, else the fused path. `c_loop_only` (HMLSTM.c_loop_only) names
    a setting that only the reference loop and the sparse C loop run: where the C library does not run,
    "auto" then picks the reference loop, and a faster path is refused."""
    check_impl(impl)
    if c_loop_only is not None and not c_loop_available():
        only = f"{c_loop_only} without the C loop"
        if impl == "auto":
            return "reference", f"auto: the reference loop, the only path that runs {only}"
        if impl != "reference":
            raise ValueError(f"impl={impl!r} cannot run {only}: use impl='reference' or 'auto'")
    if c_loop_only is not None:
        if impl in ("fused", "triton"):
            raise ValueError(f"impl={impl!r} cannot run {c_loop_only}: use impl='sparse' (the C loop, float32 on the "
                             f"CPU), 'reference' or 'auto'")
        if impl == "auto":
            if torch.device(device).type == "cpu" and boundary_mode in ("step", "bernoulli"):
                return "sparse", (f"auto on the CPU: the sparse path's C loop, which skips the work of COPY rows and "
                                  f"runs {c_loop_only}")
            return "reference", f"auto: the reference loop, as {c_loop_only} runs there and in the sparse C loop only"
    if impl == "sparse" and boundary_mode == "soft":
        raise ValueError("impl='sparse' needs binary boundaries (here 'soft'): use impl='fused' or 'auto'")
    if impl != "auto":
        return impl, f"impl={impl!r} was asked for"
    device = torch.device(device)
    if device.type == "cuda":
        from .paths.triton_cell import triton_available  # imported here: it imports triton when installed
        if triton_available(device):
            return "triton", "auto on CUDA: the Triton kernels (one kernel per layer-step and direction)"
        return "fused", "auto on CUDA without triton: the fused path"
    if boundary_mode in ("step", "bernoulli"):
        how = ("its time loop in C for float32 (sparse_loop.c)" if c_loop_available()
               else "its Python loop through torch's products (the C library is unavailable)")
        return "sparse", (f"auto on the CPU: the sparse path, which skips the work of COPY rows "
                          f"(copy_gradient={copy_gradient!r}), {how}")
    return "fused", "auto on the CPU: the fused path, as the sparse one needs binary boundaries (here 'soft')"


def run_path(path: str, core: HMLSTMLike, x: Tensor, state: HMLSTMState, mask: Tensor | None, slope: Slope, mode: str,
             forced_z1: Tensor | None = None) -> HMLSTMOutput:
    """HMLSTM.forward's pass by the fast path `path` (one of FAST_PATHS), with already checked arguments."""
    # the paths are imported on their first call, so that importing the library loads none of them
    if path == "fused":
        from .paths import fused
        return fused.hmlstm_fused(core, x, state, mask, slope_value(slope), mode)
    if path == "sparse":
        from .paths import sparse
        return sparse.hmlstm_sparse(core, x, state, mask, slope_value(slope), mode, forced_z1)
    if path == "triton":
        from .paths.triton_cell import hmlstm_triton  # imported here: it imports triton when installed
        return hmlstm_triton(core, x, state, mask, slope, mode)
    raise ValueError(f"{path!r} is not a fast path: choose one of {', '.join(FAST_PATHS)}")


def check_stepwise_impl(impl: str, copy_gradient: str = "straight") -> None:
    """Raise ValueError unless `impl` is one of STEPWISE_IMPLEMENTATIONS and can run `copy_gradient`."""
    if impl not in STEPWISE_IMPLEMENTATIONS:
        raise ValueError(f"unknown impl {impl!r}: choose one of {', '.join(STEPWISE_IMPLEMENTATIONS)}")
    if impl == "sparse" and copy_gradient != "straight":
        raise ValueError(f"impl='sparse' passes nothing back through the COPY rows it skips, so it needs "
                         f"copy_gradient='straight' (here {copy_gradient!r}): use 'compiled' or 'auto'")


def stepwise_choice(impl: str, device: torch.device | str = "cpu", copy_gradient: str = "straight",
                    z1_rate: float | None = None) -> tuple[str, str]:
    """(way, one line saying why) for a model that steps the core itself: "reference" (every gate of every
    layer at every step), "compiled" (the step under torch.compile) or "sparse" (HMLSTM.sparse_layer_step:
    layers 2 and up compute only their rows that do not COPY). "auto" picks, as impl_choice does for whole
    sequences, by device: on the CPU the sparse step while layer 1's detector fired at under SPARSE_BELOW of
    the points of the last call (`z1_rate`; None before the first) and copy_gradient is "straight"; else, and on
    a GPU, where reading the boundaries at every layer-step would stall the device, the compiled step. On the
    CPU the sparse step beats the compiled one while few detectors fire and loses to it when half fire
    (docs/synthesis.md has the measurements)."""
    check_stepwise_impl(impl, copy_gradient)
    if impl != "auto":
        return impl, f"impl={impl!r} was asked for"
    if torch.device(device).type != "cpu":
        return "compiled", "auto on a GPU: the compiled step (the sparse one would read the boundaries every step)"
    if copy_gradient != "straight":
        return "compiled", "auto on the CPU: the compiled step, as the sparse one needs copy_gradient='straight'"
    if z1_rate is None or z1_rate < SPARSE_BELOW:
        return "sparse", "auto on the CPU: the sparse step, as layer 1 fires rarely"
    return "compiled", "auto on the CPU: the compiled step, as layer 1 fires often"
