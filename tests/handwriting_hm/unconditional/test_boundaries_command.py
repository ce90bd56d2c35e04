"""`handwriting-hm boundaries`: the detectors drawn and counted on real lines of a prepared file."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from data_prep.dataset import HandwritingDataset
from handwriting_hm.cli import main
from handwriting_hm.unconditional.model import load_handwriting_model
from tests.factories import make_prepared, write_tiny_checkpoint


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("data"))


def test_it_draws_two_rows_a_line_and_counts_what_the_model_fires(prepared, tmp_path, capsys):
    stats = HandwritingDataset(prepared, split="test").stats
    checkpoint = write_tiny_checkpoint(tmp_path / "tiny.pt", {key: [float(v) for v in value]
                                                              for key, value in stats.items()})
    out = tmp_path / "b.png"
    assert main(["boundaries", str(checkpoint), "--data", str(prepared), "--lines", "2", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    dataset = HandwritingDataset(prepared, split="test")
    offsets, text = dataset[0]
    assert f"{dataset.line_ids[0]}: {text!r} ({len(offsets)} points" in printed
    loaded = load_handwriting_model(checkpoint)
    with torch.no_grad():
        _, output = loaded.model.sequence_log_likelihood(offsets[None].float(), slope=loaded.slope)
    # the steps that read the line's points: every step but the first (which reads the zero vector)
    fired = output.core.boundaries[0, 1:].sum(dim=0).round().long().tolist()
    first_line = printed.split(dataset.line_ids[1])[0]
    assert [int(n) for n in re.findall(r"z\d: fired (\d+) times", first_line)] == fired
    assert printed.count(": fired ") == 2 * 2  # two detectors, two lines


def test_bad_requests_are_one_line(prepared, tmp_path, capsys):
    assert main(["boundaries", "--data", str(prepared), "--lines", "0", "-o", str(tmp_path / "b.png")]) == 2
    assert "--lines must be between 1 and 20" in capsys.readouterr().err
    assert main(["boundaries", "--data", str(prepared), "-o", str(tmp_path / "b.svg")]) == 2
    error = capsys.readouterr().err
    assert "the picture is a PNG" in error and error.count("\n") == 1
    assert not (tmp_path / "b.png").exists()


def test_where_z1_is_the_pen_ups_the_model_row_shows_layer_2s_segments(prepared, tmp_path, capsys, monkeypatch):
    import handwriting_hm.drawing.png as png
    drawn = {}
    monkeypatch.setattr(png, "render_grid_png", lambda drawings, **kwargs: drawn.update(kwargs))
    stats = HandwritingDataset(prepared, split="test").stats
    stats = {key: [float(v) for v in value] for key, value in stats.items()}
    for name, changes, model_row in (("free", {}, "layer1"), ("clocked", {"layer1_boundaries": "pen-ups"}, "layer2")):
        checkpoint = write_tiny_checkpoint(tmp_path / f"{name}.pt", stats, **changes)
        assert main(["boundaries", str(checkpoint), "--data", str(prepared), "--lines", "1",
                     "-o", str(tmp_path / "b.png")]) == 0
        assert drawn["colour_by"] == ["strokes", model_row] and drawn["marker_layer"] == [None, 2]
        assert drawn["titles"][1].startswith(f"layer-{model_row[-1]} segments")
        assert ("z1 is given, not learned" in capsys.readouterr().out) == (name == "clocked")
