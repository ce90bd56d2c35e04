"""One de-normalisation (`handwriting_hm.normalisation.denormalise`) for the dataset, training pictures and the sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data_prep.dataset import HandwritingDataset
from handwriting_hm.normalisation import denormalise
from handwriting_hm.normalisation import raw_offsets
from tests.factories import make_prepared

STATS = {"mean": (1.0, -2.0), "std": (2.0, 0.5)}
NORMALISED = np.array([[0.5, 4.0, 0.0], [-1.0, 0.0, 1.0]])
RAW = np.array([[2.0, 0.0, 0.0], [-1.0, -2.0, 1.0]])


def test_numpy_and_torch_give_the_same_raw_units():
    np.testing.assert_allclose(denormalise(NORMALISED, STATS), RAW)
    np.testing.assert_allclose(denormalise(torch.tensor(NORMALISED, dtype=torch.float32), STATS).numpy(), RAW)
    assert denormalise(NORMALISED[None], STATS).shape == (1, 2, 3)  # any leading dimensions


def test_the_sampler_and_the_dataset_use_it():
    np.testing.assert_allclose(raw_offsets(NORMALISED, STATS), RAW)


def test_it_inverts_the_datasets_normalisation(tmp_path):
    dataset = HandwritingDataset(make_prepared(tmp_path, n_forms=2), "train", "paper")
    offsets, _ = dataset[0]
    back = denormalise(offsets, dataset.stats)
    np.testing.assert_allclose(dataset.denormalise(offsets).numpy(), back.numpy())
    # the prepared file's whole-number sensor steps come back
    np.testing.assert_allclose(back[1:, :2].numpy(), np.round(back[1:, :2].numpy()), atol=1e-3)


def test_a_constant_coordinate_is_left_unscaled_as_the_dataset_leaves_it():
    np.testing.assert_allclose(denormalise(NORMALISED, {"mean": (1.0, 0.0), "std": (0.0, 1.0)})[:, 0], [1.5, 0.0])


@pytest.mark.parametrize("std", [(float("nan"), 1.0), (1.0, float("inf")), (-1.0, 1.0)])
def test_broken_statistics_are_a_clear_error(std):
    with pytest.raises(ValueError, match=r"^normalisation std of d[xy] is .*: the statistics are broken"):
        denormalise(NORMALISED, {"mean": (0.0, 0.0), "std": std})
