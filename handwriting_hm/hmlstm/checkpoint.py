"""Checkpoint files: one shape, one writer, one reader; written atomically, read back safely.

A checkpoint is a plain dict saved with `torch.save`. It must hold only what
`torch.load(path, weights_only=True)` accepts (tensors, dicts, lists, tuples, str, int,
float, bool, None), so that loading a file never runs code from it. `save_checkpoint`
checks this before writing; `load_checkpoint` turns every way a file can be wrong into one
`ValueError` line naming the file.

`checkpoint_payload` builds every checkpoint: `format` (== FORMAT), `format_version`, `kind`
("handwriting", "lm", ...), the model `config` (a plain dict), the weights (`model`), the
boundary `slope` the weights were trained at, `metadata` (what a user of the model needs:
normalisation statistics, a vocabulary), and whatever resume state a trainer adds (see
`trainer.Trainer`). `export_checkpoint` writes the inference-only copy of one.

Files written before the library had its own name carry the format "handwriting-hm-checkpoint"
and keep the slope under task.slope (training runs, lm exports) or metadata.slope (handwriting
exports). `load_checkpoint` reads them as they are and puts the slope where the current
format has it, so shipped models load and runs in progress resume.
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

FORMAT = "hmlstm-checkpoint"
LEGACY_FORMAT = "handwriting-hm-checkpoint"  # same layout, but the slope lived under task or metadata
FORMAT_VERSION = 1
EXPORTED_PROGRESS = ("step", "epoch", "best_metric", "elapsed_s")  # what an inference copy keeps of training

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
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, LEGACY_FORMAT):
        raise ValueError(f"checkpoint {path}: not a handwriting-hm checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path}: format version {version!r} is not supported (this code reads version {FORMAT_VERSION})"
        )
    if kind is not None and payload.get("kind") != kind:
        raise ValueError(f"checkpoint {path}: holds a {payload.get('kind')!r} model, expected a {kind!r} model")
    if "slope" not in payload:
        payload["slope"] = _legacy_slope(payload)
    return payload


def _legacy_slope(payload: dict) -> float:
    """Where a LEGACY_FORMAT file kept the slope: task.slope, else metadata.slope, else 1."""
    task, metadata = payload.get("task") or {}, payload.get("metadata") or {}
    return float(task.get("slope", metadata.get("slope", 1.0)))


def checkpoint_payload(kind: str, config: dict, model: dict, slope: float, metadata: dict, **extra: Any) -> dict:
    """Every checkpoint's contents: the markers, the model config, the weights, the slope and the
    metadata, plus `extra` (a trainer's resume state, an export's progress summary)."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "config": config, "model": model,
            "slope": float(slope), "metadata": metadata, **extra}


def export_checkpoint(source: str | Path, destination: str | Path, kind: str,
                      dtype: torch.dtype = torch.float16) -> dict:
    """Write an inference-only copy of a `kind` checkpoint (floating weights stored as `dtype`; the
    loaders cast back to float32) and return its metadata. No optimiser, schedule or random
    state: the copy can be used, not resumed."""
    checkpoint = load_checkpoint(source, kind=kind)
    progress = checkpoint.get("progress", {})
    weights = {name: value.to(dtype) if value.is_floating_point() else value
               for name, value in checkpoint["model"].items()}
    metadata = {**checkpoint["metadata"], "exported_from": str(source),
                "weights_dtype": str(dtype).removeprefix("torch.")}
    save_checkpoint(destination, checkpoint_payload(
        kind, checkpoint["config"], weights, checkpoint["slope"], metadata,
        progress={key: progress[key] for key in EXPORTED_PROGRESS if key in progress}))
    return metadata


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
