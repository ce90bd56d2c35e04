"""hm-lm prepare: the output never replaces the data it is read from (tiny files made here)."""
from __future__ import annotations

from pathlib import Path

import pytest

from lm.cli import main


@pytest.mark.parametrize("through_a_link", [False, True])
def test_output_onto_the_input_file_is_refused_and_the_input_kept(tmp_path: Path, capsys, through_a_link):
    text8 = tmp_path / "text8"
    text8.write_text("the quick brown fox jumps over the lazy dog " * 50)
    before = text8.read_bytes()
    output = text8
    if through_a_link:
        output = tmp_path / "text8.npz"
        output.symlink_to(text8)
    code = main(["prepare", "text8", "--path", str(text8), "--output", str(output)])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and f"{output}: is the input {text8}" in error
    assert text8.read_bytes() == before
