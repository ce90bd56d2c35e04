"""A batch's tensors, wherever they sit in it (nested tuples, lists, dicts, named tuples, dataclasses, packed
sequences): moved to a device, listed, or replaced (a CUDA graph's static copies)."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch.nn.utils.rnn import PackedSequence


def move_to(batch: Any, device: torch.device) -> Any:
    """Move the tensors in a (nested tuple/list/dict/dataclass) batch to `device`."""
    return _map_tensors(batch, lambda t: t.to(device, non_blocking=True))


def tensors_of(batch: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) batch, in the order `with_tensors` puts them back."""
    found: list[torch.Tensor] = []
    _map_tensors(batch, lambda t: found.append(t) or t)
    return found


def with_tensors(batch: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """`batch` with its tensors replaced, in `tensors_of` order, by `tensors` (e.g. a graph's static copies)."""
    replacements = iter(tensors)
    return _map_tensors(batch, lambda _: next(replacements))


def _map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(batch, (torch.Tensor, PackedSequence)):  # a PackedSequence moves whole: batch_sizes stays on the CPU
        return fn(batch)
    if isinstance(batch, dict):
        return {key: _map_tensors(value, fn) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(_map_tensors(value, fn) for value in batch)
    if isinstance(batch, tuple):  # namedtuple
        return type(batch)(*(_map_tensors(value, fn) for value in batch))
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(
            batch, **{field.name: _map_tensors(getattr(batch, field.name), fn) for field in dataclasses.fields(batch)})
    return batch
