"""Training-time access to a prepared IAM-OnDB file: dataset, padding collate, length buckets.

    ds = HandwritingDataset("data/iam_ondb.npz", split="train", scheme="paper")
    loader = DataLoader(ds, batch_sampler=BucketBatchSampler(ds.lengths, 32), collate_fn=collate_strokes)

Items are `(offsets, text)`: offsets is float32 (T, 3) = dx, dy normalised with the scheme's
training mean and std, and end_of_stroke in {0, 1}. `handwriting_hm.normalisation.denormalise` undoes
that for everything downstream (training pictures, the sampler): the divisor both use is one
function, `coordinate_scale`, so the two directions cannot drift apart.
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from data_prep.prepared_file import load_prepared
from data_prep.splits import select
from handwriting_hm.normalisation import coordinate_scale, denormalise


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
