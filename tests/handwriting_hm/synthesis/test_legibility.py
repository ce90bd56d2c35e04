"""legibility.py: the character error rate, the recogniser, and `handwriting-hm legibility` (with a stand-in
tesseract on PATH, so that the tests need no OCR installed)."""
import json
import os
import stat

import numpy as np
import pytest

from tests.factories import make_prepared
from handwriting_hm.cli import main
from handwriting_hm.synthesis.legibility import character_error_rate, edit_distance, read_lines, tesseract_recogniser
from tests.write_factory import write_tiny_synthesis_checkpoint


def test_edit_distance_and_error_rate():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance("", "abc") == 3 and edit_distance("abc", "") == 3 and edit_distance("same", "same") == 0
    score = character_error_rate(["line one", "two"], ["line  onr ", ""])  # spaces normalised: 1 + 3 errors
    assert (score.lines, score.errors, score.characters) == (2, 4, 11)
    assert score.rate == pytest.approx(4 / 11)
    with pytest.raises(ValueError, match="2 references but 1 readings"):
        character_error_rate(["a", "b"], ["a"])


@pytest.fixture
def fake_tesseract(tmp_path, monkeypatch):
    """A `tesseract` that checks it was given a PNG and prints 'line 1' (what it read)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "tesseract"
    script.write_text('#!/bin/sh\nhead -c 8 "$1" | grep -q PNG || exit 3\necho "line 1"\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return script


def test_lines_are_drawn_and_read(fake_tesseract):
    offsets = np.array([[0, 0, 0], [10, 5, 0], [10, -5, 1], [5, 0, 0], [10, 0, 1]], dtype=np.float32)
    assert read_lines([offsets, offsets], tesseract_recogniser()) == ["line 1", "line 1"]


def test_a_missing_recogniser_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ValueError, match=r"tesseract not found: install Tesseract \(.*apt install tesseract-ocr\)"):
        tesseract_recogniser()


def test_the_command_scores_real_and_written_lines(fake_tesseract, tmp_path, capsys):
    data = make_prepared(tmp_path)
    checkpoint = write_tiny_synthesis_checkpoint(tmp_path / "synthesis.pt", alphabet="line 0123456789")
    report = tmp_path / "report.json"
    assert main(["legibility", "--data", str(data), "--lines", "3", "--split", "train", "--synthesis",
                 str(checkpoint), "--out", str(report)]) == 0
    saved = json.loads(report.read_text())
    assert len(saved["texts"]) == 3 and saved["real"] == saved["generated"] == ["line 1"] * 3
    printed = capsys.readouterr().out
    expected = character_error_rate(saved["texts"], saved["real"])
    assert f"real IAM-OnDB lines: CER {expected.rate:.1%}" in printed and "written by synthesis.pt" in printed
    assert main(["legibility", "--data", str(data), "--lines", "0"]) == 2
    assert "--lines must be at least 1" in capsys.readouterr().err
