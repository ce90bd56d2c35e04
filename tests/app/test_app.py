"""Tests for the Gradio app: launched on a free local port and driven over real HTTP by gradio_client."""
from __future__ import annotations

import json
import threading
import time
import urllib.request
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app.main
from app.main import _card, build_app, launch_app, model_defaults
from handwriting_hm.cli import main
from handwriting_hm.unconditional.model import load_handwriting_model
from handwriting_hm.unconditional.sample import Sample
from tests.factories import write_tiny_checkpoint
from tests.app.serving import free_port

SVG = "{http://www.w3.org/2000/svg}"
DEFAULTS = {"n_points": 80, "n_samples": 1, "bias": 0.0, "temperature": 1.0, "seed": 0,
            "colour_by": "layer2", "marker_layer": 2, "straighten": False}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="module")
def client(checkpoint, tmp_path_factory):
    page = build_app(load_handwriting_model(checkpoint))
    assert page.analytics_enabled is False  # no telemetry, no update check: nothing leaves the machine
    port = free_port()
    launch_app(page, port=port, prevent_thread_lock=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))
    finally:
        page.close()


def generate(client: Client, **overrides):
    return client.predict(**{**DEFAULTS, **overrides}, api_name="/generate")


def post(client: Client, data: list) -> str:
    """The raw HTTP API, as any program may call it: the event stream that comes back."""
    request = urllib.request.Request(f"{client.src}gradio_api/call/generate", data=json.dumps({"data": data}).encode(),
                                     headers={"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(request, timeout=60).read())["event_id"]
    return urllib.request.urlopen(f"{client.src}gradio_api/call/generate/{event}", timeout=60).read().decode()


def test_generate_returns_svg_counts_and_files(client):
    drawings, counts, svg_path, png_path, json_path = generate(client, n_samples=2, n_points=80)
    assert drawings.count("<svg") == 2 and "UPDATE" in drawings
    root = ET.parse(svg_path).getroot()  # two drawings stacked in one valid SVG document
    assert root.tag == f"{SVG}svg" and len(root.findall(f"{SVG}svg")) == 2
    assert root.findall(f".//{SVG}path")
    assert len(counts) == 2
    for sample in counts:
        assert list(sample["operations"]) == ["layer1", "layer2", "layer3"]
        for layer in sample["operations"].values():
            assert layer["UPDATE"] + layer["COPY"] + layer["FLUSH"] == 80
        assert 0.0 <= sample["copied_fraction"] <= 1.0
        assert len(sample["boundary_firings"]) == 2
    with open(png_path, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(json.load(open(json_path))["samples"]) == 2


def test_same_seed_gives_the_same_drawing(client):
    first, second = generate(client, seed=5), generate(client, seed=5)
    assert first[1] == second[1]
    assert open(first[2]).read() == open(second[2]).read()


def test_cli_and_app_write_the_same_files_for_one_seed(client, checkpoint, tmp_path):
    options = {"n_points": 60, "n_samples": 1, "bias": 0.5, "temperature": 0.9, "seed": 11,
               "colour_by": "layer1", "marker_layer": 1, "straighten": True}
    _, _, app_svg, app_png, app_json = client.predict(**options, api_name="/generate")
    command = ["sample", "--checkpoint", str(checkpoint), "--n-points", "60", "--bias", "0.5", "--temperature", "0.9",
               "--seed", "11", "--colour-by", "layer1", "--marker-layer", "1", "--straighten"]
    for suffix in ("json", "png", "svg"):
        assert main([*command, "--out", str(tmp_path / f"cli.{suffix}")]) == 0
    assert json.loads((tmp_path / "cli.json").read_text()) == json.load(open(app_json))
    cli_png, app_png = (tmp_path / "cli.png").read_bytes(), open(app_png, "rb").read()
    assert cli_png[16:24] == app_png[16:24]  # the IHDR's width and height
    assert cli_png == app_png
    assert (tmp_path / "cli.svg").read_text() == open(app_svg).read()


def test_a_burst_of_requests_is_generated_one_at_a_time(client, monkeypatch):
    running, most, lock = 0, 0, threading.Lock()
    real = app.main.sample_handwriting

    def watched(*args, **kwargs):
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)  # long enough for the other requests to arrive meanwhile
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(app.main, "sample_handwriting", watched)
    jobs = [client.submit(**{**DEFAULTS, "n_points": 20, "seed": seed}, api_name="/generate") for seed in range(3)]
    results = [job.result(timeout=120) for job in jobs]
    assert len(results) == 3 and most == 1


@pytest.mark.parametrize("overrides, message", [
    ({"n_points": 5000}, "n_points must be between 1 and 2000, got 5000"),
    ({"n_samples": 9}, "n_samples must be between 1 and 8, got 9"),
    ({"bias": -1.0}, "bias must be between 0.0 and 10.0, got -1.0"),
    ({"temperature": 3.0}, "temperature must be between 0.05 and 2.0, got 3.0"),
    ({"seed": -2}, "seed must be between 0 and"),
    ({"n_points": 2.5}, r"n_points must be a whole number between 1 and 2000, got 2\.5"),
    ({"n_points": 10.5}, r"n_points must be a whole number between 1 and 2000, got 10\.5"),
    ({"n_points": "80"}, "n_points must be a whole number between 1 and 2000, got '80'"),
    ({"bias": [1]}, r"bias must be a number between 0.0 and 10.0, got \[1\]"),
    ({"colour_by": "layer9"}, "colour_by must be one of 'ink', 'strokes', 'layer1', 'layer2', got 'layer9'"),
    ({"marker_layer": 7}, "marker_layer must be one of 0, 1, 2, got 7"),
    ({"straighten": "yes"}, "straighten must be true or false, got 'yes'"),
])
def test_wrong_input_returns_one_line_naming_the_parameter(client, overrides, message, capfd):
    with pytest.raises(AppError, match=message):
        generate(client, **overrides)
    assert "Traceback" not in capfd.readouterr().err  # nor a traceback in the server's log


@pytest.mark.parametrize("count", [6, 9])
def test_a_wrong_number_of_inputs_is_named_not_a_null_error(client, count, capfd):
    reply = post(client, [*DEFAULTS.values(), 0][:count])
    assert (f"/generate takes 8 inputs (n_points, n_samples, bias, temperature, seed, colour_by, marker_layer, "
            f"straighten), got {count}") in reply
    assert '"error": null' not in reply and "Traceback" not in capfd.readouterr().err


def fake_sample(firings: list[int], n_points: int = 30) -> Sample:
    """A straight line of `n_points` points whose detectors fired `firings[k]` times each."""
    boundaries = np.zeros((n_points, len(firings)), dtype=np.int64)
    for layer, count in enumerate(firings):
        boundaries[:count, layer] = 1
    operations = np.ones((n_points, len(firings) + 1), dtype=np.int64)
    counts = np.stack([np.bincount(operations[:, k], minlength=3) for k in range(operations.shape[1])])
    offsets = np.zeros((n_points, 3))
    offsets[:, 0] = 1.0
    return Sample(offsets=offsets, boundaries=boundaries, operations=operations, counts=counts)


@pytest.mark.parametrize("firings, colour_by, marker_layer, said", [
    ([5, 0], "layer1", 1, "Layer 2 never fired, so the page opens coloured by layer-1 segments, with red dots"),
    ([5, 3], "layer2", 2, "the page opens coloured by layer-2 segments, with red dots where layer 2 fires"),
    ([0, 0], "strokes", 0, "No layer fired, so the page opens coloured by pen-up strokes"),
    ([], "strokes", 0, "plain LSTM"),
])
def test_the_page_opens_on_the_highest_layer_that_fires(monkeypatch, firings, colour_by, marker_layer, said):
    monkeypatch.setattr(app.main, "sample_handwriting", lambda *args, **kwargs: [fake_sample(firings)])
    defaults = model_defaults(None)
    assert (defaults.colour_by, defaults.marker_layer) == (colour_by, marker_layer)
    assert said in defaults.explain()
    assert colour_by in [value for _, value in defaults.colour_choices()]


def test_the_page_says_how_many_firings_fall_at_the_pen_ups(monkeypatch):
    sample = fake_sample([5, 2])  # layer 1 fires at points 0-4, layer 2 at points 0-1
    sample.offsets[[1, 20], 2] = 1.0  # two pen-ups: every firing but layer 1's at point 4 is within 2 points of one
    monkeypatch.setattr(app.main, "sample_handwriting", lambda *args, **kwargs: [sample])
    defaults = model_defaults(None)
    assert defaults.near_pen_ups == (4, 2) and defaults.pen_ups == 2
    assert "Firings within 2 points of a pen-up (2 in the sample): layer 1: 4 of 5, layer 2: 2 of 2." in \
        defaults.explain()
    assert sample.pen_up_alignment(window=0)[1]["precision"] == 0.5  # layer 2 at point 1, not at point 0


def test_a_card_says_in_words_which_layer_never_fired():
    card = _card(1, "<svg/>", fake_sample([4, 0]))
    assert "Layer 2's boundary detector never fired in this sample" in card
    assert "Layer 1's boundary detector never fired" not in card
    assert "never fired" not in _card(1, "<svg/>", fake_sample([4, 2]))


def test_app_command_gives_a_one_line_error_for_a_bad_checkpoint(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert main(["app", "--checkpoint", str(tmp_path / "bad.pt"), "--port", str(free_port())]) == 2
    error = capsys.readouterr().err
    assert "bad.pt: cannot be read" in error and error.count("\n") == 1
