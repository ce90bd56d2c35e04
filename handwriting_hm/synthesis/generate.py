"""Writing a given text with a synthesis model, one point at a time, until the text is written.

Step t reads the previous point (a zero vector at t = 0), updates the core and the window, and
draws point t. A row stops when the window has passed its last character (Graves 2013 §5.2):
phi(t, U), the weight of the position after the text (u counts from 0), exceeds phi(t, u) for
every character u < U; and the pen is up, i.e. the last point drawn ended a stroke (or none was
drawn). The pen-up condition is ours: the window leaves the last character while its last
stroke is still being drawn, and Graves's rule alone cut that stroke short (on the toy font,
most lines lost their last character so). A row whose window never gets past the text stops at
a cap that scales with it, `max_points_per_character` points per character, so no row runs on.

Rows are aligned as in unconditional/generate.py: row j of the boundaries and of the window says what the
model did while READING point j, and the stop rule is checked on that window.

On the CPU the steps run on the library's COPY-skipping stepper (hmlstm/stepper.py), as unconditional
sampling does, the window passed to the layers above through its hook (SkippingStepper); where that stepper
cannot run (soft boundaries, a GPU) they run SynthesisModel.step (PlainStepper).

Style priming (Graves §5.5): given a primer, a real line's offsets and its text, the model first
reads the primer's strokes with the window over the primer's text followed by the text to write
(one string: the caller puts a space between them where one belongs), then writes on from there,
in the state the primer left. Only the new points are returned; the cap counts the new text only.
A primer with more ink than its text says (a long line given a short text) would leave the window
beyond the text's first character, or past all of it, before a point is drawn: such a primer is read
from its last strokes only
(`fit_primers`), and `Written.primed` says how many of its points were read.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from ..hmlstm.core import check_slope
from ..hmlstm.stepper import CopySkippingStepper, refusal
from ..mixture import adjust, sample_mixture
from ..unconditional.model import shift_inputs
from .model import SynthesisModel, SynthesisState, Window


class Written(NamedTuple):
    offsets: Tensor  # (N, T, 3): dx, dy (normalised, as the model sees them), end_of_stroke; zeros past each length
    lengths: Tensor  # (N,) points written per row
    finished: Tensor  # (N,) bool: the window passed the text, pen up (False: the cap stopped the row)
    boundaries: Tensor  # (N, T, L-1): z of layers 1..L-1 while reading point t
    log_phi: Tensor  # (N, T, U_max + 1): log phi(u) while reading point t (which characters it attends to);
    # with primers, u counts over the primer's text and the text together
    primed: Tensor | None = None  # (N,) with primers: how many of each primer's points were read (`fit_primers`)


def window_passed_text(window: Window, text_lengths: Tensor) -> Tensor:
    """Graves's stop rule, per row (B,) bool: phi at position U (after the text) above phi at every u < U.
    Compared in logs, so a window far past the end, where every phi underflows, still counts as past."""
    log_phi = window.log_phi
    positions = torch.arange(log_phi.shape[-1], device=log_phi.device)
    on_text = torch.where(positions < text_lengths[:, None], log_phi, torch.full_like(log_phi, -torch.inf))
    after_text = log_phi.gather(-1, text_lengths[:, None]).squeeze(-1)
    return after_text > on_text.max(dim=-1).values


# The step cap, in points per character of the text. Real IAM-OnDB test lines use 21.4 at the median and 37.7
# at the 99th percentile; the shipped synthesis model writes more slowly the higher the bias, and at bias 1
# finished 22 of 100 test texts within 40 points per character, 88 within 60 and 99 within 80.
MAX_POINTS_PER_CHARACTER = 80


@torch.inference_mode()
def write_texts(model: SynthesisModel, texts: Sequence[str], bias: float = 0.0, temperature: float = 1.0,
                slope: float = 1.0, max_points_per_character: int = MAX_POINTS_PER_CHARACTER,
                generator: torch.Generator | None = None,
                primers: Sequence[tuple[Tensor, str]] | None = None) -> Written:
    """Write each text once (one row per text), each after its primer if given: (offsets (T_i, 3),
    normalised as the model sees them, and their text). Raises UnknownCharacters (a ValueError,
    naming them) for characters outside the model's alphabet; bias and temperature as in mixture.adjust."""
    check_slope(slope)
    if not isinstance(max_points_per_character, int) or max_points_per_character < 1:
        raise ValueError(f"max_points_per_character must be a whole number >= 1, got {max_points_per_character!r}")
    device = model.window.weight.device
    # checks bias and temperature now, even where no point gets drawn
    adjust(model.head(torch.zeros(1, model.config.embedding_size, device=device)), bias, temperature)
    if primers is not None and len(primers) != len(texts):
        raise ValueError(f"give one primer per text: {len(primers)} primers for {len(texts)} texts")
    if not texts:
        raise ValueError("give at least one text to write")
    for line in texts:
        model.alphabet.check(line)  # an empty text is refused even after a primer
    caps = torch.tensor([len(line) for line in texts], device=device) * max_points_per_character
    if primers is not None:
        texts = [primer_text + line for (_, primer_text), line in zip(primers, texts)]
    one_hot, text_lengths = model.alphabet.one_hot(texts)
    one_hot, text_lengths = one_hot.to(device), text_lengths.to(device)
    n = len(texts)
    primed = None
    if primers is None:
        stepper = stepper_for(model, one_hot, model.initial_state(n), slope)
        _, window = stepper.step(one_hot.new_zeros(n, 3))  # reads the zero vector
    else:
        primer_lengths = torch.tensor([len(primer_text) for _, primer_text in primers], device=device)
        state, window, primed = fit_primers(model, [offsets.to(device) for offsets, _ in primers], one_hot,
                                            primer_lengths, slope)
        stepper = stepper_for(model, one_hot, state, slope)
    passed = window_passed_text(window, text_lengths)  # nothing drawn yet: the pen is up
    lengths = torch.zeros(n, dtype=torch.long, device=device)
    points, boundaries, log_phis = [], [], []
    for _ in range(int(caps.max())):
        writing = ~passed & (lengths < caps)
        if not bool(writing.any()):
            break
        params = model.head(model.output(stepper.output_inputs()))
        x = sample_mixture(params, bias, temperature, generator) * writing[:, None]  # stopped rows write nothing
        lengths += writing.long()
        z, window = stepper.step(x)  # reads the point just drawn
        points.append(x)
        boundaries.append(z * writing[:, None])
        log_phis.append(window.log_phi)
        passed = passed | (writing & window_passed_text(window, text_lengths) & (x[:, 2] > 0.5))
    sizes = ((points, 3), (boundaries, model.core.num_detectors), (log_phis, one_hot.shape[1] + 1))
    stacked = [torch.stack(values, dim=1) if values else one_hot.new_zeros(n, 0, size) for values, size in sizes]
    return Written(stacked[0], lengths, passed, stacked[1], stacked[2], None if primers is None else primed)


class PlainStepper:
    """SynthesisModel.step itself, every gate of every layer at every point, from `state` over the one-hot `text`."""

    def __init__(self, model: SynthesisModel, text: Tensor, state: SynthesisState, slope: float) -> None:
        self.model, self.text, self.state, self.slope = model, text, state, slope

    def step(self, x: Tensor) -> tuple[Tensor, Window]:
        """Read x (B, 3); return z_t (B, L-1) and the window."""
        self.state, z_t, window = self.model.step(x, self.text, self.state, self.slope)
        return z_t, window

    def output_inputs(self) -> tuple[Tensor, ...]:
        """What the gated output reads: every layer's h, then w_t."""
        return self.state.core.h + (self.state.window,)


class SkippingStepper:
    """PlainStepper's steps on the library's COPY-skipping stepper (hmlstm/stepper.py): a layer computes only its
    rows that FLUSH or UPDATE. Layer 1 reads [x_t; w_{t-1}] as its input, at every step. The window is computed
    once per step from h^1_t: when a layer above first asks the stepper's hook for its share of w_t (computed for
    the rows that read it only), else after the step, as kappa moves at every point whatever the layers above do.
    The same results as PlainStepper: bit for bit for one text (torch's products), to rounding for several
    (few_rows.c's products, see hmlstm/stepper.py)."""

    def __init__(self, model: SynthesisModel, text: Tensor, state: SynthesisState, slope: float) -> None:
        self.model, self.text = model, text
        self.core = CopySkippingStepper(model.core, text.shape[0], slope, state=state.core)
        self.kappa, self.vector = state.kappa, state.window
        self.window_in = [layer.weight for layer in model.window_in]  # read once, as the stepper reads its own

    def step(self, x: Tensor) -> tuple[Tensor, Window]:
        """Read x (B, 3); return z_t (B, L-1) and the window."""
        core, window = self.core, None

        def window_share(l: int, rows: Tensor | None) -> Tensor | None:
            nonlocal window
            if l == 0:  # layer 1 reads w_{t-1}, in its input
                return None
            if window is None:  # layer 1 has run: core.h[0] is h^1_t
                window = self.model.attend(core.h[0], self.kappa, self.text)
            vector = window.vector if rows is None else window.vector.index_select(0, rows)
            return core.linear(vector, self.window_in[l - 1])

        z_t = x.new_zeros(x.shape[0], self.model.core.num_detectors)
        core.step(torch.cat([x, self.vector], dim=-1), z_t, window_share)
        if window is None:  # every layer above COPYd in every row
            window = self.model.attend(core.h[0], self.kappa, self.text)
        self.kappa, self.vector = window.kappa, window.vector
        return z_t, window

    def output_inputs(self) -> tuple[Tensor, ...]:
        """What the gated output reads: every layer's h, then w_t (valid until the next step)."""
        return tuple(self.core.h) + (self.vector,)


def stepper_for(model: SynthesisModel, text: Tensor, state: SynthesisState,
                slope: float) -> PlainStepper | SkippingStepper:
    """The stepper that writes: the COPY-skipping one on the CPU where it can run the core, else the plain step
    (on a GPU, as reading the boundaries at every layer of every step would stall the device)."""
    if text.device.type != "cpu" or refusal(model.core) is not None:
        return PlainStepper(model, text, state, slope)
    return SkippingStepper(model, text, state, slope)


def read_primers(model: SynthesisModel, primers: Sequence[Tensor], text: Tensor,
                 slope: float) -> tuple[SynthesisState, Window]:
    """Run the model over each primer's offsets (T_i, 3) with the window over `text` (B, U, V), up
    to and including its last point: the state and window from which writing continues."""
    lengths = torch.tensor([len(offsets) for offsets in primers], device=text.device)
    if bool((lengths == 0).any()):
        raise ValueError("a primer has no points: give a line of strokes, or no primer")
    offsets = text.new_zeros(len(primers), int(lengths.max()), 3)
    for row, primer in enumerate(primers):
        offsets[row, :len(primer)] = primer
    read = model(shift_inputs(offsets), text, lengths=lengths, slope=slope)  # every point but the last
    last = offsets[torch.arange(len(primers), device=text.device), lengths - 1]
    state, _, window = model.step(last, text, read.state, slope)
    return state, window


def fit_primers(model: SynthesisModel, primers: Sequence[Tensor], text: Tensor, primer_lengths: Tensor,
                slope: float) -> tuple[SynthesisState, Window, Tensor]:
    """`read_primers`, each primer whose reading leaves the window weighing most a character beyond the first
    of the text to write (its own text is primer_lengths (B,) characters of `text`; a whole line ends at
    that first character, as a written line stops there) read again from its last points only: from the
    first stroke that starts in its second half (from its middle where none does), halved until the
    window weighs most no character beyond. Returns the state, the window and how many points of each
    were read."""
    kept = [len(offsets) for offsets in primers]
    while True:
        state, window = read_primers(model, [offsets[len(offsets) - k:] for offsets, k in zip(primers, kept)],
                                     text, slope)
        ahead = (window.log_phi.argmax(dim=-1) > primer_lengths).tolist()
        if not any(past and k > 1 for past, k in zip(ahead, kept)):
            return state, window, torch.tensor(kept, device=text.device)
        for row, (offsets, past) in enumerate(zip(primers, ahead)):
            if past and kept[row] > 1:
                begin = len(offsets) - kept[row]
                middle = begin + kept[row] // 2
                # a stroke starts after each pen-up
                starts = (offsets[middle - 1:-1, 2] > 0.5).nonzero()[:, 0] + middle
                kept[row] = len(offsets) - (int(starts[0]) if len(starts) else middle)
