"""The characters a synthesis model can write, and the one-hot text it reads (Graves 2013 §5).

The alphabet is the set of characters the transcriptions really hold (IAM-OnDB's prepared file
has 82, digits and Q, X, Z among them), in code-point order. A text with a character outside it
is refused with one line naming those characters: a model never silently drops what it was
asked to write.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import torch
from torch import Tensor


class UnknownCharacters(ValueError):
    """A text holds characters that the model's alphabet does not (the message names them)."""


class Alphabet:
    """Characters in id order; encodes texts as ids and as one-hot rows."""

    def __init__(self, characters: str) -> None:
        if not characters or len(set(characters)) != len(characters):
            raise ValueError(f"an alphabet needs at least one character and no repeats, got {characters!r}")
        self.characters = characters
        self.ids = {character: i for i, character in enumerate(characters)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Alphabet":
        """Every character that occurs in `texts`, in code-point order."""
        return cls("".join(sorted(set("".join(texts)))))

    def __len__(self) -> int:
        return len(self.characters)

    def check(self, text: str) -> None:
        """Raise UnknownCharacters unless every character of `text` is in the alphabet (and it is not empty)."""
        if not text:
            raise UnknownCharacters("the text is empty: give at least one character to write")
        unknown = sorted(set(text) - set(self.ids))
        if unknown:
            raise UnknownCharacters(
                f"the model cannot write {', '.join(repr(c) for c in unknown)}: its alphabet is {self.characters!r}")

    def encode(self, text: str) -> Tensor:
        """Character ids (U,) of `text`, after `check`."""
        self.check(text)
        return torch.tensor([self.ids[c] for c in text], dtype=torch.long)

    def one_hot(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """(B, U_max, V) one-hot rows, zero rows after each text's end, and the lengths (B,)."""
        encoded = [self.encode(text) for text in texts]
        lengths = torch.tensor([len(ids) for ids in encoded], dtype=torch.long)
        one_hot = torch.zeros(len(texts), int(lengths.max()), len(self))
        for row, ids in enumerate(encoded):
            one_hot[row, torch.arange(len(ids)), ids] = 1.0
        return one_hot, lengths


def alphabet_of_prepared(path: str | os.PathLike) -> Alphabet:
    """The alphabet of every transcription in a prepared IAM-OnDB file (lines without one are skipped)."""
    from data_prep.prepared_file import load_prepared  # data_prep is needed only here

    arrays, _ = load_prepared(path)
    return Alphabet.from_texts(str(text) for text in arrays["texts"])
