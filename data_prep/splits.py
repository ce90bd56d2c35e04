"""The three ways of splitting IAM-OnDB lines, and how a (scheme, split) pair selects lines.

* `paper` (HM-LSTM, Chung et al. 2017): every line with at least 300 raw samples, shuffled with a
  fixed seed and cut 90 / 5 / 5 into train / validation / test. On the full release that is
  11,628 lines -> 10,465 / 581 / 582, the paper's figures. The split is by line, as the paper's
  counts imply, so a writer's form can appear in more than one split.
* `official`: the IAM-OnDB task-1 lists, by form: trainset (train), testset_v (validation),
  testset_f (test); testset_t is reachable by its list name, as are the other lists.
* `graves` (Graves 2013): train on trainset + testset_t + testset_f, validate on testset_v.

The prepared file stores two per-line columns, `paper_split` and `official_list`, coded below;
both schemes derived from the lists read `official_list`.
"""
from __future__ import annotations

import numpy as np

PAPER_MIN_POINTS = 300
PAPER_SEED = 0
PAPER_SPLITS = ("train", "validation", "test")  # codes 0, 1, 2 in `paper_split`; -1 = too short
OFFICIAL_LISTS = ("trainset", "testset_v", "testset_t", "testset_f")  # codes 0..3; -1 = in none

SCHEMES: dict[str, dict[str, tuple[str, ...]]] = {
    "paper": {name: (name,) for name in PAPER_SPLITS},
    "official": {
        "train": ("trainset",),
        "validation": ("testset_v",),
        "test": ("testset_f",),
        **{name: (name,) for name in OFFICIAL_LISTS},
    },
    "graves": {"train": ("trainset", "testset_t", "testset_f"), "validation": ("testset_v",)},
}


def paper_split(n_points: np.ndarray, min_points: int = PAPER_MIN_POINTS, seed: int = PAPER_SEED) -> np.ndarray:
    """Per-line codes 0/1/2 (train/validation/test) or -1 (fewer than `min_points` samples).

    Lines must come in a fixed order (the prepared file sorts them by id); the shuffle uses
    `numpy.random.default_rng(seed)`, so the split is the same on every machine.
    """
    codes = np.full(len(n_points), -1, dtype=np.int8)
    kept = np.flatnonzero(np.asarray(n_points) >= min_points)
    order = kept[np.random.default_rng(seed).permutation(len(kept))]
    n_train, n_validation = int(0.9 * len(kept)), int(0.05 * len(kept))
    codes[order[:n_train]] = 0
    codes[order[n_train : n_train + n_validation]] = 1
    codes[order[n_train + n_validation :]] = 2
    return codes


def parse_split_list(text: str) -> list[str]:
    """Form ids of one task-1 list file (one per line, with stray spaces)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def select(scheme: str, split: str, paper_codes: np.ndarray, official_codes: np.ndarray) -> np.ndarray:
    """Boolean mask of the lines in `split` of `scheme`; ValueError for unknown names."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown split scheme {scheme!r}; choose one of {sorted(SCHEMES)}")
    if split not in SCHEMES[scheme]:
        raise ValueError(f"scheme {scheme!r} has no split {split!r}; it has {list(SCHEMES[scheme])}")
    if scheme == "paper":
        return paper_codes == PAPER_SPLITS.index(split)
    wanted = [OFFICIAL_LISTS.index(name) for name in SCHEMES[scheme][split]]
    return np.isin(official_codes, wanted)
