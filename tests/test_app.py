"""Tests for the Gradio app: launched on a free local port and driven over real HTTP by gradio_client."""
from __future__ import annotations

import socket
import threading
import time
import xml.etree.ElementTree as ET

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app.main
from app.main import build_app, launch_app, stack_svgs
from handwriting_hm.cli import main
from handwriting_hm.model import load_handwriting_model
from factories import write_tiny_checkpoint  # tests/ is on sys.path under pytest's default import mode

SVG = "{http://www.w3.org/2000/svg}"
DEFAULTS = {"n_points": 80, "n_samples": 1, "bias": 0.0, "temperature": 1.0, "seed": 0,
            "colour_by": "layer2", "marker_layer": 2}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    model = load_handwriting_model(write_tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt"))
    page = build_app(model)
    assert page.analytics_enabled is False  # no telemetry, no update check: nothing leaves the machine
    port = free_port()
    launch_app(page, port=port, prevent_thread_lock=True)
    try:
        yield Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))
    finally:
        page.close()


def generate(client: Client, **overrides):
    return client.predict(**{**DEFAULTS, **overrides}, api_name="/generate")


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
    with open(png_path, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    assert '"samples"' in open(json_path).read()


def test_same_seed_gives_the_same_drawing(client):
    first, second = generate(client, seed=5), generate(client, seed=5)
    assert first[1] == second[1]
    assert open(first[2]).read() == open(second[2]).read()


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
])
def test_out_of_range_input_returns_the_clear_error(client, overrides, message):
    with pytest.raises(AppError, match=message):
        generate(client, **overrides)


def test_stack_svgs_makes_one_valid_document():
    one = '<svg xmlns="http://www.w3.org/2000/svg" width="30px" height="10px" viewBox="0 0 30 10"><path d="M0,0 L1,1"/></svg>'
    two = one.replace('width="30px"', 'width="50px"').replace('height="10px"', 'height="20px"')
    assert stack_svgs([one]) == one
    root = ET.fromstring(stack_svgs([one, two]))
    assert (root.get("width"), root.get("height")) == ("50px", "30px")
    assert [inner.get("y") for inner in root.findall(f"{SVG}svg")] == ["0.00", "10.00"]


def test_app_command_gives_a_one_line_error_for_a_bad_checkpoint(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert main(["app", "--checkpoint", str(tmp_path / "bad.pt"), "--port", str(free_port())]) == 2
    error = capsys.readouterr().err
    assert "bad.pt: cannot be read" in error and error.count("\n") == 1
