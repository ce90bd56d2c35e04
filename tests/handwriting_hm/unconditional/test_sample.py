"""Tests for handwriting_hm.unconditional.sample: the sampling API, its limits, and `handwriting-hm sample`.

A tiny random-weight model stands in for the shipped one, so these tests never depend on it.
`write_tiny_checkpoint` is also used by test_app.py and test_browser.py.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from handwriting_hm.unconditional import sample as sample_module
from handwriting_hm.cli import main
from handwriting_hm.hmlstm.core import COPY, FLUSH, UPDATE
from handwriting_hm.unconditional.model import load_handwriting_model
from handwriting_hm.unconditional.sample import LIMITS, learned_colouring, sample_handwriting
from tests.factories import write_tiny_checkpoint

STATS = {"mean": [0.5, -0.25], "std": [2.0, 3.0]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return load_handwriting_model(write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", STATS))


def test_sample_shapes_counts_and_operations_agree(tiny):
    samples = sample_handwriting(tiny, n_samples=2, n_points=60, seed=1)
    assert len(samples) == 2
    for s in samples:
        assert s.offsets.shape == (60, 3) and s.boundaries.shape == (60, 2) and s.operations.shape == (60, 3)
        assert set(np.unique(s.offsets[:, 2])) <= {0.0, 1.0}
        assert set(np.unique(s.boundaries)) <= {0, 1}
        # counts are the per-layer tallies of the operations, and every layer does one op per point
        for layer in range(3):
            for code in (COPY, UPDATE, FLUSH):
                assert s.counts[layer, code] == np.sum(s.operations[:, layer] == code)
        assert (s.counts.sum(axis=1) == 60).all()
        named = s.operation_counts()
        assert list(named) == ["layer1", "layer2", "layer3"]
        assert named["layer2"]["COPY"] == s.counts[1, COPY]
        assert s.copied_fraction() == pytest.approx(s.counts[:, COPY].sum() / 180)


def test_same_seed_same_drawing_other_seed_another(tiny):
    first = sample_handwriting(tiny, n_points=40, seed=7)[0]
    again = sample_handwriting(tiny, n_points=40, seed=7)[0]
    other = sample_handwriting(tiny, n_points=40, seed=8)[0]
    np.testing.assert_array_equal(first.offsets, again.offsets)
    np.testing.assert_array_equal(first.operations, again.operations)
    assert not np.array_equal(first.offsets, other.offsets)


def test_offsets_are_denormalised_with_the_checkpoint_stats(tiny, monkeypatch):
    normalised = torch.tensor([[[1.0, 1.0, 0.0], [0.0, -1.0, 1.0]]])
    generated = sample_module.generate.Generated(
        normalised, torch.zeros(1, 2, 2), torch.ones(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, 3, dtype=torch.long))
    monkeypatch.setattr(sample_module.generate, "generate", lambda *args, **kwargs: generated)
    offsets = sample_handwriting(tiny, n_points=2)[0].offsets
    # raw = normalised * std + mean; end_of_stroke untouched
    np.testing.assert_allclose(offsets, [[2.5, 2.75, 0.0], [0.5, -3.25, 1.0]])


@pytest.mark.parametrize("name, value", [
    ("n_points", 0), ("n_points", LIMITS["n_points"][1] + 1), ("n_points", 10.5),
    ("n_samples", 0), ("n_samples", 9),
    ("bias", -0.1), ("bias", 10.5), ("bias", float("nan")),
    ("temperature", 0.0), ("temperature", 2.5),
    ("seed", -1), ("seed", True),
])
def test_out_of_range_parameters_name_the_parameter_and_its_range(tiny, name, value):
    low, high = LIMITS[name]
    with pytest.raises(ValueError, match=rf"^{name} must be .*between {low} and {high}, got "):
        sample_handwriting(tiny, **{name: value})


def test_cli_writes_every_sample_into_one_file_of_the_chosen_format(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt")
    assert main(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "hand.svg"),
                 "--n-samples", "2", "--n-points", "50", "--colour-by", "layer1", "--marker-layer", "2"]) == 0
    root = ET.parse(tmp_path / "hand.svg").getroot()
    assert len(root.findall("{http://www.w3.org/2000/svg}svg")) == 2  # two drawings, stacked
    assert len(list(root.iter("{http://www.w3.org/2000/svg}path"))) > 0
    out = capsys.readouterr().out
    assert "sample 1:" in out and "sample 2:" in out and "layer1:" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hand.svg", "tiny.pt"]

    assert main(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "hand.json"),
                 "--n-points", "30", "--seed", "3", "--straighten"]) == 0
    document = json.loads((tmp_path / "hand.json").read_text())
    assert document["parameters"] == {"n_points": 30, "n_samples": 1, "bias": 0.0, "temperature": 1.0, "seed": 3}
    assert document["drawing"]["straighten"] is True
    [drawn] = document["samples"]
    assert len(drawn["offsets"]) == 30 and len(drawn["operations"][0]) == 3
    sample = sample_handwriting(load_handwriting_model(checkpoint), n_points=30, seed=3)[0]
    np.testing.assert_allclose(drawn["offsets"], sample.offsets)  # the JSON keeps the raw strokes
    # no --colour-by: the drawing shows the highest layer that fired, its firings marked
    colour_by, layer = learned_colouring(sample.firings())
    assert (document["drawing"]["colour_by"], document["drawing"]["marker_layer"]) == (colour_by, layer or None)
    assert f"coloured by {colour_by}" in capsys.readouterr().out


@pytest.mark.parametrize("firings, colouring", [([5, 3], ("layer2", 2)), ([5, 0], ("layer1", 1)),
                                                ([0, 4], ("layer2", 2)), ([0, 0], ("strokes", 0)), ([], ("strokes", 0))])
def test_the_learned_colouring_is_the_highest_layer_that_fired(firings, colouring):
    assert learned_colouring(firings) == colouring


def test_a_checkpoint_whose_std_is_nan_is_refused_in_one_line(tmp_path, capsys):
    checkpoint = write_tiny_checkpoint(tmp_path / "nan.pt", {"mean": [0.0, 0.0], "std": [float("nan"), 1.0]})
    assert main(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.svg")]) == 2
    error = capsys.readouterr().err
    assert "nan.pt: normalisation std of dx is nan" in error and error.count("\n") == 1
    assert not (tmp_path / "x.svg").exists()


@pytest.mark.parametrize("arguments, message", [
    (["--out", "x.svg", "--checkpoint", "{tmp}/missing.pt"], "missing.pt: no such file"),
    (["--out", "x.svg", "--checkpoint", "{tmp}/corrupt.pt"], "corrupt.pt: cannot be read"),
    (["--out", "x.gif", "--checkpoint", "{tmp}/corrupt.pt"], "extension must be one of .svg, .png, .json"),
    (["--out", "x.svg", "--checkpoint", "{tmp}/corrupt.pt", "--temperature", "3"], "temperature must be between"),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, arguments, message):
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    arguments = [a.format(tmp=tmp_path) for a in arguments]
    assert main(["sample", *arguments]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1


def test_cli_without_the_shipped_model_says_how_to_pass_one(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sample_module, "DEFAULT_MODEL", tmp_path / "absent.pt")
    assert main(["sample", "--out", str(tmp_path / "x.svg")]) == 2
    error = capsys.readouterr().err
    assert "is not installed; pass --checkpoint PATH" in error and error.count("\n") == 1


def test_a_constant_coordinate_is_denormalised_without_scaling():
    # the dataset leaves a coordinate with std 0 unscaled, so undoing it must not multiply by 0
    offsets = np.array([[2.0, 3.0, 0.7]])
    raw = sample_module.raw_offsets(offsets, {"mean": (1.0, 5.0), "std": (0.0, 2.0)})
    np.testing.assert_allclose(raw, [[3.0, 11.0, 1.0]])
