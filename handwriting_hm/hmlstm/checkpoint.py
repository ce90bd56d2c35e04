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
`trainer.Trainer`: RESUME_STATE and more). `export_checkpoint` writes the inference-only copy of
one; it never overwrites its input or a training checkpoint, and an exported copy given to resume
is refused in one line (`load_checkpoint(..., resumable=True)`).

A config is only a claim: `check_config_fits_weights` builds the model on the meta device (no
memory) and compares its tensors' shapes with the stored ones, so that a small file claiming
60,000 units a layer is refused before the loader tries to allocate tens of gigabytes.

Files written before the library had its own name carry the format "handwriting-hm-checkpoint"
and keep the slope under task.slope (training runs, lm exports) or metadata.slope (handwriting
exports). `load_checkpoint` reads them as they are and puts the slope where the current
format has it, so shipped models load and runs in progress resume.
"""
from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, NamedTuple

import torch

from .atomic import atomic_write
from .cli import first_line
from .settings import StoredConfig  # the model configs' base, defined without torch for the parsers

FORMAT = "hmlstm-checkpoint"
LEGACY_FORMAT = "handwriting-hm-checkpoint"  # same layout, but the slope lived under task or metadata
FORMAT_VERSION = 1
EXPORTED_PROGRESS = ("step", "epoch", "best_metric", "elapsed_s")  # what an inference copy keeps of training
RESUME_STATE = ("train_config", "optimizer", "scheduler", "progress", "rng", "task")  # a training checkpoint's; no export's

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


def load_checkpoint(path: str | Path, kind: str | None = None, map_location: Any = "cpu",
                    resumable: bool = False) -> dict:
    """Load one of our checkpoints with `weights_only=True`.

    Raises ValueError, with one line naming the file, when the file is missing, corrupt or
    truncated, holds objects safe loading refuses, is not one of our checkpoints, has an
    unsupported format version, (when `kind` is given) was written for another kind, or (when
    `resumable`) lacks the resume state of a training checkpoint, as an exported model does.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # pickle, zip and EOF errors all mean the same thing to a user
        refused = _refused_object(error)
        if refused:
            problem = (f"holds a Python object ({refused}) that safe loading refuses (torch.load with "
                       "weights_only=True); not one of our checkpoints, and nothing in it was run")
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
    if resumable and not is_training_checkpoint(payload):
        raise ValueError(f"checkpoint {path}: an exported model (weights only, no optimiser or progress) cannot be "
                         f"resumed; start a new run from its weights with --init-from {path}")
    if "slope" not in payload:
        payload["slope"] = _legacy_slope(payload)
    return payload


def is_training_checkpoint(payload: dict) -> bool:
    """Whether `payload` holds a trainer's resume state (an exported model does not)."""
    return all(key in payload for key in RESUME_STATE)


def _refused_object(error: Exception) -> str | None:
    """The Python object (a class, a function) whose loading safe loading refused, if that is why
    `error` was raised. torch words the refusal in several ways ("Unsupported global: GLOBAL x",
    "unsupported GLOBAL x whose module is blocked", "... but got <class x>"); an unknown pickle
    opcode ("Unsupported operand") means a damaged file, not a refusal."""
    if not isinstance(error, pickle.UnpicklingError):
        return None
    found = (re.search(r"GLOBAL ([\w.]+)", str(error))
             or re.search(r"but got <class '([\w.]+)'>", str(error)))
    return found.group(1) if found else None


def check_config_fits_weights(build: Callable[[], torch.nn.Module], weights: dict) -> None:
    """Raise ValueError (one line, no path: the caller names the file) unless the model `build`
    makes has exactly the tensors in `weights`, with the same shapes. `build` runs on the meta
    device, so a config claiming huge layers costs nothing here."""
    with torch.device("meta"):
        expected = {name: tuple(value.shape) for name, value in build().state_dict().items()}
    stored = {name: tuple(value.shape) for name, value in weights.items()}
    missing, unexpected = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
    if missing or unexpected:
        raise ValueError(f"its config does not match its weights: {len(missing)} tensors missing "
                         f"({', '.join(missing[:3]) or '-'}), {len(unexpected)} unexpected ({', '.join(unexpected[:3]) or '-'})")
    for name, shape in expected.items():
        if stored[name] != shape:
            raise ValueError(f"its config does not match its weights: {name} is stored as {list(stored[name])}, "
                             f"the config needs {list(shape)}")


class LoadedWeights(NamedTuple):
    """A checkpoint read for inference by `load_model`."""

    model: torch.nn.Module  # in eval mode, float32
    slope: float  # the boundary slope at the time of the checkpoint
    metadata: dict[str, Any]
    read: Any  # what the client's read_metadata returned


def load_model(path: str | Path, kind: str, config_type: type, build: Callable[[Any], torch.nn.Module],
               what: str, read_metadata: Callable[[dict, torch.nn.Module], Any] = lambda metadata, model: None,
               map_location: Any = "cpu") -> LoadedWeights:
    """Load a checkpoint of `kind` (a run's .pt or an export) for inference: the config
    (config_type.from_dict), checked against the weights before anything is allocated, the model
    build(config) with float32 weights, and read_metadata(metadata, model), what the client takes from
    the metadata. Anything wrong with the file is one ValueError line: "checkpoint PATH: not a usable
    WHAT (reason)"."""
    checkpoint = load_checkpoint(path, kind=kind, map_location=map_location)
    try:
        config = config_type.from_dict(checkpoint["config"])
        check_config_fits_weights(lambda: build(config), checkpoint["model"])
        model = build(config)
        model.load_state_dict({name: value.float() for name, value in checkpoint["model"].items()})
        metadata = dict(checkpoint["metadata"])
        read = read_metadata(metadata, model)
    except (KeyError, TypeError, RuntimeError, ValueError) as error:
        raise ValueError(f"checkpoint {path}: not a usable {what} ({first_line(error)})") from None
    return LoadedWeights(model.eval(), float(checkpoint["slope"]), metadata, read)


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
    state: the copy can be used, not resumed. ValueError if `destination` is `source` or holds a
    training checkpoint: an export must never replace what a run resumes from."""
    check_export_destination(source, destination)
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


def check_export_destination(source: str | Path, destination: str | Path) -> None:
    """ValueError, in one line, if writing an export to `destination` would destroy its input or a
    training checkpoint. A destination that is not one of our readable checkpoints may be replaced."""
    source, destination = Path(source), Path(destination)
    if not destination.exists():
        return
    if source.exists() and destination.samefile(source):
        raise ValueError(f"export: {destination} is the checkpoint being exported; write the copy to another file")
    try:
        existing = load_checkpoint(destination)
    except ValueError:
        return
    if is_training_checkpoint(existing):
        raise ValueError(f"export: {destination} is a training checkpoint (a run resumes from it); refusing to "
                         "replace it with an inference copy: write the copy to another file")
