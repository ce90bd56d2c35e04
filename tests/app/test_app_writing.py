"""The work of a /write request in a writer process: the same files as written in the server's process, a user's
error back as one line, and a writer that dies costing one request, not the view."""
from __future__ import annotations

import os
import signal

import pytest

from app.writing import WriterPool, write_request
from handwriting_hm.synthesis.model import load_synthesis_model
from tests.write_factory import write_tiny_synthesis_checkpoint

ALPHABET = " abcdefghijklmnopqrstuvwxyz"
CHOICES = {"style": ["none", "canvas"], "colour_by": ["ink", "strokes", "layer1", "layer2"],
           "marker_layer": [0, 1, 2], "align": ["left", "centre"]}
# text, bias, temperature, seed, style, style_line, style_strokes, style_text, align, colour_by, marker_layer, straighten
INPUTS = ("ab ba", 1.0, 1.0, 3, "none", "", "", "", "left", "layer1", 2, False)


@pytest.fixture(scope="module")
def synthesis(tmp_path_factory):
    return load_synthesis_model(write_tiny_synthesis_checkpoint(tmp_path_factory.mktemp("model") / "s.pt", ALPHABET))


@pytest.fixture(scope="module")
def pool(synthesis):
    pool = WriterPool(synthesis, None, CHOICES, writers=1)
    yield pool
    pool.close()


def test_a_writer_process_writes_what_the_server_would(pool, synthesis, tmp_path):
    (tmp_path / "here").mkdir()
    (tmp_path / "there").mkdir()
    here = write_request(synthesis, None, CHOICES, tmp_path / "here", *INPUTS)
    there = pool.write(tmp_path / "there", *INPUTS)
    assert here[1] == there[1]  # the finished line
    for mine, theirs in zip(here[2:], there[2:]):  # SVG, PNG, plotter SVG, JSON
        assert os.path.dirname(theirs) == str(tmp_path / "there")
        assert open(mine, "rb").read() == open(theirs, "rb").read()


def test_a_users_error_comes_back_as_one_line(pool, tmp_path):
    with pytest.raises(ValueError, match="^text is empty: type something to write$"):
        pool.write(tmp_path, "", *INPUTS[1:])
    with pytest.raises(ValueError, match="^the model cannot write .Z.: its alphabet is "):
        pool.write(tmp_path, "ab Z", *INPUTS[1:])


def test_a_writer_that_dies_fails_one_request_and_the_next_is_served(synthesis, tmp_path, caplog):
    pool = WriterPool(synthesis, None, CHOICES, writers=1)
    try:
        pool.write(tmp_path, *INPUTS)  # the writer is up
        for process in list(pool._executor._processes.values()):
            os.kill(process.pid, signal.SIGKILL)
            process.join(timeout=30)
        with pytest.raises(RuntimeError, match="stopped unexpectedly .* send the request again$"):
            pool.write(tmp_path, *INPUTS)
        assert "a writer process stopped unexpectedly" in caplog.text
        assert pool.write(tmp_path, *INPUTS)[1].startswith(("Finished", "Stopped at the cap"))
    finally:
        pool.close()
