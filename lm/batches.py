"""Batches of a split's ids: truncated-BPTT training windows and evaluation rows.

Training (`bptt_rows`, `bptt_windows`): the stream of (input, target) pairs is cut into
`batch_size` contiguous rows, and the rows are read in consecutive windows of `bptt` steps, so
row r of window k+1 continues exactly where row r of window k stopped: the final state of one
batch is the right initial state of the next.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import Tensor


def bptt_rows(ids: np.ndarray | Tensor, batch_size: int) -> tuple[Tensor, Tensor]:
    """(inputs, targets), each (batch_size, n): the stream's (x_t, x_{t+1}) pairs in contiguous rows.

    Row r holds pairs r*n .. (r+1)*n - 1; the last (len(ids) - 1) % batch_size pairs are dropped.
    """
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    per_row = (ids.numel() - 1) // batch_size
    if per_row < 1:
        raise ValueError(f"{ids.numel()} symbols are too few for {batch_size} rows")
    used = per_row * batch_size
    return ids[:used].view(batch_size, per_row), ids[1:used + 1].view(batch_size, per_row)


def bptt_windows(inputs: Tensor, targets: Tensor, bptt: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Consecutive (batch, <= bptt) windows of the rows; the last may be shorter."""
    for start in range(0, inputs.shape[1], bptt):
        yield inputs[:, start:start + bptt], targets[:, start:start + bptt]


def evaluation_rows(ids: np.ndarray | Tensor, rows: int) -> tuple[Tensor, Tensor, Tensor]:
    """(inputs, targets, mask), each (rows, n): every one of the len(ids) - 1 pairs exactly once.

    Rows are contiguous pieces of ceil((len - 1) / rows) pairs; the last is padded (mask False).
    Row r > 0 starts with the symbol row r - 1 predicted last as its input, so no target is
    skipped: only the split's first symbol, which has no context, is never scored.
    """
    ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    pairs = ids.numel() - 1
    if pairs < 1:
        raise ValueError("need at least 2 symbols to score one")
    rows = max(1, min(rows, pairs))
    per_row = -(-pairs // rows)
    padded = per_row * rows
    inputs = torch.zeros(padded, dtype=torch.long)
    targets = torch.zeros(padded, dtype=torch.long)
    inputs[:pairs], targets[:pairs] = ids[:-1], ids[1:]
    mask = torch.arange(padded) < pairs
    return inputs.view(rows, per_row), targets.view(rows, per_row), mask.view(rows, per_row)
