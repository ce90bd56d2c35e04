"""The shipped models' names on the command line."""
from __future__ import annotations

from pathlib import Path

from handwriting_hm.shipped import DEFAULT_MODEL, DEFAULT_SYNTHESIS_MODEL, LSTM_MODEL, shipped_or_path


def test_names_give_the_shipped_models_unless_a_file_has_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert shipped_or_path("default") == DEFAULT_MODEL
    assert shipped_or_path("lstm") == LSTM_MODEL
    assert shipped_or_path("synthesis") == DEFAULT_SYNTHESIS_MODEL
    assert shipped_or_path("runs/hm/best.pt") == Path("runs/hm/best.pt")
    (tmp_path / "lstm").write_bytes(b"")
    assert shipped_or_path("lstm") == Path("lstm")
