"""Write a text in handwriting from Python: `write("hello", "run/best.pt")`.

`write` wraps `synthesis_generate.write_texts` for people rather than for tensors: it loads the
checkpoint (or takes a loaded model), seeds its own generator (same seed, same drawing), and
turns the model's normalised offsets back into the raw units of its training data. Besides the
ink, each point says what each boundary detector did and which character the window weighed most
while the point was read: what a picture of the boundaries against the letters needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

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


def write(text: str, checkpoint: str | Path | LoadedSynthesisModel, *, bias: float = 0.0,
          temperature: float = 1.0, seed: int = 0, max_points_per_character: int = 40) -> WrittenText:
    """Write `text` with a synthesis checkpoint (a path, or what load_synthesis_model returned).

    Raises UnknownCharacters (a ValueError naming them) for characters the model cannot write,
    and ValueError with one line for an unusable checkpoint or bad parameters.
    """
    loaded = checkpoint if isinstance(checkpoint, LoadedSynthesisModel) else load_synthesis_model(checkpoint)
    generator = torch.Generator().manual_seed(seed)
    written = write_texts(loaded.model, [text], bias=bias, temperature=temperature, slope=loaded.slope,
                          max_points_per_character=max_points_per_character, generator=generator)
    length = int(written.lengths[0])
    log_phi = written.log_phi[0, :length, :len(text)]  # the characters only, not the position after them
    return WrittenText(text=text,
                       offsets=raw_offsets(written.offsets[0, :length].numpy(), loaded.stats),
                       boundaries=written.boundaries[0, :length].round().long().numpy(),
                       attended=log_phi.argmax(dim=-1).numpy(),
                       finished=bool(written.finished[0]))
