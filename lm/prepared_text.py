"""The prepared text file: one `.npz` with a corpus's vocabulary and the ids of each split.

It holds `train`, `valid`, `test` (uint8 ids), `vocab` (one-character strings, index = id) and
`metadata` (JSON: format_version, dataset, counts, vocab_size, sha256 of every source file). It
is written atomically and loads with allow_pickle=False. (The handwriting side has its own
prepared file, `data_prep/prepared_file.py`; the names here say "text" to keep them apart.)
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from handwriting_hm.hmlstm.archive import read_archive, write_archive

from .corpus import SPLITS

FORMAT_VERSION = 1


@dataclass
class PreparedText:
    """A prepared corpus: the vocabulary (index = id) and the ids of each split."""

    vocab: list[str]
    splits: dict[str, np.ndarray]
    metadata: dict[str, Any]


def write_prepared_text(path: Path, prepared: PreparedText) -> None:
    """Write the .npz atomically (see hmlstm/archive.py)."""
    write_archive(path, {**prepared.splits, "vocab": np.array(prepared.vocab, dtype="<U1")}, prepared.metadata)


def load_prepared_text(path: str | os.PathLike) -> PreparedText:
    """Read a prepared file; ValueError (one line) if it is not one we wrote or a split is empty."""
    arrays, metadata = read_archive(path, (*SPLITS, "vocab"), "hm-lm", "hm-lm prepare", FORMAT_VERSION)
    splits = {split: arrays[split] for split in SPLITS}
    vocab = [str(symbol) for symbol in arrays["vocab"]]
    for split, ids in splits.items():
        if ids.size == 0:
            raise ValueError(f"{path}: the {split} split is empty")
        if int(ids.max()) >= len(vocab):
            raise ValueError(f"{path}: the {split} split has ids outside its {len(vocab)}-symbol vocabulary")
    return PreparedText(vocab, splits, metadata)
