"""The two handwriting model families and the checkpoint kinds that name them: the one place that maps a
checkpoint's kind (or a `train` preset) to what loads, evaluates, exports and trains its model.

`train` (--resume, --init-from), `evaluate`, `export` and the commands that write a given text read a
checkpoint's kind here. A family names its functions as "module:function", imported when called (as
`cli.COMMANDS` names its subcommands), so that this module loads no torch and the commands' --help stays
instant.
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .synthesis import config as synthesis
from .unconditional import config as unconditional


@dataclass(frozen=True)
class Family:
    """A model family: the kind its checkpoints carry, the `train` presets that make one, and what each command
    calls for it."""

    kind: str
    presets: tuple[str, ...]  # the `handwriting-hm train` presets of this family
    draws_with: str  # the command that draws with its models
    loader: str  # path -> the model loaded for inference; a file it cannot use is one ValueError line
    evaluator: str  # `handwriting-hm evaluate` for it: (args, device) -> exit code
    trainer: str  # `handwriting-hm train` for it: args -> exit code

    def load(self, path: str | Path) -> Any:
        return _function(self.loader)(path)

    def evaluate(self, args: argparse.Namespace, device: Any) -> int:
        return _function(self.evaluator)(args, device)

    def train(self, args: argparse.Namespace) -> int:
        return _function(self.trainer)(args)


FAMILIES: dict[str, Family] = {family.kind: family for family in (
    Family(unconditional.KIND, tuple(unconditional.PRESETS), "handwriting-hm sample",
           loader="handwriting_hm.unconditional.model:load_handwriting_model",
           evaluator="handwriting_hm.evaluate:run_handwriting", trainer="handwriting_hm.train:run_handwriting"),
    Family(synthesis.KIND, tuple(synthesis.PRESETS), "handwriting-hm write",
           loader="handwriting_hm.synthesis.model:load_synthesis_model",
           evaluator="handwriting_hm.evaluate:run_synthesis", trainer="handwriting_hm.train:run_synthesis"),
)}


def checkpoint_kind(path: str | Path) -> str:
    """The kind of the model in checkpoint `path`. A missing or unreadable file, or a kind no family here
    has (a language model's, say), is one ValueError line that names the kinds there are."""
    from .hmlstm.checkpoint import load_checkpoint

    kind = load_checkpoint(path)["kind"]
    if kind not in FAMILIES:
        raise ValueError(f"checkpoint {path}: holds a {kind!r} model; handwriting-hm knows the kinds "
                         f"{', '.join(FAMILIES)}")
    return kind


def family_of(path: str | Path) -> Family:
    """The family of the model in checkpoint `path` (ValueError as for `checkpoint_kind`)."""
    return FAMILIES[checkpoint_kind(path)]


def family_of_preset(name: str) -> Family:
    """The family a `train` preset makes."""
    return next(family for family in FAMILIES.values() if name in family.presets)


def _function(name: str) -> Callable:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)
