"""The text-conditioned handwriting model: Graves's attention window on the HM-LSTM core.

Graves (2013) §5.1: a window of K Gaussians slides over the one-hot characters c_1..c_U of the
text. From layer 1's output h^1_t (Eq. 48-51):

    (alpha_hat, beta_hat, kappa_hat) = W h^1_t + b            3K numbers
    alpha = exp(alpha_hat)   beta = exp(beta_hat)   kappa_t = kappa_{t-1} + exp(kappa_hat)
    phi(t, u) = sum_k alpha_k exp(-beta_k (kappa_k - u)^2)      (Eq. 46)
    w_t = sum_u phi(t, u) c_u                                   (Eq. 47)

kappa only grows, so the window can only move forwards along the text. Positions u count from 0
here and kappa_0 = 0: the window starts on the first character.

Where w_t goes, as in Graves: layer 1 reads [x_t; w_{t-1}] as its input, the layers above get
w_t, and so does the output module. How that meets the HM-LSTM's boundaries:

- Layer 1 reads its input at every step (z^0 = 1: it never COPYs), so the window is recomputed,
  and moves, at every point.
- Layer l >= 2 gets w_t as part of its bottom-up input, next to h^{l-1}_t (HMLSTM.layer_step's
  extra_bottom_up). Eq. 5 gates the bottom-up term with z^{l-1}_t, so layer l reads w_t only when
  the layer below fires: on UPDATE steps, and on FLUSH steps where the layer below fired too. On a
  COPY step (z^{l-1}_t = 0, z^l_{t-1} = 0) layer l does not see w_t at all: it keeps the h it had,
  which saw the window as it was at the last boundary below. So layer 2 reads the text where
  layer 1's segments end, layer 3 where layer 2's do.
- The output module always sees w_t: it enters GatedOutput as one more input beside every
  layer's h, with its own scalar gate, so each point is drawn knowing which character is being
  written, whatever the boundaries did.

Inputs follow HandwritingModel: offsets (dx, dy) normalised, end_of_stroke as is, and the input at
step t is the offset at t-1 (a zero vector first; `shift_inputs`), so every point is scored.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from .alphabet import Alphabet
from ..hmlstm.checkpoint import load_model
from ..hmlstm.cli import first_line
from ..hmlstm.core import (HMLSTM, STEPWISE_IMPLEMENTATIONS, HMLSTMState,
                          check_input, check_slope, check_stepwise_impl, mask_state, resolve_mask, stack_time,
                          stepwise_choice)
from ..hmlstm.output import GatedOutput
from ..mixture import MixtureDensityHead, MixtureParams, mixture_log_likelihood
from ..unconditional.model import read_stats, shift_inputs
from .config import KIND, SynthesisConfig  # defined without torch (for the parsers); clients import them here too


class Window(NamedTuple):
    """The attention window at one step (or every step, with a time axis after the batch)."""

    vector: Tensor  # w_t (B, V)
    kappa: Tensor  # (B, K) window centres, in character positions
    log_phi: Tensor  # (B, U + 1) log phi(t, u) for u = 0..U, the last one the position after the text


class SynthesisState(NamedTuple):
    """The recurrent state between steps: the core's, the window's centres and the last window vector."""

    core: HMLSTMState
    kappa: Tensor  # (B, K): kappa_{t-1}
    window: Tensor  # (B, V): w_{t-1}, layer 1's input at t

    def tensors(self) -> list[Tensor]:
        """Every tensor of the state in one list: h of each layer, c of each layer, z, kappa, window."""
        return [*self.core.h, *self.core.c, self.core.z, self.kappa, self.window]

    @classmethod
    def from_tensors(cls, tensors: Sequence[Tensor]) -> SynthesisState:
        """The inverse of `tensors`."""
        layers = (len(tensors) - 3) // 2
        h, c, (z, kappa, window) = tensors[:layers], tensors[layers:2 * layers], tensors[2 * layers:]
        return cls(HMLSTMState(tuple(h), tuple(c), z), kappa, window)

    def detach(self) -> SynthesisState:
        """Cut from the graph: the state to carry into the next chunk (truncated BPTT)."""
        return SynthesisState.from_tensors([t.detach() for t in self.tensors()])

    def to(self, device: torch.device | str) -> SynthesisState:
        return SynthesisState.from_tensors([t.to(device) for t in self.tensors()])


class SynthesisOutput(NamedTuple):
    params: MixtureParams  # next-point distribution at each step, leading shape (B, T)
    hidden: tuple[Tensor, ...]  # per layer, (B, T, H_l); zeros at padded steps
    boundaries: Tensor  # (B, T, L-1): z_t^l of layers 1..L-1
    windows: Window  # every step's: vector (B, T, V), kappa (B, T, K), log_phi (B, T, U + 1)
    state: SynthesisState  # after each row's last valid step


def window_position_weights(log_alpha: Tensor, beta: Tensor, kappa: Tensor, positions: int) -> Tensor:
    """log phi(u) = log sum_k alpha_k exp(-beta_k (kappa_k - u)^2) for u = 0..positions-1 (Eq. 46).

    In logs (log-sum-exp over k), so that far past the text, where every exp underflows to 0,
    the positions are still ordered: the stop rule compares them there.
    """
    u = torch.arange(positions, device=kappa.device, dtype=kappa.dtype)
    exponents = log_alpha[..., None] - beta[..., None] * (kappa[..., None] - u) ** 2  # (B, K, U)
    return torch.logsumexp(exponents, dim=-2)


IMPLS = STEPWISE_IMPLEMENTATIONS  # how `forward` runs its steps: the library's policy (see SynthesisModel)


class SynthesisModel(nn.Module):
    """Text-conditioned next-offset prediction: HM-LSTM core, attention window, gated output, mixture head.

    impl, how `forward` runs its loop of steps (not part of the config: it changes the speed, not
    the model). The window sits between layer 1 and layer 2 inside every step, so the core's fused
    and sparse paths, which run whole sequences, cannot serve here. Instead:
    - "reference": `step`, every gate of every layer at every point;
    - "compiled": `step` under torch.compile, which fuses its element-wise work. The text's length
      is marked dynamic, so a new text length does not compile again; a new batch size does, once.
      If compiling fails (no C++ compiler, say), the model says so in one line and runs the plain
      loop from then on;
    - "sparse": `sparse_step`, where layers 2 and up compute only their rows that do not COPY, and
      the top-down products are kept between steps (HMLSTM.sparse_layer_step). The same results up
      to rounding, for binary boundaries; the fewer boundaries fire, the less it computes;
    - "auto": the library's stepwise policy (hmlstm.dispatch.stepwise_choice): on the CPU "sparse" while
      layer 1's detector fired at under hmlstm.dispatch.SPARSE_BELOW of the points in the last call (and in the first) and
      copy_gradient is "straight", else "compiled"; elsewhere "compiled".
    """

    point_size = 3  # dx, dy, end_of_stroke

    def __init__(self, config: SynthesisConfig, impl: str = "reference") -> None:
        super().__init__()
        check_stepwise_impl(impl, config.copy_gradient)
        self.config = config
        self.impl = impl
        self._compiled_step = None  # torch.compile(self.step), made on first use
        self._z1_rate: float | None = None  # layer 1's firing rate in the last call of forward, for impl="auto"
        self.alphabet = Alphabet(config.alphabet)
        V, K, sizes = len(self.alphabet), config.n_window, config.hidden_sizes
        # layer 1 reads [x_t; w_{t-1}]; the reference loop is the one that runs (the window sits
        # between layer 1 and layer 2 of every step, which the fused paths do not allow)
        self.core = HMLSTM(self.point_size + V, sizes, layer_norm=config.layer_norm,
                           boundary_mode=config.boundary_mode, copy_gradient=config.copy_gradient, impl="reference")
        self.window = nn.Linear(sizes[0], 3 * K)  # (alpha_hat, beta_hat, kappa_hat) from h^1_t (Eq. 48)
        with torch.no_grad():
            self.window.bias[2 * K:].fill_(math.log(config.initial_window_step))
        # w_t into layer l >= 2's bottom-up term: its share of W_{l-1}^l for the input [h^{l-1}_t; w_t]
        self.window_in = nn.ModuleList(nn.Linear(V, 4 * size + (1 if l < len(sizes) - 1 else 0), bias=False)
                                       for l, size in enumerate(sizes) if l > 0)
        self.output = GatedOutput(tuple(sizes) + (V,), config.embedding_size)  # w_t is its last input
        self.head = MixtureDensityHead(config.embedding_size, config.n_mixtures)

    def initial_state(self, batch_size: int) -> SynthesisState:
        """Zeros: no boundary, the window on the first character (kappa = 0), no window vector read yet."""
        weight = self.window.weight
        return SynthesisState(self.core.initial_state(batch_size),
                              weight.new_zeros(batch_size, self.config.n_window),
                              weight.new_zeros(batch_size, len(self.alphabet)))

    def attend(self, h1: Tensor, kappa_prev: Tensor, text: Tensor) -> Window:
        """The window from layer 1's h^1_t (B, H_1), kappa_{t-1} (B, K) and the one-hot text (B, U, V)."""
        alpha_hat, beta_hat, kappa_hat = self.window(h1).chunk(3, dim=-1)  # Eq. 48
        kappa = kappa_prev + torch.exp(kappa_hat)  # Eq. 51: the window only moves forwards
        log_phi = window_position_weights(alpha_hat, torch.exp(beta_hat), kappa, text.shape[1] + 1)  # Eq. 46, 49-50
        vector = torch.einsum("bu,buv->bv", log_phi[:, :-1].exp(), text)  # Eq. 47
        return Window(vector, kappa, log_phi)

    def step(self, x: Tensor, text: Tensor, state: SynthesisState,
             slope: float = 1.0) -> tuple[SynthesisState, Tensor, Window]:
        """One point: x (B, 3) the previous offset, text (B, U, V) one-hot.
        Returns the new state, z_t (B, L-1) and the window."""
        core, mode = self.core, self.config.boundary_mode
        h1, c1, z1 = core.layer_step(0, torch.cat([x, state.window], dim=-1), x.new_ones(x.shape[0], 1),
                                     state.core, slope, mode)  # layer 1 reads [x_t; w_{t-1}] at every step
        window = self.attend(h1, state.kappa, text)
        new_h, new_c, new_z = [h1], [c1], [z1]
        for l in range(1, core.num_layers):  # layers >= 2 read w_t with h^{l-1}_t, only when z^{l-1}_t = 1
            h, c, z = core.layer_step(l, new_h[-1], new_z[-1], state.core, slope, mode,
                                      extra_bottom_up=self.window_in[l - 1](window.vector))
            new_h.append(h)
            new_c.append(c)
            if z is not None:
                new_z.append(z)
        z_t = torch.cat(new_z, dim=1)
        return SynthesisState(HMLSTMState(tuple(new_h), tuple(new_c), z_t), window.kappa, window.vector), z_t, window

    def sparse_step(self, x: Tensor, text: Tensor, state: SynthesisState, slope: float, top_down: list[Tensor],
                    valid: Tensor | None = None) -> tuple[SynthesisState, Tensor, Window, list[Tensor]]:
        """`step` computing, in layers 2 and up, only the rows that do not COPY.

        top_down[l] holds U_{l+1}^l h^{l+1}_{t-1} for every row (start it with `top_down_products`);
        it changes only where layer l+1 computed, so only those rows are multiplied again. Returns
        what `step` returns and the products for the next step. valid (B, 1) bool: rows at a
        padded step compute nothing in layers 2 and up (`forward` restores their state anyway).

        `forward`'s impl "sparse", for training: gradients flow through it. Writing steps on the library's
        COPY-skipping stepper instead (generate.py), which keeps no graph.
        """
        core, mode = self.core, self.config.boundary_mode
        h1, c1, z1 = core.layer_step(0, torch.cat([x, state.window], dim=-1), x.new_ones(x.shape[0], 1),
                                     state.core, slope, mode, top_down=top_down[0])  # layer 1 never COPYs
        window = self.attend(h1, state.kappa, text)
        new_h, new_c, new_z, new_top_down = [h1], [c1], [z1], list(top_down)
        for l in range(1, core.num_layers):
            window_in = self.window_in[l - 1]

            def extra(rows: Tensor | None) -> Tensor:  # w_t's share of the bottom-up term, for the rows that compute
                return window_in(window.vector if rows is None else window.vector.index_select(0, rows))

            h, c, z, rows = core.sparse_layer_step(l, new_h[-1], new_z[-1], state.core, slope, mode,
                                                   top_down[l] if l < core.num_detectors else None, extra, valid)
            if rows is None:  # every row computed
                new_top_down[l - 1] = core.top_down[l - 1](h)
            elif len(rows):
                new_top_down[l - 1] = top_down[l - 1].index_copy(0, rows, core.top_down[l - 1](h.index_select(0, rows)))
            new_h.append(h)
            new_c.append(c)
            if z is not None:
                new_z.append(z)
        z_t = torch.cat(new_z, dim=1)
        new_state = SynthesisState(HMLSTMState(tuple(new_h), tuple(new_c), z_t), window.kappa, window.vector)
        return new_state, z_t, window, new_top_down

    def top_down_products(self, state: SynthesisState) -> list[Tensor]:
        """U_{l+1}^l h^{l+1} of every row, for each layer below the top: what sparse_step starts from."""
        return [self.core.top_down[l](state.core.h[l + 1]) for l in range(self.core.num_detectors)]

    def forward(self, inputs: Tensor, text: Tensor, state: SynthesisState | None = None,
                lengths: Tensor | None = None, slope: float = 1.0) -> SynthesisOutput:
        """inputs: (B, T, 3) offsets already shifted (see `shift_inputs`); text: (B, U, V) one-hot,
        zero rows past each text's end; lengths (B,): valid points per row (padded steps change nothing)."""
        check_slope(slope)
        batch, steps = check_input(inputs, self.point_size)
        if text.dim() != 3 or text.shape[0] != batch or text.shape[2] != len(self.alphabet):
            raise ValueError(f"expected one-hot text of shape ({batch}, characters, {len(self.alphabet)}), "
                             f"got {tuple(text.shape)}")
        mask = resolve_mask(lengths, None, batch, steps, inputs.device)
        state = self.initial_state(batch) if state is None else state
        hidden: list[list[Tensor]] = [[] for _ in range(self.core.num_layers)]
        boundaries, vectors, kappas, log_phis = [], [], [], []
        impl = self.impl if self.impl != "auto" else self._auto_impl(inputs.device)
        step = self._compiled(text) if impl == "compiled" else self.step
        top_down = self.top_down_products(state) if impl == "sparse" else None
        for t in range(steps):
            valid = None if mask is None else mask[:, t:t + 1]
            if top_down is not None:
                new_state, z_t, window, top_down = self.sparse_step(inputs[:, t], text, state, slope, top_down, valid)
            else:
                try:
                    new_state, z_t, window = step(inputs[:, t], text, state, slope)
                except Exception as error:  # torch.compile's failures have no common type  # noqa: BLE001
                    if step is self.step or t > 0:
                        raise
                    step = self._not_compiled(error)  # the first step compiles: it failed, so run the plain loop
                    new_state, z_t, window = step(inputs[:, t], text, state, slope)
            if valid is not None:
                new_state = SynthesisState(mask_state(valid, new_state.core, state.core),
                                           torch.where(valid, new_state.kappa, state.kappa),
                                           torch.where(valid, new_state.window, state.window))
                z_t = z_t * valid
            state = new_state
            for l in range(self.core.num_layers):
                hidden[l].append(state.core.h[l] if mask is None else state.core.h[l] * valid)
            boundaries.append(z_t)
            vectors.append(state.window)
            kappas.append(state.kappa)
            log_phis.append(window.log_phi)
        hidden_t = stack_time(hidden, inputs, self.core.hidden_sizes)
        vectors_t, kappas_t, log_phis_t, boundaries_t = stack_time(
            [vectors, kappas, log_phis, boundaries], inputs,
            (len(self.alphabet), self.config.n_window, text.shape[1] + 1, self.core.num_detectors))
        if self.impl == "auto":  # what the next call decides on
            valid_points = steps * batch if mask is None else int(mask.sum())
            self._z1_rate = float(boundaries_t[..., 0].detach().sum()) / max(valid_points, 1)
        params = self.head(self.output(hidden_t + (vectors_t,)))
        return SynthesisOutput(params, hidden_t, boundaries_t, Window(vectors_t, kappas_t, log_phis_t), state)

    def _auto_impl(self, device: torch.device) -> str:
        """The step "auto" takes now: the library's stepwise policy (hmlstm.dispatch.stepwise_choice)."""
        return stepwise_choice("auto", device, self.config.copy_gradient, self._z1_rate)[0]

    def _compiled(self, text: Tensor):
        """torch.compile(self.step), made once; the text's length marked dynamic (any length, one compiled step)."""
        if self._compiled_step is None:
            self._compiled_step = torch.compile(self.step)
        if text.shape[1] > 1:  # torch.compile treats lengths 0 and 1 as constants anyway
            torch._dynamo.mark_dynamic(text, 1)
        return self._compiled_step

    def _not_compiled(self, error: Exception):
        """Say in one line that compiling failed, and run the plain step from now on."""
        print(f"handwriting-hm: torch.compile failed ({first_line(error)[:200]}); the synthesis step runs uncompiled",
              file=sys.stderr)
        self.impl = "reference"
        return self.step

    def sequence_log_likelihood(self, offsets: Tensor, text: Tensor, lengths: Tensor | None = None,
                                slope: float = 1.0) -> tuple[Tensor, SynthesisOutput]:
        """Total log-likelihood (nats) of each line given its text: offsets (B, T, 3) -> (B,).
        Padded steps (beyond `lengths`) count nothing."""
        output = self(shift_inputs(offsets), text, lengths=lengths, slope=slope)
        per_step = mixture_log_likelihood(output.params, offsets)
        if lengths is not None:
            valid = torch.arange(offsets.shape[1], device=offsets.device)[None, :] < lengths.to(offsets.device)[:, None]
            per_step = per_step * valid
        return per_step.sum(dim=1), output


# ----------------------------------------------------------------------------- loading

UNNORMALISED = {"mean": (0.0, 0.0), "std": (1.0, 1.0)}  # the stats of data that was not normalised (the toy font)


class LoadedSynthesisModel(NamedTuple):
    model: SynthesisModel  # in eval mode, float32
    stats: dict[str, tuple[float, float]]  # {"mean": (dx, dy), "std": (dx, dy)}: raw units of the training data
    slope: float  # the boundary slope at the time of the checkpoint
    metadata: dict[str, Any]


def load_synthesis_model(path: str | Path, map_location: Any = "cpu") -> LoadedSynthesisModel:
    """Load a synthesis checkpoint for inference. Raises ValueError with one line for a missing,
    corrupt or incompatible file. Without normalisation stats in its metadata (the toy font's
    data is not normalised) the offsets are taken as they are: mean 0, std 1."""
    loaded = load_model(path, KIND, SynthesisConfig, SynthesisModel, "synthesis model",
                        lambda metadata, model: read_stats(metadata.get("stats", UNNORMALISED)), map_location)
    return LoadedSynthesisModel(loaded.model, loaded.read, loaded.slope, loaded.metadata)
