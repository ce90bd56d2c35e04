"""The same checkpoint and seed give the same drawing: `sample` and `write` against JSON files
recorded from fixed tiny models (tests/fixtures/seeded), so that moving code cannot change what
the commands draw, and the checkpoints keep loading."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from handwriting_hm.cli import main

SEEDED = Path(__file__).parent / "fixtures" / "seeded"


def assert_same(got, expected, where: str = "") -> None:
    """Equal structure and discrete values; floats equal to 1e-6 (relative) or 1e-9 (absolute)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), where
        for key in expected:
            assert_same(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), where
        for i, (a, b) in enumerate(zip(got, expected)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=1e-6, abs_tol=1e-9), where
    else:
        assert got == expected, where


def test_sample_draws_what_it_drew_before(tmp_path: Path) -> None:
    out = tmp_path / "sample.json"
    assert main(["sample", "--checkpoint", str(SEEDED / "tiny.pt"), "--out", str(out), "--n-samples", "2",
                 "--n-points", "80", "--bias", "0.5", "--seed", "7", "--colour-by", "ink"]) == 0  # as recorded
    assert_same(json.loads(out.read_text()), json.loads((SEEDED / "sample.json").read_text()))


def test_write_writes_what_it_wrote_before(tmp_path: Path) -> None:
    out = tmp_path / "write.json"
    assert main(["write", "hello world", "--checkpoint", str(SEEDED / "tiny-synthesis.pt"), "--out", str(out),
                 "--bias", "1", "--seed", "7"]) == 0
    assert_same(json.loads(out.read_text()), json.loads((SEEDED / "write.json").read_text()))


@pytest.mark.parametrize("name", ["sample.json", "write.json"])
def test_the_comparison_sees_a_changed_point(name: str) -> None:
    recorded = json.loads((SEEDED / name).read_text())
    changed = json.loads((SEEDED / name).read_text())
    lines = changed["samples"] if "samples" in changed else changed["lines"]
    lines[0]["points"][3][0] += 1e-3
    with pytest.raises(AssertionError):
        assert_same(changed, recorded)
