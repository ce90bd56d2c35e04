"""Tests for the app's Write view: /write driven over real HTTP by gradio_client, with a tiny random
synthesis model; the canvas's strokes as a style; one-line errors; the page without a synthesis model."""
from __future__ import annotations

import json
import urllib.request
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from app import canvas
from app.main import build_app, launch_app
from app.write_view import NO_MODEL
from app.writing import finished_line
from handwriting_hm.synthesis.alphabet import alphabet_of_prepared
from handwriting_hm.cli import main
from handwriting_hm.unconditional.model import load_handwriting_model
from handwriting_hm.synthesis.model import load_synthesis_model
from handwriting_hm.synthesis.write import WrittenText
from tests.factories import make_prepared, write_tiny_checkpoint
from tests.write_factory import write_tiny_synthesis_checkpoint
from tests.app.serving import free_port

SVG = "{http://www.w3.org/2000/svg}"
# three strokes in canvas pixels, as the canvas's script sends them (what they say is given as style_text)
STROKES = json.dumps([[[10, 140], [30, 90], [50, 140]], [[20, 115], [40, 115]], [[70, 140]]])
DEFAULTS = {"text": "line 12", "bias": 1.0, "temperature": 1.0, "seed": 0, "style": "none", "style_line": "",
            "style_strokes": "", "style_text": "", "align": "left", "colour_by": "layer1", "marker_layer": 2,
            "straighten": False}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("data"), n_forms=1)  # lines "line 1" .. "line 10"


@pytest.fixture(scope="module")
def synthesis(data, tmp_path_factory):
    """A tiny random synthesis model over the prepared file's alphabet, loaded as the app loads it."""
    path = tmp_path_factory.mktemp("model") / "synthesis.pt"
    return load_synthesis_model(write_tiny_synthesis_checkpoint(path, alphabet_of_prepared(data).characters))


def serve(page, tmp_path_factory):
    port = free_port()
    launch_app(page, port=port, prevent_thread_lock=True)
    return Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path_factory.mktemp("dl")))


@pytest.fixture(scope="module")
def client(synthesis, data, tmp_path_factory):
    unconditional = load_handwriting_model(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pt"))
    page = build_app(unconditional, synthesis, data)
    try:
        yield serve(page, tmp_path_factory)
    finally:
        page.close()


def write(client: Client, **overrides):
    return client.predict(**{**DEFAULTS, **overrides}, api_name="/write")


def test_write_returns_a_drawing_the_finished_line_and_files(client):
    drawing, finished, svg_path, png_path, plotter_path, json_path = write(client, text="line 1\n\nline 22")
    assert "2 lines" in drawing and "<div class='hm-drawing'><svg" in drawing  # the page
    assert "<div class='hm-drawing hm-letters'><svg" in drawing  # and the letters picture
    assert "class=\"z1-firings\"" in drawing and "class=\"word-ends\"" in drawing
    assert finished.startswith(("Finished: the window passed the end of the text", "Stopped at the cap of 40"))
    assert ET.parse(svg_path).getroot().findall(f".//{SVG}path")
    with open(png_path, "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    plotter = ET.parse(plotter_path).getroot().findall(f".//{SVG}path")  # one path per pen-down stroke
    assert plotter and all(path.get("fill") == "none" for path in plotter)
    document = json.load(open(json_path))
    assert document["text"] == "line 1\n\nline 22"
    assert document["lines"][1] is None  # the blank line stays a blank line of the page
    for line in (document["lines"][0], document["lines"][2]):
        assert len(line["attended"]) == len(line["offsets"]) == len(line["boundaries"])
        assert isinstance(line["finished"], bool)
        assert min(x for x, _, _ in line["page_points"]) == 0  # left-aligned
    top, bottom = (np.array(document["lines"][k]["page_points"])[:, 1] for k in (0, 2))
    assert np.median(bottom) < np.median(top)  # the third line below the first
    assert document["parameters"]["align"] == "left" and document["parameters"]["seed"] == 0
    assert write(client, text="line 1\n\nline 22")[1] == finished  # same seed, same writing


def test_centred_lines_are_centred(client):
    document = json.load(open(write(client, text="line 1\nline 22", align="centre")[5]))
    for line in document["lines"]:
        xs = [x for x, _, _ in line["page_points"]]
        assert min(xs) == pytest.approx(-max(xs))


def test_the_canvas_strokes_prime_the_model(client):
    plain = json.load(open(write(client)[5]))
    primed = write(client, style="canvas", style_strokes=STROKES, style_text="nil")
    document = json.load(open(primed[5]))
    assert document["parameters"]["style"] == "canvas" and document["parameters"]["style_text"] == "nil"
    assert document["lines"][0]["offsets"] != plain["lines"][0]["offsets"]  # same seed, another hand


def test_a_line_of_the_prepared_file_primes_the_model(client):
    plain = json.load(open(write(client)[5]))
    primed = json.load(open(write(client, style="line", style_line="a00-000u-03")[5]))
    assert primed["parameters"]["style_text"] == "line 3"
    assert primed["lines"][0]["offsets"] != plain["lines"][0]["offsets"]


@pytest.mark.parametrize("overrides, message", [
    ({"text": "line Q!"}, r"the model cannot write '!', 'Q': its alphabet is"),
    ({"text": " \n "}, "text is empty: type something to write"),
    ({"text": "line\n" * 9}, "text may have up to 8 lines and 300 characters, got 9 lines"),
    ({"text": 5}, "text must be a string, got 5"),
    ({"bias": -1}, "bias must be a number between 0.0 and 10.0, got -1"),
    ({"temperature": "1"}, "temperature must be a number between 0.05 and 2.0, got '1'"),
    ({"seed": 1.5}, "seed must be a whole number between 0 and"),
    ({"style": "photo"}, "style must be one of 'none', 'canvas', 'line', got 'photo'"),
    ({"align": "right"}, "align must be one of 'left', 'centre', got 'right'"),
    ({"marker_layer": 5}, "marker_layer must be one of 0, 1, 2, got 5"),
    ({"straighten": "no"}, "straighten must be true or false, got 'no'"),
    ({"style": "canvas"}, "style_strokes is empty: draw a line of handwriting on the canvas first"),
    ({"style": "canvas", "style_strokes": "[[10, 20"}, "style_strokes must be a JSON list of strokes.*not JSON"),
    ({"style": "canvas", "style_strokes": '[[["a", 1]]]'}, "style_strokes must be a JSON list of strokes"),
    ({"style": "canvas", "style_strokes": "[[]]"}, "style_strokes must be a JSON list of strokes"),
    ({"style": "canvas", "style_strokes": STROKES}, "style_text is empty: type the text you drew on the canvas"),
    ({"style": "canvas", "style_strokes": STROKES, "style_text": "Q"}, "style_text: the model cannot write 'Q'"),
    ({"style": "line", "style_line": ""}, "style_line must be an IAM-OnDB line id such as a01-000u-01"),
    ({"style": "line", "style_line": "z99-999z-99"}, "no line 'z99-999z-99'"),
])
def test_a_wrong_input_gets_one_line_naming_it(client, overrides, message, capfd):
    with pytest.raises(AppError, match=message) as error:
        write(client, **overrides)
    assert "\n" not in str(error.value).strip()
    assert "Traceback" not in capfd.readouterr().err


def test_a_wrong_number_of_inputs_is_named(client):
    request = urllib.request.Request(f"{client.src}gradio_api/call/write", data=json.dumps({"data": ["hi"]}).encode(),
                                     headers={"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(request, timeout=60).read())["event_id"]
    reply = urllib.request.urlopen(f"{client.src}gradio_api/call/write/{event}", timeout=60).read().decode()
    assert ("/write takes 12 inputs (text, bias, temperature, seed, style, style_line, style_strokes, style_text, "
            "align, colour_by, marker_layer, straighten), got 1") in reply


def test_without_a_synthesis_model_the_view_says_how_to_train_one(tmp_path_factory):
    page = build_app(load_handwriting_model(write_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "tiny.pt")))
    try:
        client = serve(page, tmp_path_factory)
        assert ". " not in NO_MODEL and "train --preset synthesis" in NO_MODEL  # one sentence, with the command
        components = page.config["components"]
        assert [c["props"]["value"] for c in components if c["props"].get("elem_id") == "write_intro"] == [NO_MODEL]
        with pytest.raises(AppError, match="No synthesis model is loaded") as error:
            write(client)
        assert str(error.value).strip() == NO_MODEL
        assert client.predict(80, 1, 0.0, 1.0, 0, "layer1", 1, False, api_name="/generate")  # still there
    finally:
        page.close()


def test_canvas_pixels_become_sensor_units_resampled_at_the_data_pace():
    (stroke,) = canvas.strokes_from_json(json.dumps([[[0, 100], [36, 100]]]))  # 36 px = 180 units
    assert stroke.shape == (11, 2)  # every 18 units, both ends kept
    assert np.allclose(stroke[:, 0], np.arange(0, 181, 18)) and np.allclose(stroke[:, 1], 500)
    dot, line = canvas.strokes_from_json(json.dumps([[[4, 4]], [[0, 0], [0, 1], [0, 2]]]))
    assert dot.tolist() == [[20, 20]] and line.tolist() == [[0, 0], [0, 10]]


def written(text: str, finished: bool = True) -> WrittenText:
    """A made-up written line of two points."""
    return WrittenText(text, np.zeros((2, 3)), np.zeros((2, 2), dtype=np.int64), np.zeros(2, int), finished)


def test_the_finished_line_names_the_lines_the_cap_stopped():
    assert finished_line([written("ab")]) == "Finished: the window passed the end of the text."
    said = finished_line([written("ab"), written("cd", finished=False)])
    assert said == "Stopped at the cap of 80 points per character before the window passed the end of line 2 ('cd')."


def test_app_command_gives_a_one_line_error_for_a_bad_synthesis_checkpoint_or_data_file(tmp_path, capsys):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    assert main(["app", "--synthesis", str(tmp_path / "bad.pt"), "--port", str(free_port())]) == 2
    error = capsys.readouterr().err
    assert "bad.pt: cannot be read" in error and error.count("\n") == 1
    good = write_tiny_synthesis_checkpoint(tmp_path / "synthesis.pt", "ab")
    assert main(["app", "--synthesis", str(good), "--data", str(tmp_path / "none.npz"), "--port", "1"]) == 2
    error = capsys.readouterr().err
    assert "--data " in error and "none.npz: no such file" in error and error.count("\n") == 1
