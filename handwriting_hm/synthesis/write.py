"""Write a text in handwriting from Python: `write("hello", "run/best.pt")`.

`write` wraps `generate.write_texts` for people rather than for tensors: it loads the
checkpoint (or takes a loaded model), seeds its own generator (same seed, same drawing), and
turns the model's normalised offsets back into the raw units of its training data. Besides the
ink, each point says what each boundary detector did and which character the window weighed most
while the point was read: what a picture of the boundaries against the letters needs.

`style` primes the model with a real line (Graves §5.5): its offsets in the training data's raw
units and its text, from `styles.py` (an IAM-OnDB line id, strokes a person drew, a JSON or InkML
file). The window then reads the style's text, a space where the alphabet has one, and the text.

`write_each` writes several texts in one batch of the sampler; `write_lines` writes a text of
several lines (its newlines, and wrapping at a width in characters) and lays them out on a page
(left-aligned or centred, a line spacing, baselines levelled if asked): a `WrittenPage`, whose
`offsets` every drawing function of the drawing package draws. `handwriting-hm write` is its command
(write_command.py).
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..normalisation import coordinate_scale, raw_offsets

from .alphabet import UnknownCharacters
from ..drawing.geometry import offsets_to_points, split_strokes, straighten_baseline
from ..shipped import DEFAULT_SYNTHESIS_MODEL
from ..unconditional.sample import LIMITS
from .styles import check_style
from .write_limits import ALIGNMENTS
from .model import KIND, LoadedSynthesisModel, load_synthesis_model
from .generate import MAX_POINTS_PER_CHARACTER, write_texts

SEEDS = LIMITS["seed"]  # what torch's generator takes


@dataclass
class WrittenText:
    text: str
    offsets: np.ndarray  # (T, 3): dx, dy in the training data's raw units, end_of_stroke 0 or 1
    boundaries: np.ndarray  # (T, L-1): z of layers 1..L-1 while reading each point, 0 or 1
    attended: np.ndarray  # (T,): index into `text` of the character the window weighed most at each point
    finished: bool  # the window passed the text (False: the step cap stopped it)
    primed: int | None = None  # with a style: how many of its points primed the model (its last ones, where all
    # of them would have left the window past the text: synthesis_generate.fit_primers)

    @property
    def strokes(self) -> list[np.ndarray]:
        """One (n_i, 2) array of absolute x, y per pen-down stroke."""
        return split_strokes(offsets_to_points(self.offsets))


def write(text: str, checkpoint: str | Path | LoadedSynthesisModel, *, style: tuple[np.ndarray, str] | None = None,
          bias: float = 0.0, temperature: float = 1.0, seed: int = 0,
          max_points_per_character: int = MAX_POINTS_PER_CHARACTER) -> WrittenText:
    """Write `text` with a synthesis checkpoint (a path, or what load_synthesis_model returned),
    in the hand of `style` if given: (offsets (T, 3) in raw units, their text).

    Raises UnknownCharacters (a ValueError naming them) for characters the model cannot write,
    and ValueError with one line for an unusable checkpoint or bad parameters.
    """
    return write_each([text], checkpoint, style=style, bias=bias, temperature=temperature, seed=seed,
                      max_points_per_character=max_points_per_character)[0]


def write_each(texts: Sequence[str], checkpoint: str | Path | LoadedSynthesisModel, *,
               style: tuple[np.ndarray, str] | None = None, bias: float = 0.0, temperature: float = 1.0,
               seed: int = 0, max_points_per_character: int = MAX_POINTS_PER_CHARACTER) -> list[WrittenText]:
    """`write` for several texts at once: one batch of the sampler, one WrittenText per text, each
    primed with the same style. One text gives exactly what `write` gives."""
    low, high = SEEDS
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not low <= seed <= high:
        raise ValueError(f"seed must be a whole number between {low} and {high}, got {seed!r:.80}")
    if style is not None:
        check_style(*style)
    loaded = checkpoint if isinstance(checkpoint, LoadedSynthesisModel) else load_synthesis_model(checkpoint)
    primers, offset = None, 0
    if style is not None:
        style_offsets, style_text = style
        if " " in loaded.model.alphabet.ids:
            style_text += " "
        primer = normalised_offsets(style_offsets, loaded.stats)
        primers, offset = [(primer, style_text)] * len(texts), len(style_text)
    generator = torch.Generator().manual_seed(int(seed))
    written = write_texts(loaded.model, list(texts), bias=bias, temperature=temperature, slope=loaded.slope,
                          max_points_per_character=max_points_per_character, generator=generator, primers=primers)
    lines = []
    for row, text in enumerate(texts):
        length = int(written.lengths[row])
        log_phi = written.log_phi[row, :length, offset:offset + len(text)]  # the text's characters only
        lines.append(WrittenText(text=text,
                                 offsets=raw_offsets(written.offsets[row, :length].numpy(), loaded.stats),
                                 boundaries=written.boundaries[row, :length].round().long().numpy(),
                                 attended=log_phi.argmax(dim=-1).numpy(),
                                 finished=bool(written.finished[row]),
                                 primed=None if written.primed is None else int(written.primed[row])))
    return lines


def write_in_batches(texts: Sequence[str], loaded: LoadedSynthesisModel, bias: float = 0.0, seed: int = 0,
                     batch_size: int = 32, progress: str | None = None) -> list[WrittenText]:
    """`write_each` over batches of `batch_size` texts, each batch seeded with `seed` plus the index of its
    first text (so a text is written alike whatever follows it in the list). With `progress`, a bar of that
    name on stderr counts the lines written."""
    written = []
    with tqdm(total=len(texts), desc=progress, unit="line", leave=False, disable=progress is None) as bar:
        for begin in range(0, len(texts), batch_size):
            written += write_each(texts[begin:begin + batch_size], loaded, bias=bias, seed=seed + begin)
            bar.update(len(texts[begin:begin + batch_size]))
    return written


# ----------------------------------------------------------------------------- layout



def wrap_text(text: str, width: int | None = None) -> list[str]:
    """The lines to write: `text` split at its newlines and, with `width`, each wrapped at word
    boundaries to at most `width` characters (a longer word keeps a line of its own). The width
    counts characters, not ink: so the lines are known before any is written, and all go to the
    sampler in one batch. An empty line stays, as a blank line of the page."""
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 1):
        raise ValueError(f"width must be a whole number of characters >= 1, got {width!r}")
    lines = []
    for paragraph in text.split("\n"):
        if width is None or not paragraph.strip():
            lines.append(paragraph.strip())
        else:
            lines += textwrap.wrap(paragraph, width, break_long_words=False, break_on_hyphens=False)
    return lines


def lay_out(lines: Sequence[np.ndarray], line_spacing: float = 1.5, align: str = "left",
            straighten: bool = False) -> list[np.ndarray]:
    """Place written lines (raw offsets (T_i, 3) each; (0, 3) for a blank line) on one page: the
    absolute points (T_i, 3) of each, y up, line i below line i - 1.

    Each line is first levelled if `straighten` (drawing.straighten_baseline). Horizontally, its
    leftmost ink goes to x = 0 ("left") or the middle of its ink to x = 0 ("centre"). Vertically,
    the median height of its points (the middle of the letters' body, which descenders and
    ascenders barely move) goes to y = -i * pitch, pitch = line_spacing times the tallest line's ink
    height: line_spacing 1 lets the tallest line's ink touch the next one.
    """
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {', '.join(ALIGNMENTS)}, got {align!r}")
    if not np.isfinite(line_spacing) or line_spacing <= 0:
        raise ValueError(f"line_spacing must be a number > 0, got {line_spacing!r}")
    placed = []
    for offsets in lines:
        points = offsets_to_points(offsets)
        placed.append(straighten_baseline(points) if straighten else points)
    heights = [np.ptp(points[:, 1]) for points in placed if len(points)]
    pitch = line_spacing * max(max(heights, default=0.0), 1e-6)
    for row, points in enumerate(placed):
        if not len(points):
            continue
        points[-1, 2] = 1.0  # the pen is up between lines (a line the step cap stopped may end mid-stroke)
        left, right = points[:, 0].min(), points[:, 0].max()
        points[:, 0] -= left if align == "left" else (left + right) / 2
        points[:, 1] += -row * pitch - np.median(points[:, 1])
    return placed


@dataclass
class WrittenPage:
    """Several written lines laid out on one page (`lay_out`); `offsets` draws it as one pen sequence."""

    lines: list[WrittenText | None]  # None: a blank line
    points: list[np.ndarray]  # per line, (T_i, 3) absolute x, y (y up) on the page, end_of_stroke

    @property
    def offsets(self) -> np.ndarray:
        """(T, 3) the whole page as one pen sequence: each line's points, and a pen-up jump between lines
        (every written line ends with a pen-up), so any drawing function of drawing.py draws the page."""
        points = np.concatenate([np.zeros((0, 3))] + self.points)
        offsets = points.copy()
        offsets[1:, :2] = np.diff(points[:, :2], axis=0)
        return offsets

    @property
    def boundaries(self) -> np.ndarray:
        """(T, L-1) z of every point of the page, in the order of `offsets`."""
        written = [line.boundaries for line in self.lines if line is not None]
        return np.concatenate(written) if written else np.zeros((0, 0), dtype=np.int64)


def write_lines(text: str, checkpoint: str | Path | LoadedSynthesisModel, *,
                style: tuple[np.ndarray, str] | None = None, bias: float = 0.0, temperature: float = 1.0,
                seed: int = 0, width: int | None = None, line_spacing: float = 1.5, align: str = "left",
                straighten: bool = False, max_points_per_character: int = MAX_POINTS_PER_CHARACTER) -> WrittenPage:
    """Write a text of one or more lines (`wrap_text`: its newlines, and `width` in characters) in one
    batch of the sampler, and lay them out (`lay_out`: left-aligned or centred, `line_spacing`,
    `straighten`). Other arguments as `write`."""
    lines = wrap_text(text, width)
    texts = [line for line in lines if line]
    if not texts:
        raise UnknownCharacters("the text is empty: give at least one character to write")
    lay_out([], line_spacing, align)  # check the layout's arguments before anything is written
    written = iter(write_each(texts, checkpoint, style=style, bias=bias, temperature=temperature, seed=seed,
                              max_points_per_character=max_points_per_character))
    page_lines = [next(written) if line else None for line in lines]
    blank = np.zeros((0, 3))
    points = lay_out([blank if line is None else line.offsets for line in page_lines], line_spacing, align,
                     straighten)
    return WrittenPage(page_lines, points)


def normalised_offsets(offsets: np.ndarray, stats: dict[str, tuple[float, float]]) -> torch.Tensor:
    """Raw (T, 3) offsets as the model reads them: dx, dy less the mean over the scale (the inverse of
    `normalisation.raw_offsets`); end_of_stroke 0 or 1."""
    offsets = np.asarray(offsets, dtype=np.float32)
    if offsets.ndim != 2 or offsets.shape[1] != 3 or not np.isfinite(offsets).all():
        raise ValueError(f"style strokes must be finite (points, 3) offsets dx, dy, end_of_stroke, "
                         f"got shape {offsets.shape}")
    normalised = offsets.copy()
    normalised[:, :2] = (offsets[:, :2] - np.asarray(stats["mean"], dtype=np.float32)) / np.asarray(
        coordinate_scale(stats["std"]), dtype=np.float32)
    normalised[:, 2] = offsets[:, 2] > 0.5
    return torch.from_numpy(normalised)



def primed_points(lines: Sequence[WrittenText]) -> str:
    """How many of the style's points primed the lines: "500", or "250 to 500" where the lines differ."""
    kept = sorted({line.primed for line in lines})
    return str(kept[0]) if len(kept) == 1 else f"{kept[0]} to {kept[-1]}"


def fired_markers(boundaries: np.ndarray) -> str:
    """One line: how many markers of each detector the letters picture draws, and why there may be none."""
    counts = boundaries.sum(axis=0).astype(int).tolist()
    if not counts:
        return "boundaries: this model has no boundary detectors, so the picture has no markers"
    marks = ["dots", "red rings"]
    fired = [f"z{k} fired {n} time{'' if n == 1 else 's'} ({marks[k - 1] if k <= len(marks) else 'not drawn'})"
             for k, n in enumerate(counts, start=1)]
    silent = "; a detector that does not fire draws no marker (whether it fires varies with --bias and --seed)"
    return "boundaries: " + ", ".join(fired) + (silent if 0 in counts else "")


def page_document(text: str, page: WrittenPage, parameters: dict) -> dict:
    """The JSON file of `handwriting-hm write`: the text, the parameters, and per line its raw strokes
    (offsets and points in the training data's units, as written), z per point, the attended
    character per point (index into the line's text, and the character), and its points on the page."""
    from ..drawing.records import drawing_record

    lines = []
    for line, points in zip(page.lines, page.points):
        lines.append(None if line is None else drawing_record(
            line.offsets, line.boundaries, text=line.text, finished=line.finished, attended=line.attended.tolist(),
            attended_characters=[line.text[u] for u in line.attended], page_points=points.tolist()))
    return {"text": text, "parameters": parameters, "lines": lines}


def installed_synthesis_model() -> Path:
    """The shipped synthesis model's path; one line saying what to do where it is not installed."""
    if not DEFAULT_SYNTHESIS_MODEL.is_file():
        raise ValueError(f"the default synthesis model {DEFAULT_SYNTHESIS_MODEL} is not installed; pass --checkpoint "
                         f"PATH, e.g. a run's best.pt from `handwriting-hm train --preset synthesis`")
    return DEFAULT_SYNTHESIS_MODEL


def check_synthesis_checkpoint(path: Path) -> Path:
    """`path`, if it holds a synthesis model; else one line saying which command its model is for."""
    from ..kinds import family_of  # the commands' map of kinds, read when one of them runs

    family = family_of(path)
    if family.kind != KIND:
        raise ValueError(f"checkpoint {path}: holds a {family.kind!r} model, which writes no given text (use "
                         f"{family.draws_with}); `write` needs a synthesis model, e.g. from `handwriting-hm train "
                         f"--preset synthesis`")
    return path
