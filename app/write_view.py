"""The Write view: type a text, and a synthesis model writes it, with its boundaries on the letters.

The text goes to `handwriting_hm.synthesis.write.write_lines`, as `handwriting-hm write` sends it: each of
its lines is written (one batch of the sampler, one seed), and the lines are laid out on one page,
left-aligned or centred. The page is drawn like the unconditional view's samples (by default
layer-1 segments in colours, red dots where layer 2 fires), and below it the picture of where the
boundaries fall on the letters (`drawing.render_letters_svg`: the ink coloured by the character
the window attends to, word ends, z¹ and z² firings). A line ends when the window has passed its
last character, or at a cap of points per character; the view says which. The downloads are the
picture (SVG, PNG), an SVG for pen plotters, and the JSON `handwriting-hm write` writes.

A style (Graves §5.5) primes every line: a line of the prepared IAM-OnDB file given to the app
(`--data`), or what a person draws on the canvas (`canvas.py`) together with the text they wrote.

As in the unconditional view, the handler takes the raw inputs and checks them itself, so a wrong
value through the page or the API gets one line naming the parameter and no traceback in the log.
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr
import numpy as np

from handwriting_hm.synthesis.alphabet import UnknownCharacters
from handwriting_hm.drawing.png import render_png
from handwriting_hm.drawing.style import INK_HEIGHT
from handwriting_hm.drawing.svg import render_letters_svg, render_plotter_svg, render_svg
from handwriting_hm.hmlstm.atomic import atomic_write
from handwriting_hm.hmlstm.cli import first_line
from handwriting_hm.unconditional.sample import LIMITS
from handwriting_hm.synthesis.styles import MAX_TEXT as MAX_STYLE_TEXT, style_from_line, style_from_strokes
from handwriting_hm.synthesis.model import LoadedSynthesisModel
from handwriting_hm.synthesis.generate import MAX_POINTS_PER_CHARACTER
from handwriting_hm.synthesis.write import (ALIGNMENTS, WrittenText, page_document, primed_points, wrap_text,
                                            write_lines)

from . import canvas

LOG = logging.getLogger("app")  # the server's log: a user's error as one line (stderr where nothing else is set up)

MAX_LINES = 8
# requests written at once, each in its own thread (results as when written alone), so that a request need not
# wait for the one before where cores are free; on a saturated 2-core machine it gained nothing (docs/limits.md)
WRITERS = max(1, (os.cpu_count() or 2) // 2)  # the default: one writer per two cores (docs/limits.md says why)
MAX_CHARACTERS = 300  # over all lines: at most 24,000 steps of the sampler at the cap, for one request
TRAIN_COMMAND = ("`handwriting-hm train --preset synthesis --data data/iam_ondb.npz --run-dir runs/synthesis`, "
                 "then start the app with `handwriting-hm app --synthesis runs/synthesis/best.pt`")
NO_MODEL = f"No synthesis model is loaded, so this view cannot write: train one with {TRAIN_COMMAND}."
COLOUR_NAMES = {"ink": "plain ink", "strokes": "pen-up strokes", "layer1": "layer-1 segments (z¹)",
                "layer2": "layer-2 segments (z²)"}
STYLE_NAMES = {"none": "none (the model's own hand)", "line": "an IAM-OnDB line", "canvas": "what you draw below"}

# the page and the letters picture at their own size (about 120 pixels a line), not stretched to the
# window's width as a long unconditional sample is: a short text would fill the screen
CSS = """
#write_drawing .hm-drawing svg {width: auto; max-width: 100%; height: auto; max-height: none;}
"""

INTRO = """
### Write a text
A synthesis model reads the text through an attention window and writes it point by point. Where layer 1's
boundary detector fires (z¹) the ink changes colour, and red dots mark where the layer chosen under Markers
fires (layer 2, z², at first); a detector that does not fire leaves the ink in one colour or without dots,
and the line below each drawing says which layers fired in it. The picture below the writing sets those
firings against the letters and words. To write in your own hand, write a line on the canvas and type what
it says.
"""


def refused(endpoint: str, error: ValueError) -> gr.Error:
    """A user's error: the reply's message, and one line in the log (logger "app")."""
    LOG.warning("/%s refused: %s", endpoint, first_line(error))
    return gr.Error(str(error), print_exception=False)


def layer_choice(choices: list[tuple[str, int]], **options: Any) -> gr.Dropdown:
    """A dropdown of layer numbers, typed as the integers it holds in the API (gr.Dropdown types every choice
    as a string). Set on the instance: a subclass would make Gradio write a .pyi file beside this one."""
    dropdown = gr.Dropdown(choices, **options)
    dropdown.api_info = lambda: {"type": "integer", "enum": [value for _, value in dropdown.choices]}
    return dropdown


def build_write_view(synthesis: LoadedSynthesisModel | None, style_data: Path | None, cache_folder: Callable[[], str],
                     number: Callable[..., gr.Number], writers: int = WRITERS) -> None:
    """The Write tab's contents and its `/write` endpoint, inside the page's Blocks. Without a model
    the tab shows one sentence, and /write answers it in one line. `writers`: requests written at once."""
    sources = ["none", "canvas"] + (["line"] if style_data is not None else [])
    detectors = synthesis.model.core.num_detectors if synthesis is not None else 2
    colour_choices = ["ink", "strokes"] + [f"layer{k}" for k in range(1, min(detectors, 2) + 1)]
    marker_choices = list(range(detectors + 1))
    choices = {"style": sources, "colour_by": colour_choices, "marker_layer": marker_choices,
               "align": list(ALIGNMENTS)}

    # the parameter names are the API's (gradio_client keywords); the values arrive unchecked
    def write_text(text: Any, bias: Any, temperature: Any, seed: Any, style: Any, style_line: Any, style_strokes: Any,
                   style_text: Any, align: Any, colour_by: Any, marker_layer: Any,
                   straighten: Any) -> tuple[str, str, str, str, str, str]:
        try:
            if synthesis is None:
                raise ValueError(NO_MODEL)
            return _write(synthesis, style_data, choices, Path(tempfile.mkdtemp(prefix="write-", dir=cache_folder())),
                          text, bias, temperature, seed, style, style_line, style_strokes, style_text, align,
                          colour_by, marker_layer, straighten)
        except ValueError as error:  # UnknownCharacters included
            raise refused("write", error) from None

    gr.Markdown(INTRO if synthesis is not None else NO_MODEL, elem_id="write_intro")
    with gr.Row(equal_height=False, visible=synthesis is not None):
        with gr.Column(scale=1, min_width=280):
            text = gr.Textbox("hello world", label="Text", lines=3, elem_id="text",
                              info=f"up to {MAX_LINES} lines and {MAX_CHARACTERS} characters")
            with gr.Row():
                bias = number("Bias (higher: neater)", 1.0, "bias", step=0.1, elem_id="write_bias")
                temperature = number("Temperature", 1.0, "temperature", step=0.05, elem_id="write_temperature")
            seed = gr.Number(value=0, label="Seed", info="same seed, same writing", precision=0,
                             elem_id="write_seed")
            colour_by = gr.Dropdown([(COLOUR_NAMES[c], c) for c in colour_choices],
                                    value="layer1" if detectors else "strokes", label="Colour by",
                                    elem_id="write_colour_by")
            marker_layer = layer_choice([("none", 0)] + [(f"layer {k} fires", k) for k in marker_choices[1:]],
                                       value=min(2, detectors), label="Markers", elem_id="write_marker_layer")
            align = gr.Radio([("left", "left"), ("centred", "centre")], value="left", label="Lines",
                             elem_id="align")
            straighten = gr.Checkbox(False, label="Straighten each line's baseline", elem_id="write_straighten")
            button = gr.Button("Write", variant="primary", elem_id="write")
        with gr.Column(scale=5):
            with gr.Group():
                style = gr.Radio([(STYLE_NAMES[s], s) for s in sources], value="none", label="Style (whose hand)",
                                 elem_id="style")
                style_line = gr.Textbox("", label="IAM-OnDB line id", placeholder="a01-000u-01", elem_id="style_line",
                                        visible=style_data is not None)
                gr.HTML(canvas.HTML, js_on_load=canvas.SCRIPT, elem_id="style_canvas", padding=True)
                style_text = gr.Textbox("", label="The text you drew on the canvas (required: priming reads the "
                                              "strokes together with their text)", elem_id="style_text",
                                        placeholder="e.g. the quick brown fox")
                # filled by the canvas's script; visible="hidden" keeps it in the page, out of sight
                style_strokes = gr.Textbox("", visible="hidden", elem_id="style_strokes")
            finished = gr.Textbox(label="Did the window finish the text?", interactive=False, elem_id="finished")
            drawing = gr.HTML("<p class='hm-note'>Type a text and press Write.</p>", label="drawing",
                              elem_id="write_drawing")
            with gr.Row():
                svg_file = gr.DownloadButton("Download SVG", size="sm")
                png_file = gr.DownloadButton("Download PNG", size="sm")
                plotter_file = gr.DownloadButton("Download plotter SVG", size="sm")
                json_file = gr.DownloadButton("Download JSON", size="sm")
    # drawing on the canvas, or typing a line id, picks that style; emptying it again drops it (in the browser only)
    for source, box in (("canvas", style_strokes), ("line", style_line)):
        box.change(None, [box, style], style, api_visibility="private",
                  js=f"(value, style) => value.trim() ? '{source}' : (style === '{source}' ? 'none' : style)")
    button.click(
        write_text,
        inputs=[text, bias, temperature, seed, style, style_line, style_strokes, style_text, align, colour_by,
                marker_layer, straighten],
        outputs=[drawing, finished, svg_file, png_file, plotter_file, json_file],
        api_name="write",
        concurrency_limit=writers,
        preprocess=False,  # the handler checks the raw values and names the parameter
    )


def _write(synthesis: LoadedSynthesisModel, style_data: Path | None, choices: dict[str, list], folder: Path,
           text: Any, bias: Any, temperature: Any, seed: Any, style: Any, style_line: Any, style_strokes: Any,
           style_text: Any, align: Any, colour_by: Any, marker_layer: Any,
           straighten: Any) -> tuple[str, str, str, str, str, str]:
    """Check, write, lay out, draw; returns (drawing HTML, finished line, SVG, PNG, plotter SVG, JSON paths)."""
    text = _text(text)
    synthesis.model.alphabet.check(text.replace("\n", ""))  # every unknown character of every line, named at once
    parameters = {"bias": _in_range(bias, "bias"), "temperature": _in_range(temperature, "temperature"),
                  "seed": _seed(seed)}
    for name, value in (("style", style), ("align", align), ("colour_by", colour_by), ("marker_layer", marker_layer)):
        if isinstance(value, bool) or value not in choices[name]:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices[name]))}, got {value!r}")
    if not isinstance(straighten, bool):
        raise ValueError(f"straighten must be true or false, got {straighten!r}")
    primer = _style(synthesis, style_data, style, style_line, style_strokes, style_text)

    started = time.perf_counter()
    page = write_lines(text, synthesis, style=primer, align=align, straighten=straighten,
                       max_points_per_character=MAX_POINTS_PER_CHARACTER, **parameters)
    written = [line for line in page.lines if line is not None]
    look = {"colour_by": colour_by, "marker_layer": marker_layer or None,
            "ink_height": INK_HEIGHT * len(page.lines)}  # about INK_HEIGHT pixels a line, as the CLI draws it
    svg = render_svg(page.offsets, page.boundaries, **look)
    letters = render_letters_svg(written)
    seconds = time.perf_counter() - started

    parameters |= {"align": align, "straighten": straighten, "style": style,
                   "style_text": primer[1] if primer else None, "colour_by": colour_by, "marker_layer": marker_layer}
    contents = {"svg": svg.encode("utf-8"), "png": render_png(page.offsets, page.boundaries, **look),
                "plotter.svg": render_plotter_svg(page.offsets, look["ink_height"]).encode("utf-8"),
                "json": json.dumps(page_document(text, page, parameters), allow_nan=False).encode("utf-8")}
    files = []
    for suffix, data in contents.items():
        files.append(folder / f"writing.{suffix}")
        with atomic_write(files[-1]) as file:
            file.write(data)

    header = (f"<p class='hm-note'>{plural(len(written), 'line')}, {plural(len(page.offsets), 'point')}, seed "
              f"{parameters['seed']}, written and drawn in {seconds:.2f} s</p>")
    figure = (f"<p class='hm-note'>Where the boundaries fall on the letters: each character the window attends to "
              f"in its own colour and named below, dashed lines at word ends, z¹'s firings as dots, z²'s as red "
              f"rings.</p><div class='hm-drawing hm-letters'>{letters}</div>")
    return (header + f"<div class='hm-drawing'>{svg}</div>" + fired_line(page.boundaries, colour_by, marker_layer)
            + primed_line(written, primer) + figure, finished_line(written), *map(str, files))


def fired_line(boundaries: np.ndarray, colour_by: str, marker_layer: int) -> str:
    """In words, which boundary detectors fired in this drawing and what the drawing shows of them."""
    said = []
    for k, fired in enumerate(boundaries.sum(axis=0).astype(int).tolist(), start=1):
        shown = [what for what, shows in (("colours change at each", colour_by == f"layer{k}"),
                                          ("a red dot marks each", marker_layer == k)) if shows]
        if fired:
            said.append(f"layer {k}'s detector fired {fired} time{'s' if fired > 1 else ''}"
                        + (f" ({' and '.join(shown)} firing)" if shown else ""))
        else:
            said.append(f"layer {k}'s detector never fired" + (" (so no colour change or dot of it)" if shown else ""))
    return f"<p class='hm-note'>In this drawing {'; '.join(said)}.</p>" if said else ""


def primed_line(written: list[WrittenText], primer: tuple[np.ndarray, str] | None) -> str:
    """A sentence where the style primed the model with its last strokes only (more ink than its text says)."""
    if primer is None or not written or min(line.primed for line in written) >= len(primer[0]):
        return ""
    return (f"<p class='hm-note'>The style's {len(primer[0])} points carry more ink than its text says, so the "
            f"model was primed with its last {primed_points(written)} points only.</p>")


def finished_line(lines: list[WrittenText]) -> str:
    """One sentence: whether the window got past every line's text, or which lines the cap stopped."""
    empty = [f"line {i} ({line.text!r})" for i, line in enumerate(lines, start=1) if not len(line.offsets)]
    if empty:
        return (f"No points written for {', '.join(empty)}: the window was past the text before the first point "
                f"(try another style or seed).")
    capped = [f"line {i} ({line.text!r})" for i, line in enumerate(lines, start=1) if not line.finished]
    if not capped:
        return "Finished: the window passed the end of the text" + (" on every line." if len(lines) > 1 else ".")
    return (f"Stopped at the cap of {MAX_POINTS_PER_CHARACTER} points per character before the window passed "
            f"the end of {', '.join(capped)}.")


def _text(text: Any) -> str:
    """The text, checked against the limits: at least one character, at most MAX_LINES lines and
    MAX_CHARACTERS characters."""
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, got {text!r:.80}")
    text = text.strip("\n")
    lines = wrap_text(text)
    if not any(lines):
        raise ValueError("text is empty: type something to write")
    if len(lines) > MAX_LINES or sum(map(len, lines)) > MAX_CHARACTERS:
        raise ValueError(f"text may have up to {MAX_LINES} lines and {MAX_CHARACTERS} characters, got "
                         f"{plural(len(lines), 'line')} and {plural(sum(map(len, lines)), 'character')}")
    return text


def _style(synthesis: LoadedSynthesisModel, style_data: Path | None, style: str, style_line: Any,
           style_strokes: Any, style_text: Any) -> tuple[np.ndarray, str] | None:
    """The primer the chosen style source gives, (raw offsets, text), or None for the model's own hand."""
    if style == "none":
        return None
    if style == "line":
        if not isinstance(style_line, str) or not style_line.strip():
            raise ValueError(f"style_line must be an IAM-OnDB line id such as a01-000u-01, got {style_line!r:.80}")
        primer, name = style_from_line(style_data, style_line.strip()), f"style_line {style_line.strip()}'s text"
    else:
        if style_strokes in ("", None):
            raise ValueError("style_strokes is empty: draw a line of handwriting on the canvas first")
        if isinstance(style_text, str) and len(style_text.strip()) > MAX_STYLE_TEXT:  # before any work
            raise ValueError(f"style_text may have up to {MAX_STYLE_TEXT} characters, got {len(style_text.strip()):,}")
        strokes = canvas.strokes_from_json(style_strokes)
        if not isinstance(style_text, str) or not style_text.strip():
            raise ValueError("style_text is empty: type the text you drew on the canvas "
                             "(priming reads it with the strokes)")
        primer, name = style_from_strokes(strokes, style_text.strip()), "style_text"
    try:  # the window reads the style's text too, so the model must know its characters
        synthesis.model.alphabet.check(primer[1])
    except UnknownCharacters as error:
        raise ValueError(f"{name}: {error}") from None
    return primer


def _in_range(value: Any, name: str) -> float:
    low, high = LIMITS[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"{name} must be a number between {low} and {high}, got {value!r:.80}")
    return float(value)


def _seed(value: Any) -> int:
    low, high = LIMITS["seed"]
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer()
            or not low <= value <= high):
        raise ValueError(f"seed must be a whole number between {low} and {high}, got {value!r:.80}")
    return int(value)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
