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

import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from handwriting_hm.hmlstm.cli import first_line
from handwriting_hm.synthesis.model import LoadedSynthesisModel
from handwriting_hm.synthesis.write import ALIGNMENTS

from . import canvas
from .writing import MAX_CHARACTERS, MAX_LINES, WRITE_RESULT, WriterPool

LOG = logging.getLogger("app")  # the server's log: a user's error as one line (stderr where nothing else is set up)

# requests written at once, each in a process of its own (`writing.WriterPool`): one per two cores leaves the
# other core to /generate and the server (docs/limits.md)
WRITERS = max(1, (os.cpu_count() or 2) // 2)
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
                     number: Callable[..., gr.Number], writers: int = WRITERS) -> WriterPool | None:
    """The Write tab's contents and its `/write` endpoint, inside the page's Blocks. Without a model
    the tab shows one sentence, and /write answers it in one line. `writers`: requests written at once,
    each in a process of its own; returns their pool (None without a model), for the page to close."""
    sources = ["none", "canvas"] + (["line"] if style_data is not None else [])
    detectors = synthesis.model.core.num_detectors if synthesis is not None else 2
    colour_choices = ["ink", "strokes"] + [f"layer{k}" for k in range(1, min(detectors, 2) + 1)]
    marker_choices = list(range(detectors + 1))
    choices = {"style": sources, "colour_by": colour_choices, "marker_layer": marker_choices,
               "align": list(ALIGNMENTS)}
    pool = WriterPool(synthesis, style_data, choices, writers) if synthesis is not None else None

    # the parameter names are the API's (gradio_client keywords); the values arrive unchecked
    def write_text(text: Any, bias: Any, temperature: Any, seed: Any, style: Any, style_line: Any, style_strokes: Any,
                   style_text: Any, align: Any, colour_by: Any, marker_layer: Any,
                   straighten: Any) -> WRITE_RESULT:
        try:
            if pool is None:
                raise ValueError(NO_MODEL)
            return pool.write(Path(tempfile.mkdtemp(prefix="write-", dir=cache_folder())), text, bias, temperature,
                              seed, style, style_line, style_strokes, style_text, align, colour_by, marker_layer,
                              straighten)
        except ValueError as error:  # UnknownCharacters included
            raise refused("write", error) from None
        except RuntimeError as error:  # a writer process died: said in one line, logged by the pool
            raise gr.Error(str(error), print_exception=False) from None

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
    return pool
