"""The app's faults: inputs bounded before the work, user errors logged in one line, every API output named and
typed as documented, words that match the drawing, start-up that says what it does."""
from __future__ import annotations

import json
import logging
import os
import time

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app import main as app_main
from app.main import _card, build_app, launch_app
from app import writing
from handwriting_hm.cli import main
from handwriting_hm.unconditional.model import load_handwriting_model
from handwriting_hm.synthesis.model import load_synthesis_model
from handwriting_hm.synthesis.write import WrittenText
from tests.factories import write_tiny_checkpoint
from tests.write_factory import write_tiny_synthesis_checkpoint
from tests.app.serving import free_port

DEFAULTS = {"text": "ab ab", "bias": 1.0, "temperature": 1.0, "seed": 0, "style": "none", "style_line": "",
            "style_strokes": "", "style_text": "", "align": "left", "colour_by": "layer1", "marker_layer": 2,
            "straighten": False}
ALPHABET = " abcdefghijklmnopqrstuvwxyz"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    synthesis = load_synthesis_model(write_tiny_synthesis_checkpoint(folder / "synthesis.pt", ALPHABET))
    page = build_app(load_handwriting_model(write_tiny_checkpoint(folder / "tiny.pt")), synthesis, None, writers=2)
    port = free_port()
    launch_app(page, port=port, prevent_thread_lock=True)
    try:
        yield page, Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(folder))
    finally:
        page.close()


def refused_quickly(client: Client, caplog, words: str, **overrides) -> None:
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="app"), pytest.raises(AppError, match=words):
        client.predict(**{**DEFAULTS, **overrides}, api_name="/write")
    assert time.monotonic() - start < 10
    logged = [record.getMessage() for record in caplog.records if record.name == "app"]
    assert len(logged) == 1 and logged[0].startswith("/write refused: ") and words.split(".")[0] in logged[0]
    assert "\n" not in logged[0]
    assert not [record for record in caplog.records if record.exc_info]  # no traceback in the log
    caplog.clear()


def test_the_api_names_and_types_its_inputs_and_outputs_as_documented(served):
    _, client = served
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for name in ("/write", "/generate"):
        outputs = [returned["label"] for returned in endpoints[name]["returns"]]
        assert all(label and not label.startswith("value_") for label in outputs), outputs
        inputs = {parameter["parameter_name"]: parameter for parameter in endpoints[name]["parameters"]}
        # integers in the schema (gradio_client still prints any enum quoted, as Literal['0', '1', '2'])
        assert inputs["marker_layer"]["type"] == {"type": "integer", "enum": [0, 1, 2]}
    assert [returned["label"] for returned in endpoints["/write"]["returns"]][0] == "drawing"
    write_inputs = {parameter["parameter_name"]: parameter for parameter in endpoints["/write"]["parameters"]}
    assert all(parameter["parameter_has_default"] for parameter in write_inputs.values())
    assert write_inputs["style_line"]["parameter_default"] == write_inputs["style_text"]["parameter_default"] == ""
    # optional indeed: a call without them writes
    arguments = {name: value for name, value in DEFAULTS.items() if name not in ("style_line", "style_text")}
    assert client.predict(**arguments, api_name="/write")[0]


def test_a_long_style_text_is_refused_before_the_strokes_are_resampled(served, caplog):
    _, client = served
    strokes = json.dumps([[[0, 0], [100_000, 0]]])  # would resample to about 27,800 points
    refused_quickly(client, caplog, "style_text may have up to 300 characters, got 20,000", style="canvas",
                    style_strokes=strokes, style_text="a" * 20_000)


def test_a_long_canvas_stroke_is_refused_before_it_is_resampled(served, caplog):
    _, client = served
    refused_quickly(client, caplog, "style_strokes would make about 27,7", style="canvas",
                    style_strokes=json.dumps([[[0, 0], [100_000, 0]]]), style_text="ab")


def test_huge_canvas_coordinates_are_refused(served, caplog):
    _, client = served
    refused_quickly(client, caplog, "style_strokes' coordinates must lie within", style="canvas",
                    style_strokes=json.dumps([[[0, 0], [1e300, 1e300]]]), style_text="ab")


def test_a_user_error_is_one_line_in_the_log_for_both_endpoints(served, caplog):
    _, client = served
    refused_quickly(client, caplog, "text may have up to 8 lines and 300 characters, got 1 line and 301 characters",
                    text="a" * 301)
    with caplog.at_level(logging.WARNING, logger="app"), pytest.raises(AppError, match="n_points"):
        client.predict(0, 1, 0.0, 1.0, 0, "strokes", 0, False, api_name="/generate")
    logged = [record.getMessage() for record in caplog.records if record.name == "app"]
    assert len(logged) == 1 and logged[0].startswith("/generate refused: n_points must be between")


def test_the_write_view_says_which_layers_fired_in_its_drawing(served):
    _, client = served
    drawing = client.predict(**DEFAULTS, api_name="/write")[0]
    assert "In this drawing layer 1's detector" in drawing and "layer 2's detector" in drawing
    assert "1 line, " in drawing and "1 lines" not in drawing


def fake_sample(firings):
    class Sample:
        operations = np.zeros((10, 3))
        counts = np.array([[10, 0, 0], [4, 6, 0], [0, 10, 0]])

        def operation_counts(self):
            return {1: {"UPDATE": 10, "COPY": 0, "FLUSH": 0}}

        def copied_fraction(self):
            return 16 / 30

        def firings(self):
            return firings
    return Sample()


def test_the_saved_figure_says_it_is_the_copy_share_and_where_it_comes_from():
    silent = _card(1, "<svg/>", fake_sample([4, 0]))
    assert "53% of layer-steps copied</b> (the COPY share; here it comes from layer 3, never updated because the "
    "detector below never fired" in silent
    assert "saved" not in silent
    firing = _card(1, "<svg/>", fake_sample([4, 2]))
    assert "copied</b> (the COPY share)." in firing


def test_a_line_of_no_points_is_never_called_finished():
    empty = WrittenText("ab", np.zeros((0, 3)), np.zeros((0, 2), dtype=np.int64), np.zeros(0, int), True)
    said = writing.finished_line([empty])
    assert said.startswith("No points written for line 1 ('ab')") and "Finished" not in said


def test_start_up_says_what_it_does_and_how_long_it_took(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HANDWRITING_HM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HANDWRITING_HM_NO_C_KERNEL", raising=False)
    from handwriting_hm.hmlstm.paths import few_rows

    few_rows.library.cache_clear()
    monkeypatch.setattr(app_main, "launch_app", lambda page, **where: page.close())
    try:
        assert main(["app", "--checkpoint", str(write_tiny_checkpoint(tmp_path / "tiny.pt")),
                     "--port", str(free_port())]) == 0
    finally:
        few_rows.library.cache_clear()
    said = capsys.readouterr().err
    assert "handwriting-hm app: loaded the handwriting model" in said
    if few_rows.wanted_here():
        assert f"compiling the C kernels once into {tmp_path / 'cache'}" in said
    assert "importing Gradio and building the page" in said and "handwriting-hm app: started in" in said


def test_writes_are_served_at_once_by_processes_of_their_own(served):
    """Two writes sent together are both served, by the page's two writer processes: not the server's."""
    page, client = served
    jobs = [client.submit(**{**DEFAULTS, "seed": seed}, api_name="/write") for seed in range(2)]
    assert all(job.result(timeout=120)[0].count("1 line, ") == 1 for job in jobs)
    writers = {process.pid for process in page.writer_pool._executor._processes.values()}
    assert len(writers) == 2 and os.getpid() not in writers


def test_the_write_view_says_when_a_style_was_cut_to_its_last_strokes():
    line = WrittenText("ab", np.zeros((3, 3)), np.zeros((3, 2), dtype=np.int64), np.zeros(3, int), True, 40)
    primer = (np.zeros((100, 3)), "a")
    assert "The style's 100 points carry more ink than its text says, so the model was primed with its last 40 " \
           "points only." in writing.primed_line([line], primer)
    whole = WrittenText("ab", np.zeros((3, 3)), np.zeros((3, 2), dtype=np.int64), np.zeros(3, int), True, 100)
    assert writing.primed_line([whole], primer) == "" and writing.primed_line([line], None) == ""


def test_writers_below_one_is_one_line(capsys):
    assert main(["app", "--writers", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--writers must be at least 1" in err
