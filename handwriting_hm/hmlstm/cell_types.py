"""What every recurrent core of the library shares, and what the fast paths read: the state and output types,
the boundary detector (Eq. 7-9, with the straight-through estimator), the operation codes, the settings'
checks, and the input, mask and state helpers of a forward pass.

It imports nothing of the library but the settings' names (settings, which has no torch), so that the reference
loop (core), the LSTM baseline (lstm), the dispatch and the fast paths (paths/) all build on it without importing
one another. The choices it checks (`copy_gradient`, `z_on_copy`) are explained in core's docstring.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol, Sequence, Union

import torch
from torch import Tensor, nn

from .settings import BOUNDARY_MODES, COPY_GRADIENTS, GRADIENTS_FOR, Z_ON_COPY

COPY, UPDATE, FLUSH = 0, 1, 2
OPERATION_NAMES = ("COPY", "UPDATE", "FLUSH")

# A slope is a number, or a one-element tensor on the input's device. The tensor is for a training step
# replayed from a CUDA graph: the graph reads the tensor, which the trainer refills before each replay,
# where a number would be frozen into the graph at capture.
Slope = Union[float, Tensor]


# ----------------------------------------------------------------------------- boundary detector

def hard_sigmoid(x: Tensor) -> Tensor:
    """hard_sigm(x) = max(0, min(1, (x + 1) / 2)) (Eq. 8, with the slope already applied)."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


class _BoundaryFunction(torch.autograd.Function):
    """z = binarise(hard_sigm(a*s)) forward; the hard sigmoid's gradient backward (straight-through).

    The backward pass is the same in all three modes: d z / d s = a/2 where |a*s| < 1, else 0.
    Only the forward pass differs: step (z~ > 0.5), Bernoulli sample, or soft (z~ itself).
    """

    @staticmethod
    def forward(ctx, s: Tensor, slope: Slope, mode: str) -> Tensor:  # type: ignore[override]
        z_tilde = hard_sigmoid(slope * s)  # Eq. 8
        if mode == "step":
            z = (z_tilde > 0.5).to(s.dtype)  # Eq. 9, deterministic
        elif mode == "bernoulli":  # Eq. 9, sampled: one uniform per row, which faster paths draw alike
            z = (torch.rand_like(z_tilde) < z_tilde).to(s.dtype)
        else:
            z = z_tilde  # soft boundaries: no binarisation
        ctx.save_for_backward(s)
        ctx.slope = slope
        return z

    @staticmethod
    def backward(ctx, grad_z: Tensor):  # type: ignore[override]
        (s,) = ctx.saved_tensors
        inside = ((ctx.slope * s).abs() < 1.0).to(grad_z.dtype)
        return grad_z * inside * (ctx.slope / 2.0), None, None


def boundary(s: Tensor, slope: Slope, mode: str = "step") -> Tensor:
    """The boundary state z from its pre-activation s (Eq. 8-9) with the straight-through estimator."""
    check_slope(slope)
    check_boundary_mode(mode)
    return _BoundaryFunction.apply(s, slope if isinstance(slope, Tensor) else float(slope), mode)


def check_slope(slope: Slope) -> None:
    """A slope must be a finite number > 0 (the hard sigmoid is flat or reversed otherwise). A tensor slope
    must hold one floating-point value; its value is not read here (that would wait for the device), so
    whoever fills it checks it."""
    if isinstance(slope, Tensor):
        if slope.numel() != 1 or not slope.is_floating_point():
            raise ValueError(f"a slope tensor must hold one floating-point value, got {slope.dtype} of shape "
                             f"{tuple(slope.shape)}")
        return
    if not isinstance(slope, (int, float)) or not math.isfinite(slope) or slope <= 0:
        raise ValueError(f"slope must be a finite number > 0, got {slope!r}")


def slope_value(slope: Slope) -> float:
    """The slope as a number, for paths that take it as a constant (reading a device tensor waits for it)."""
    return float(slope.item()) if isinstance(slope, Tensor) else float(slope)


def check_boundary_mode(mode: str) -> None:
    if mode not in BOUNDARY_MODES:
        raise ValueError(f"unknown boundary mode {mode!r}: choose one of {', '.join(BOUNDARY_MODES)}")


# ----------------------------------------------------------------------------- state and output

class HMLSTMState(NamedTuple):
    """The recurrent state between steps (and between batches, for truncated BPTT)."""

    h: tuple[Tensor, ...]  # per layer, (B, H_l)
    c: tuple[Tensor, ...]  # per layer, (B, H_l)
    z: Tensor  # (B, L-1): z_{t-1}^l of layers 1..L-1 (the top layer has none)

    def detach(self) -> "HMLSTMState":
        return HMLSTMState(tuple(h.detach() for h in self.h), tuple(c.detach() for c in self.c), self.z.detach())

    def carried(self) -> "HMLSTMState":
        """The state to hand to the next window: cut from the graph (truncated BPTT), in float32."""
        return HMLSTMState(tuple(h.detach().float() for h in self.h), tuple(c.detach().float() for c in self.c),
                           self.z.detach().float())

    def to(self, device: torch.device | str) -> "HMLSTMState":
        return HMLSTMState(tuple(h.to(device) for h in self.h), tuple(c.to(device) for c in self.c), self.z.to(device))

    def is_finite(self) -> bool:
        """Whether every h and c is finite: a state that is not would poison every window after it."""
        return all(bool(torch.isfinite(t).all()) for t in (*self.h, *self.c))

    def saved(self) -> dict:
        """The state as a checkpoint keeps it (CPU tensors in lists; `from_saved` reads it back)."""
        return {"h": [h.cpu() for h in self.h], "c": [c.cpu() for c in self.c], "z": self.z.cpu()}

    @classmethod
    def from_saved(cls, saved: dict) -> "HMLSTMState":
        return cls(tuple(saved["h"]), tuple(saved["c"]), saved["z"])


class HMLSTMOutput(NamedTuple):
    hidden: tuple[Tensor, ...]  # per layer, (B, T, H_l); zeros at padded steps
    boundaries: Tensor  # (B, T, L-1): z_t^l of layers 1..L-1; zeros at padded steps
    state: HMLSTMState  # after each row's last valid step
    # (B, T, L-1): the s_z^l that each step's hard sigmoid read (Eq. 8, before the slope), with its
    # gradient; zeros at padded steps. The reference loop gives it; faster paths give None.
    preactivations: Tensor | None = None


class HMLSTMLike(Protocol):
    """What the fast paths, the dispatch and the stepper read of an HM-LSTM (core.HMLSTM is one): its sizes,
    settings and weights. Typed here, below them all, so that none of them imports the reference module."""

    hidden_sizes: tuple[int, ...]
    num_layers: int
    num_detectors: int
    boundary_mode: str
    copy_gradient: str
    z_on_copy: str
    recurrent: nn.ModuleList  # U_l^l with the bias b, per layer
    top_down: nn.ModuleList  # U_{l+1}^l, per layer but the top
    bottom_up: nn.ModuleList  # W_{l-1}^l, per layer
    norms: nn.ModuleList | None

    @property
    def boundary_outside_norm(self) -> bool: ...

    @property
    def c_loop_only(self) -> str | None: ...


def operations(boundaries: Tensor, initial_z: Tensor | None = None) -> Tensor:
    """The operation (COPY / UPDATE / FLUSH) each layer did at each step, from the boundaries.

    boundaries: (B, T, L-1) as returned by forward; initial_z: (B, L-1), the z carried in
    (zeros by default). Returns (B, T, L) integer codes. Soft boundaries are read as z > 0.5.
    """
    if boundaries.dim() != 3:
        raise ValueError(f"boundaries must be (batch, time, layers-1), got shape {tuple(boundaries.shape)}")
    batch, steps, n_detectors = boundaries.shape
    fired = boundaries > 0.5
    if initial_z is None:
        previous_first = torch.zeros(batch, 1, n_detectors, dtype=torch.bool, device=boundaries.device)
    else:
        previous_first = (initial_z > 0.5).unsqueeze(1)
    no_detector = torch.zeros(batch, steps, 1, dtype=torch.bool, device=boundaries.device)
    # z_{t-1}^l for every layer (the top layer's is always 0) and z_t^{l-1} (layer 0's is always 1)
    z_previous = torch.cat([torch.cat([previous_first, fired[:, :-1]], dim=1), no_detector], dim=2)
    z_below = torch.cat([~no_detector, fired], dim=2)
    codes = torch.full((batch, steps, n_detectors + 1), COPY, dtype=torch.long, device=boundaries.device)
    codes[z_below] = UPDATE
    codes[z_previous] = FLUSH
    return codes



def check_copy_gradient(copy_gradient: str, z_on_copy: str = "keep") -> None:
    """Raise ValueError unless the pair is one of GRADIENTS_FOR's."""
    if z_on_copy not in Z_ON_COPY:
        raise ValueError(f"unknown z_on_copy {z_on_copy!r}: choose one of {', '.join(Z_ON_COPY)}")
    if copy_gradient not in COPY_GRADIENTS:
        raise ValueError(f"unknown copy_gradient {copy_gradient!r}: choose one of {', '.join(COPY_GRADIENTS)}")
    if copy_gradient not in GRADIENTS_FOR[z_on_copy]:
        raise ValueError(f"copy_gradient={copy_gradient!r} does not go with z_on_copy={z_on_copy!r}: choose one of "
                         f"{', '.join(GRADIENTS_FOR[z_on_copy])}")



# ----------------------------------------------------------------------------- what the HM-LSTM and the LSTM share

class RecurrentCore(nn.Module):
    """What the HM-LSTM and the LSTM baseline share: their state's shape and its checks."""

    hidden_sizes: tuple[int, ...]
    num_detectors: int  # layers with a boundary detector: L-1 for the HM-LSTM, 0 for the LSTM

    def initial_state(self, batch_size: int, device: torch.device | None = None,
                      dtype: torch.dtype | None = None) -> HMLSTMState:
        """Zeros everywhere: no boundary before the first step."""
        weight = next(self.parameters())
        device, dtype = device or weight.device, dtype or weight.dtype
        zeros = tuple(torch.zeros(batch_size, h, device=device, dtype=dtype) for h in self.hidden_sizes)
        return HMLSTMState(zeros, tuple(torch.zeros_like(h) for h in zeros),
                           torch.zeros(batch_size, self.num_detectors, device=device, dtype=dtype))

    def check_state(self, state: HMLSTMState, batch_size: int) -> None:
        """Raise ValueError unless `state` fits this model and batch size."""
        expected = [(batch_size, h) for h in self.hidden_sizes]
        if (len(state.h) != len(expected) or len(state.c) != len(expected)
                or [tuple(h.shape) for h in state.h] != expected or [tuple(c.shape) for c in state.c] != expected
                or tuple(state.z.shape) != (batch_size, self.num_detectors)):
            raise ValueError(
                f"state does not fit: expected h and c of shapes {expected} and z of shape "
                f"{(batch_size, self.num_detectors)}, got h {[tuple(h.shape) for h in state.h]}, "
                f"c {[tuple(c.shape) for c in state.c]}, z {tuple(state.z.shape)}")

def check_input(x: Tensor, input_size: int) -> tuple[int, int]:
    """Raise ValueError unless x is (batch, time, input_size) floating point; return (batch, time)."""
    if x.dim() != 3 or x.shape[2] != input_size:
        raise ValueError(f"expected input of shape (batch, time, {input_size}), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point input, got {x.dtype}")
    return x.shape[0], x.shape[1]


def resolve_mask(lengths: Tensor | None, mask: Tensor | None, batch: int, steps: int,
                 device: torch.device) -> Tensor | None:
    """A (B, T) bool mask of valid steps from lengths or mask (at most one), or None if all are valid."""
    if lengths is not None and mask is not None:
        raise ValueError("give lengths or mask, not both")
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=device)
        if lengths.shape != (batch,) or lengths.is_floating_point():
            raise ValueError(f"lengths must be {batch} integers (one per sequence), got shape {tuple(lengths.shape)}")
        if bool((lengths < 0).any()) or bool((lengths > steps).any()):
            raise ValueError(f"lengths must lie in [0, {steps}], got {lengths.tolist()}")
        return torch.arange(steps, device=device).unsqueeze(0) < lengths.unsqueeze(1)
    if mask is not None:
        if tuple(mask.shape) != (batch, steps):
            raise ValueError(f"mask must have shape {(batch, steps)}, got {tuple(mask.shape)}")
        return mask.to(device=device, dtype=torch.bool)
    return None


def mask_state(valid: Tensor, new: HMLSTMState, old: HMLSTMState) -> HMLSTMState:
    """Keep `old` where valid (B, 1) is False: a padded step changes nothing."""
    return HMLSTMState(tuple(torch.where(valid, n, o) for n, o in zip(new.h, old.h)),
                       tuple(torch.where(valid, n, o) for n, o in zip(new.c, old.c)),
                       torch.where(valid, new.z, old.z))


def stack_time(per_step: list[list[Tensor]], x: Tensor, sizes: Sequence[int]) -> tuple[Tensor, ...]:
    """Stack lists of (B, size) tensors along a new time axis; (B, 0, size) for an empty sequence."""
    return tuple(torch.stack(steps, dim=1) if steps else x.new_zeros(x.shape[0], 0, size)
                 for steps, size in zip(per_step, sizes))
