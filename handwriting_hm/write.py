"""Write a text in handwriting from Python: `write("hello", "run/best.pt")`.

`write` wraps `synthesis_generate.write_texts` for people rather than for tensors: it loads the
checkpoint (or takes a loaded model), seeds its own generator (same seed, same drawing), and
turns the model's normalised offsets back into the raw units of its training data. Besides the
ink, each point says what each boundary detector did and which character the window weighed most
while the point was read: what a picture of the boundaries against the letters needs.

`style` primes the model with a real line (Graves §5.5): its offsets in the training data's raw
units and its text, from `styles.py` (an IAM-OnDB line id, strokes a person drew, a JSON or InkML
file). The window then reads the style's text, a space where the alphabet has one, and the text.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_prep.dataset import coordinate_scale

from .drawing import offsets_to_points, split_strokes
from .sample import raw_offsets
from .synthesis import LoadedSynthesisModel, load_synthesis_model
from .synthesis_generate import write_texts


@dataclass
class WrittenText:
    text: str
    offsets: np.ndarray  # (T, 3): dx, dy in the training data's raw units, end_of_stroke 0 or 1
    boundaries: np.ndarray  # (T, L-1): z of layers 1..L-1 while reading each point, 0 or 1
    attended: np.ndarray  # (T,): index into `text` of the character the window weighed most at each point
    finished: bool  # the window passed the text (False: the step cap stopped it)

    @property
    def strokes(self) -> list[np.ndarray]:
        """One (n_i, 2) array of absolute x, y per pen-down stroke."""
        return split_strokes(offsets_to_points(self.offsets))


def write(text: str, checkpoint: str | Path | LoadedSynthesisModel, *, style: tuple[np.ndarray, str] | None = None,
          bias: float = 0.0, temperature: float = 1.0, seed: int = 0,
          max_points_per_character: int = 40) -> WrittenText:
    """Write `text` with a synthesis checkpoint (a path, or what load_synthesis_model returned),
    in the hand of `style` if given: (offsets (T, 3) in raw units, their text).

    Raises UnknownCharacters (a ValueError naming them) for characters the model cannot write,
    and ValueError with one line for an unusable checkpoint or bad parameters.
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedSynthesisModel) else load_synthesis_model(checkpoint)
    primers, offset = None, 0
    if style is not None:
        style_offsets, style_text = style
        if " " in loaded.model.alphabet.ids:
            style_text += " "
        primers, offset = [(normalised_offsets(style_offsets, loaded.stats), style_text)], len(style_text)
    generator = torch.Generator().manual_seed(seed)
    written = write_texts(loaded.model, [text], bias=bias, temperature=temperature, slope=loaded.slope,
                          max_points_per_character=max_points_per_character, generator=generator, primers=primers)
    length = int(written.lengths[0])
    log_phi = written.log_phi[0, :length, offset:offset + len(text)]  # the text's characters only
    return WrittenText(text=text,
                       offsets=raw_offsets(written.offsets[0, :length].numpy(), loaded.stats),
                       boundaries=written.boundaries[0, :length].round().long().numpy(),
                       attended=log_phi.argmax(dim=-1).numpy(),
                       finished=bool(written.finished[0]))


def normalised_offsets(offsets: np.ndarray, stats: dict[str, tuple[float, float]]) -> torch.Tensor:
    """Raw (T, 3) offsets as the model reads them: dx, dy less the mean over the scale (the inverse of
    `sample.raw_offsets`); end_of_stroke 0 or 1."""
    offsets = np.asarray(offsets, dtype=np.float32)
    if offsets.ndim != 2 or offsets.shape[1] != 3 or not np.isfinite(offsets).all():
        raise ValueError(f"style strokes must be finite (points, 3) offsets dx, dy, end_of_stroke, "
                         f"got shape {offsets.shape}")
    normalised = offsets.copy()
    normalised[:, :2] = (offsets[:, :2] - np.asarray(stats["mean"], dtype=np.float32)) / np.asarray(
        coordinate_scale(stats["std"]), dtype=np.float32)
    normalised[:, 2] = offsets[:, 2] > 0.5
    return torch.from_numpy(normalised)

