"""Checkpoint files: written atomically, read back safely.

A checkpoint is a plain dict saved with `torch.save`. It must hold only what
`torch.load(path, weights_only=True)` accepts (tensors, dicts, lists, tuples, str, int,
float, bool, None), so that loading a file never runs code from it. `save_checkpoint`
checks this before writing; `load_checkpoint` turns every way a file can be wrong into one
`ValueError` line naming the file.

Every checkpoint carries `format` (== FORMAT), `format_version` and `kind`
("handwriting", "lm", ...); the rest of its keys are up to the writer (see
`handwriting_hm.hmlstm.trainer` for the keys the trainer writes).
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write

FORMAT = "handwriting-hm-checkpoint"
FORMAT_VERSION = 1

_PLAIN_LEAVES = (str, int, float, bool, type(None), torch.dtype, torch.device)
_PLAIN_CONTAINERS = (dict, OrderedDict, list, tuple, torch.Size)


def check_plain(value: Any, where: str = "payload") -> None:
    """Raise TypeError if `value` holds anything that weights_only loading would refuse.

    Exact types on purpose: numpy scalars subclass float and custom dicts subclass dict,
    yet neither loads back with weights_only=True.
    """
    if isinstance(value, torch.Tensor) or type(value) in _PLAIN_LEAVES:
        return
    if type(value) in (dict, OrderedDict):
        for key, item in value.items():
            if type(key) not in (str, int):
                raise TypeError(f"checkpoint key {where}[{key!r}] is a {type(key).__name__}, not str/int")
            check_plain(item, f"{where}[{key!r}]")
        return
    if type(value) in _PLAIN_CONTAINERS:
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {type(value).__module__}.{type(value).__qualname__}; "
        "store tensors, dicts, lists and primitives only (weights_only loading refuses the rest)"
    )


def save_checkpoint(path: str | Path, payload: dict) -> None:
    """Write `payload` to `path` atomically: a crash leaves the old file or the new, never half.

    The payload is written to a temporary file in the same folder, flushed to disk and
    renamed over `path`. If anything fails the temporary file is removed and the error
    re-raised. `payload` must contain only plain types (TypeError otherwise).
    """
    path = Path(path)
    check_plain(payload, "payload")
    with atomic_write(path) as file:
        torch.save(payload, file)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); folders cannot be opened this way on Windows."""
    if os.name != "posix":
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_checkpoint(path: str | Path, kind: str | None = None, map_location: Any = "cpu") -> dict:
    """Load one of our checkpoints with `weights_only=True`.

    Raises ValueError, with one line naming the file, when the file is missing, corrupt or
    truncated, holds objects safe loading refuses, is not one of our checkpoints, has an
    unsupported format version, or (when `kind` is given) was written for another kind.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle, zip and EOF errors all mean the same thing to a user
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:
            problem = f"holds a Python object ({refused.group(1)}) that safe loading refuses; not one of our checkpoints"
        else:
            problem = f"cannot be read (corrupt, truncated or not a PyTorch file: {type(error).__name__})"
        raise ValueError(f"checkpoint {path}: {problem}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path}: not a handwriting-hm checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path}: format version {version!r} is not supported (this code reads version {FORMAT_VERSION})"
        )
    if kind is not None and payload.get("kind") != kind:
        raise ValueError(f"checkpoint {path}: holds a {payload.get('kind')!r} model, expected a {kind!r} model")
    return payload


class StoredConfig:
    """to_dict / from_dict for the model config dataclasses that checkpoints carry as plain dicts
    (tuples stored as lists); an unknown key is a ValueError, a missing one takes its default."""

    def to_dict(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        unknown = sorted(set(values) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"unknown {cls.__name__} settings: {', '.join(unknown)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})
