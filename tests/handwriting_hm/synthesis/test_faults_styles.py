"""Style inputs and texts outside the bounds: one line and exit code 2, quickly; a style with more ink than its
text primes with its last strokes and says so."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from handwriting_hm.synthesis import styles
from handwriting_hm.cli import main
from handwriting_hm.synthesis.generate import write_texts
from handwriting_hm.synthesis.write import write
from tests.write_factory import quarter_character_model, write_quarter_character_checkpoint

INKML = '<ink xmlns="http://www.w3.org/2003/InkML"><trace>{}</trace></ink>'


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_quarter_character_checkpoint(tmp_path_factory.mktemp("synthesis") / "synthesis.pt")


def write_command(checkpoint, tmp_path, *arguments: str) -> list[str]:
    return ["write", *arguments, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "out.svg")]


def refused(capsys, argv: list[str], words: str) -> str:
    """Run the command: exit code 2, one line naming `words`, within a few seconds and no big allocation."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < 30
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 2**20  # KB: under 1 GB more
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("handwriting-hm: error: "), error
    assert words in error, error
    return error


def style_file(tmp_path, content: str, suffix: str = ".json"):
    path = tmp_path / f"style{suffix}"
    path.write_text(content)
    return path


@pytest.mark.parametrize("content, words", [
    ("[" * 100_000 + "]" * 100_000, "nested too deep"),
    ('{"text": "ab", "strokes": 5}', "strokes must be a list of strokes"),
    ('{"text": "ab", "strokes": null}', "strokes must be a list of strokes"),
    ('{"text": "ab", "strokes": [[[1, 2], [3]]]}', "every point two numbers"),
    ('{"text": "ab", "strokes": [[[1, 2], ["a", 4]]]}', "every point two numbers"),
    ('{"text": "ab", "strokes": [[[1, 2], [3, 4, 5]]]}', "every point two numbers"),
    ('{"text": null, "strokes": [[[1, 2], [3, 4]]]}', '"text" must be a string'),
    ('{"text": 7, "strokes": [[[1, 2], [3, 4]]]}', '"text" must be a string'),
    ('{"text": "ab", "strokes": [[[1, 2], [1e300, 4]]]}', "coordinates must lie within"),
    (json.dumps({"text": "ab", "strokes": [[[i, i] for i in range(3001)]]}), "at most 3,000 points"),
    (json.dumps({"text": "ab", "strokes": [[[i, i]] for i in range(10**6 // 4)]}), "at most 3,000 points"),
    (json.dumps({"text": "a" * 301, "strokes": [[[1, 2], [3, 4]]]}), "at most 300 characters"),
])
def test_a_bad_style_file_is_one_line(checkpoint, tmp_path, capsys, content, words):
    path = style_file(tmp_path, content)
    error = refused(capsys, write_command(checkpoint, tmp_path, "abc", "--style-file", str(path)), words)
    assert error.startswith(f"handwriting-hm: error: {path}: ")  # the file named


def test_a_huge_style_file_is_refused_before_it_is_read(checkpoint, tmp_path, capsys):
    path = tmp_path / "style.inkml"
    with open(path, "wb") as file:
        file.truncate(200 * 2**20)  # sparse: 200 MB of nothing
    refused(capsys, write_command(checkpoint, tmp_path, "abc", "--style-file", str(path)), "at most 10 MB")


@pytest.mark.parametrize("trace, words", [("1 2, 3 4,", "trace 1 is not a comma-separated list of 'x y' points"),
                                          ("1 2, 3", "trace 1 is not"), ("1 2, a b", "trace 1 is not")])
def test_a_bad_inkml_trace_is_named(checkpoint, tmp_path, capsys, trace, words):
    path = style_file(tmp_path, INKML.format(trace), ".inkml")
    refused(capsys, write_command(checkpoint, tmp_path, "abc", "--style-file", str(path), "--style-text", "ab"), words)


def test_a_style_text_too_long_is_refused(checkpoint, tmp_path, capsys):
    path = style_file(tmp_path, json.dumps({"strokes": [[[1, 2], [3, 4]]]}))
    refused(capsys, write_command(checkpoint, tmp_path, "abc", "--style-file", str(path), "--style-text", "a" * 20_000),
            "at most 300 characters")


@pytest.mark.parametrize("seed", [str(2**70), "-1"])
def test_a_seed_out_of_range_is_one_line(checkpoint, tmp_path, capsys, seed):
    refused(capsys, write_command(checkpoint, tmp_path, "abc", "--seed", seed), "seed must be a whole number between")


def test_the_text_to_write_is_bounded(checkpoint, tmp_path, capsys):
    refused(capsys, write_command(checkpoint, tmp_path, "a" * 10_000), "at most 300")
    refused(capsys, write_command(checkpoint, tmp_path, "abc " * 75 + "d"), "at most 300")
    assert main(write_command(checkpoint, tmp_path, "\\n".join(["abc"] * 100))) == 0  # newlines aside: 300


def test_a_style_with_more_ink_than_its_text_primes_with_its_last_strokes(checkpoint, tmp_path, capsys):
    """40 points of a 2-character text would move the window 10 characters: past 'ab ' and 'cd'."""
    strokes = [[[x * 10 + y, y * 5] for y in range(4)] for x in range(10)]
    path = style_file(tmp_path, json.dumps({"text": "ab", "strokes": strokes}))
    assert main(write_command(checkpoint, tmp_path, "cd", "--style-file", str(path))) == 0
    out = capsys.readouterr().out
    assert "carry more ink than its text 'ab' says: the model was primed with its last" in out
    assert ", 0 points" not in out
    offsets, text = styles.style_from_file(path)
    written = write("cd", checkpoint, style=(offsets, text))
    assert len(written.offsets) > 0 and 0 < written.primed < 40
    # cut at a stroke: the kept points begin after a pen-up
    assert offsets[len(offsets) - written.primed - 1, 2] == 1


def test_a_primer_that_fits_is_read_whole():
    model = quarter_character_model()
    primer = torch.randn(6, 3)
    primer[:, 2] = torch.tensor([0, 0, 1, 0, 0, 1.0])
    written = write_texts(model, ["cd", "e"], primers=[(primer, "abc "), (primer, "abc ")])
    assert written.primed.tolist() == [6, 6] and bool((written.lengths > 0).all())
    assert write_texts(model, ["cd"]).primed is None


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak memory from /proc")
def test_a_long_inkml_file_is_refused_before_its_points_are_listed(tmp_path):
    """9.6 MB of one trace (2.4 million points): counted, not parsed into lists (which took 860 MB)."""
    path = style_file(tmp_path, INKML.format("1 2," * 2_400_000 + "1 2"), ".inkml")
    # the peak from /proc (VmHWM, KB): getrusage's ru_maxrss would count pytest's own memory, kept across exec
    script = ("import sys\nfrom handwriting_hm.synthesis.styles import style_from_file\n"
              "try:\n    style_from_file(sys.argv[1], 'ab')\nexcept ValueError as error:\n    print(error)\n"
              "print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env,
                            timeout=120)
    said, peak = result.stdout.splitlines()
    assert said.endswith("a style has at most 3,000 points, got 2,400,001")
    assert int(peak) < 200 * 1024


def test_lines_primed_with_different_numbers_of_points_say_so():
    from handwriting_hm.synthesis.write import WrittenText, primed_points

    lines = [WrittenText("ab", np.zeros((1, 3)), np.zeros((1, 2)), np.zeros(1, int), True, primed) for primed in
             (500, 250, 500)]
    assert primed_points(lines) == "250 to 500" and primed_points(lines[:1]) == "500"
