"""Training-time access to a prepared IAM-OnDB file: dataset, padding collate, length buckets.

    ds = HandwritingDataset("data/iam_ondb.npz", split="train", scheme="paper")
    loader = DataLoader(ds, batch_sampler=BucketBatchSampler(ds.lengths, 32), collate_fn=collate_strokes)

Items are `(offsets, text)`: offsets is float32 (T, 3) = dx, dy normalised with the scheme's
training mean and std, and end_of_stroke in {0, 1}. `denormalise` undoes that for everything
downstream (training pictures, the sampler): one function, so the two directions cannot drift apart.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from data_prep.prepared_file import load_prepared
from data_prep.splits import select

Offsets = TypeVar("Offsets", np.ndarray, torch.Tensor)


def coordinate_scale(std: Sequence[float]) -> tuple[float, float]:
    """The divisor of dx and dy: the std, except that a constant coordinate (std 0, only in toy
    data) is left unscaled rather than made infinite. A negative or non-finite std is an error:
    statistics like that come from broken data, and every number made with them would be wrong."""
    for name, value in zip(("dx", "dy"), std):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"normalisation std of {name} is {value}: the statistics are broken "
                             "(prepared from data with NaN or infinite values?)")
    return tuple(float(value) if value > 0 else 1.0 for value in std)


def denormalise(offsets: Offsets, stats: Mapping[str, Sequence[float]]) -> Offsets:
    """Normalised (..., 3) offsets (numpy or torch) back to raw units: dx, dy times the std plus the
    mean; end_of_stroke unchanged. The inverse of the dataset's normalisation, zero std included."""
    mean, scale = tuple(map(float, stats["mean"])), coordinate_scale(tuple(map(float, stats["std"])))
    if not all(math.isfinite(value) for value in mean):
        raise ValueError(f"normalisation mean is {list(mean)}: the statistics are broken")
    if isinstance(offsets, torch.Tensor):
        mean_t = torch.tensor(mean, dtype=offsets.dtype, device=offsets.device)
        scale_t = torch.tensor(scale, dtype=offsets.dtype, device=offsets.device)
        return torch.cat([offsets[..., :2] * scale_t + mean_t, offsets[..., 2:]], dim=-1)
    raw = np.array(offsets, copy=True)
    raw[..., :2] = raw[..., :2] * np.asarray(scale, dtype=raw.dtype) + np.asarray(mean, dtype=raw.dtype)
    return raw


class HandwritingDataset(Dataset):
    """The lines of one split of one scheme ("paper", "official" or "graves"), see `splits.py`."""

    def __init__(self, path: str | os.PathLike, split: str = "train", scheme: str = "paper") -> None:
        arrays, metadata = load_prepared(path)
        chosen = np.flatnonzero(select(scheme, split, arrays["paper_split"], arrays["official_list"]))
        if scheme not in metadata["stats"]:
            raise ValueError(f"{path}: scheme {scheme!r} has no training lines (was it prepared with --splits?)")
        if len(chosen) == 0:
            raise ValueError(f"{path}: split {split!r} of scheme {scheme!r} has no lines")
        stats = metadata["stats"][scheme]
        self.stats = {"mean": tuple(stats["mean"]), "std": tuple(stats["std"])}
        self.split, self.scheme = split, scheme
        self.line_ids: list[str] = arrays["line_ids"][chosen].tolist()
        self.texts: list[str] = arrays["texts"][chosen].tolist()
        starts = arrays["starts"]
        self.lengths = (starts[chosen + 1] - starts[chosen]).astype(np.int64)
        # One contiguous normalised copy of just this split: items are then cheap views.
        rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in chosen])
        self._offsets = arrays["offsets"][rows].astype(np.float32)
        self._offsets[:, :2] -= np.array(stats["mean"], dtype=np.float32)
        self._offsets[:, :2] /= np.array(coordinate_scale(stats["std"]), dtype=np.float32)
        self._starts = np.concatenate(([0], np.cumsum(self.lengths)))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, str]:
        begin, end = self._starts[index], self._starts[index + 1]
        return torch.from_numpy(self._offsets[begin:end]), self.texts[index]

    def denormalise(self, offsets: torch.Tensor) -> torch.Tensor:
        """Normalised (..., 3) offsets back to sensor units (dx, dy), end_of_stroke unchanged."""
        return denormalise(offsets, self.stats)


class StrokeBatch(NamedTuple):
    """A padded batch: offsets (B, Tmax, 3) zero after each line's end, lengths (B,), mask (B, Tmax)
    True on real steps, and the lines' texts."""

    offsets: torch.Tensor
    lengths: torch.Tensor
    mask: torch.Tensor
    texts: list[str]

    def to(self, device: torch.device | str) -> StrokeBatch:
        """The same batch with its tensors on `device`."""
        return StrokeBatch(self.offsets.to(device), self.lengths.to(device), self.mask.to(device), self.texts)


def collate_strokes(items: Sequence[tuple[torch.Tensor, str]]) -> StrokeBatch:
    """Pad `(offsets, text)` items into a `StrokeBatch`."""
    lengths = torch.tensor([len(offsets) for offsets, _ in items], dtype=torch.int64)
    padded = torch.zeros(len(items), int(lengths.max()), 3, dtype=torch.float32)
    for row, (offsets, _) in enumerate(items):
        padded[row, : len(offsets)] = offsets
    mask = torch.arange(padded.shape[1])[None, :] < lengths[:, None]
    return StrokeBatch(padded, lengths, mask, [text for _, text in items])


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar length, so little of a padded batch is padding.

    With `shuffle`, each epoch shuffles all indices, cuts them into pools of `pool_batches`
    batches, sorts each pool by length, cuts it into batches and shuffles the batch order;
    `set_epoch(epoch)` makes epoch e's order the same on every run with the same seed. Without
    `shuffle`, batches are consecutive runs of the length-sorted indices.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        pool_batches: int = 50,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, not {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.pool_batches = pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration gives."""
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __iter__(self) -> Iterator[list[int]]:
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        else:
            rng = np.random.default_rng((self.seed, self.epoch))
            order = rng.permutation(len(self.lengths))
            pool_size = self.batch_size * self.pool_batches
            batches = []
            for begin in range(0, len(order), pool_size):
                pool = order[begin : begin + pool_size]
                pool = pool[np.argsort(self.lengths[pool], kind="stable")]
                batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        # Pools hold whole batches, so only the last batch built can be short.
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches = batches[:-1]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        yield from ([int(i) for i in batch] for batch in batches)
