"""The Gradio page where an HM-LSTM writes and shows the boundaries it learned.

The model is loaded once at start-up and handed to `build_app`; nothing about a user lives in
module globals. The page's defaults come from that model: a short sample at start-up finds the
highest layer whose boundary detector fires, and the page opens coloured by that layer's
segments with red dots where it fires (a layer that never fires would draw everything in one
colour). Every request gets its own folder inside Gradio's cache for the downloads, written by
`drawing.save_samples` as `handwriting-hm sample` writes them, so Gradio serves them without
copying and `delete_cache` clears them. Generation runs one request at a time (a CPU has no
memory or cores to spare for more); further requests wait in a bounded queue. The page fetches
nothing from the network: no analytics, no update check, no web fonts.

The handler takes the inputs as sent (`preprocess=False`) and checks them itself, and `Page`
checks their number, so a wrong value, type or count through the API gets one line naming the
parameters, in the reply and in the log: one line through the logger "app" (to stderr where no
logging is set up; Gradio's own checks reply {"error": null}, or print a traceback).
"""
from __future__ import annotations

import html
import inspect
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from handwriting_hm.drawing.records import save_samples
from handwriting_hm.drawing.svg import render_svg
from handwriting_hm.scoring import PEN_UP_WINDOW
from handwriting_hm.unconditional.config import layer1_note
from handwriting_hm.unconditional.model import LoadedModel, load_handwriting_model
from handwriting_hm.unconditional.sample import (LIMITS, Sample, learned_colouring, sample_handwriting,
                                                  sampling_parameters)
from handwriting_hm.synthesis.model import LoadedSynthesisModel

from . import canvas
from .write_view import CSS as WRITE_CSS, WRITERS, build_write_view, layer_choice, refused
from .writing import WriterPool

COLOUR_NAMES = {"ink": "plain ink", "strokes": "pen-up strokes", "layer1": "layer-1 segments",
                "layer2": "layer-2 segments"}
QUEUE_SIZE = 64  # requests waiting beyond this are refused rather than piling up (each holds bounded inputs only)
PROBE_POINTS = 300  # the start-up sample that decides the default colouring: long enough for every layer to fire

INTRO = """
# Hierarchical Multiscale LSTM handwriting
An HM-LSTM ([Chung, Ahn & Bengio, 2017](https://arxiv.org/abs/1609.01704)) writes one pen point at a
time. Each layer above the first has a boundary detector: when layer *k* fires, layer *k+1* **updates**;
otherwise it **copies** its state and does no work. The colours show what it learned: *pen-up strokes*
colours each pen-down stroke, *layer-k segments* colour the runs between layer *k*'s boundaries, and
red dots mark where the layer chosen under *Markers* fires. Press **Generate**.
"""

CSS = """
.hm-card {margin-bottom: 22px;}
.hm-drawing {border: 1px solid var(--border-color-primary); border-radius: 8px; background: white; padding: 4px;}
.hm-drawing svg {width: 100%; height: auto; max-height: 70vh; display: block;}
.hm-details {display: flex; flex-wrap: wrap; gap: 8px 24px; align-items: flex-start; margin-top: 6px; font-size: 0.9em;}
.hm-details table {border-collapse: collapse;}
.hm-details th, .hm-details td {padding: 2px 8px; text-align: right; border-bottom: 1px solid var(--border-color-primary);}
.hm-details th:first-child, .hm-details td:first-child {text-align: left;}
.hm-details p {flex: 1 1 320px; margin: 0;}
.hm-note {color: var(--body-text-color-subdued); font-size: 0.9em;}
.hm-silent {color: #b35c00;}
"""

# System fonts only: the default theme's Google fonts would make the browser reach the internet.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


@dataclass(frozen=True)
class Defaults:
    """What the page opens with, chosen from the model."""

    colour_by: str  # the highest layer that fires, or pen-up strokes when none does
    marker_layer: int  # the same layer (0: no markers)
    detectors: int  # layers with a boundary detector
    firings: list[int]  # how often each detector fired in the start-up sample
    near_pen_ups: tuple[int, ...] = ()  # how many of those firings fell within PEN_UP_WINDOW points of a pen-up
    pen_ups: int = 0  # how often the pen lifted in that sample
    layer1_note: str = ""  # where z1 is given rather than learned, the sentence that says so

    def colour_choices(self) -> list[tuple[str, str]]:
        modes = ["ink", "strokes"] + [f"layer{k}" for k in range(1, min(self.detectors, 2) + 1)]
        return [(COLOUR_NAMES[mode], mode) for mode in modes]

    def marker_choices(self) -> list[tuple[str, int]]:
        return [("none", 0)] + [(f"layer {k} fires", k) for k in range(1, self.detectors + 1)]

    def explain(self) -> str:
        """One paragraph on why the page opens as it does."""
        if self.detectors == 0:
            return "This model is a plain LSTM: it has no boundary detectors, so the page colours pen-up strokes."
        fired = ", ".join(f"layer {k}: {n} times" for k, n in enumerate(self.firings, start=1))
        silent = [k for k, n in enumerate(self.firings, start=1) if n == 0]
        said = f"In a {PROBE_POINTS}-point test sample at start-up the detectors fired: {fired}. "
        if self.layer1_note:
            said = self.layer1_note + " " + said
        if any(self.firings) and self.near_pen_ups:
            near = ", ".join(f"layer {k}: {n} of {total}" for k, (n, total) in
                             enumerate(zip(self.near_pen_ups, self.firings), start=1) if total)
            said += f"Firings within {PEN_UP_WINDOW} points of a pen-up ({self.pen_ups} in the sample): {near}. "
        if self.marker_layer == 0:
            return said + "No layer fired, so the page opens coloured by pen-up strokes."
        return (said + (f"Layer{'s' if len(silent) > 1 else ''} {', '.join(map(str, silent))} never fired, so "
                        if silent else "")
                + f"the page opens coloured by layer-{self.marker_layer} segments, with red dots where layer "
                  f"{self.marker_layer} fires.")


class Page(gr.Blocks):
    """gr.Blocks whose events refuse a wrong number of inputs with one line naming them, and which stops
    the Write view's writer processes when it closes."""

    writer_pool: WriterPool | None = None

    def close(self, verbose: bool = True) -> None:
        super().close(verbose)
        if self.writer_pool is not None:
            self.writer_pool.close()
            self.writer_pool = None

    def validate_inputs(self, block_fn: Any, inputs: list[Any]) -> None:
        if len(inputs) != len(block_fn.inputs):
            names = ", ".join(inspect.signature(block_fn.fn).parameters)  # the API's keywords
            raise gr.Error(f"/{block_fn.api_name} takes {len(block_fn.inputs)} inputs ({names}), got {len(inputs)}",
                           print_exception=False)


def model_defaults(model: LoadedModel | None) -> Defaults:
    """Sample PROBE_POINTS points and pick the highest layer whose detector fired (model None: the shipped one)."""
    model = load_handwriting_model() if model is None else model
    probe = sample_handwriting(model, n_points=PROBE_POINTS, seed=0)[0]
    firings = probe.firings()
    colour_by, layer = learned_colouring(firings)
    near = [round(figures["precision"] * n) for figures, n in zip(probe.pen_up_alignment(), firings)]
    return Defaults(colour_by=colour_by, marker_layer=layer,
                    detectors=len(firings), firings=firings, near_pen_ups=tuple(near),
                    pen_ups=int((probe.offsets[:, 2] > 0.5).sum()), layer1_note=layer1_note(model.model.config))


def build_app(model: LoadedModel, synthesis: LoadedSynthesisModel | None = None,
              style_data: Path | None = None, writers: int | None = None) -> gr.Blocks:
    """The page, bound to one loaded model, and the Write view to a synthesis model if given (with
    `style_data`, a prepared IAM-OnDB file whose lines can lend their style). Launch it with `launch_app`."""
    defaults = model_defaults(model)
    choices = {"colour_by": [value for _, value in defaults.colour_choices()],
               "marker_layer": [value for _, value in defaults.marker_choices()]}

    # the parameter names are the API's (gradio_client keywords); the values arrive unchecked
    def generate(n_points: Any, n_samples: Any, bias: Any, temperature: Any, seed: Any, colour_by: Any,
                 marker_layer: Any, straighten: Any) -> tuple[str, list[dict[str, Any]], str, str, str]:
        try:
            return _generate(model, choices, n_points, n_samples, bias, temperature, seed, colour_by,
                             marker_layer, straighten)
        except ValueError as error:
            raise refused("generate", error) from None

    # delete_cache: every 10 minutes, drop the download files older than an hour
    with Page(title="HM-LSTM handwriting", analytics_enabled=False, fill_width=True,
                   delete_cache=(600, 3600)) as app:
        with gr.Tab("Generate", id="generate_tab"):
            gr.Markdown(INTRO)
            gr.Markdown(defaults.explain(), elem_classes="hm-note")
            with gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=280):
                    with gr.Row():
                        n_points = _number("Length (points)", 700, "n_points")
                        n_samples = _number("Samples", 1, "n_samples")
                    with gr.Row():
                        bias = _number("Bias (higher: neater)", 0.0, "bias", step=0.1)
                        temperature = _number("Temperature", 1.0, "temperature", step=0.05)
                    seed = gr.Number(value=0, label="Seed", info="same seed, same drawing", precision=0, elem_id="seed")
                    colour_by = gr.Dropdown(defaults.colour_choices(), value=defaults.colour_by, label="Colour by",
                                            elem_id="colour_by")
                    marker_layer = layer_choice(defaults.marker_choices(), value=defaults.marker_layer, label="Markers",
                                               elem_id="marker_layer")
                    straighten = gr.Checkbox(False, label="Straighten the baseline", elem_id="straighten",
                                             info="drawing only; the JSON keeps the raw strokes")
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=5):
                    drawings = gr.HTML("<p class='hm-note'>Press Generate to make the model write.</p>",
                                       label="drawings", elem_id="drawings")
                    with gr.Row():
                        svg_file = gr.DownloadButton("Download SVG", size="sm")
                        png_file = gr.DownloadButton("Download PNG", size="sm")
                        json_file = gr.DownloadButton("Download JSON", size="sm")
                    with gr.Accordion("Operation counts as JSON", open=False):
                        counts = gr.JSON(label="counts")
            button.click(
                generate,
                inputs=[n_points, n_samples, bias, temperature, seed, colour_by, marker_layer, straighten],
                outputs=[drawings, counts, svg_file, png_file, json_file],
                api_name="generate",
                concurrency_limit=1,
                preprocess=False,  # the handler checks the raw values and names the parameter (see the docstring)
            )
        with gr.Tab("Write", id="write_tab"):
            app.writer_pool = build_write_view(synthesis, style_data, _cache_folder, _number, writers or WRITERS)
    app.queue(max_size=QUEUE_SIZE)
    return app


def launch_app(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
               prevent_thread_lock: bool = False) -> None:
    """Serve `app` on host:port (port None: Gradio picks a free one)."""
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock,
               theme=THEME, css=CSS + canvas.CSS + WRITE_CSS, footer_links=["api"])


def _number(label: str, value: float, name: str, step: float = 1, elem_id: str | None = None) -> gr.Number:
    """A number box whose range is checked by `sampling_parameters`, so the UI and the API give the
    same message (Gradio's own bounds check would not say which parameter is out of range)."""
    low, high = LIMITS[name]
    whole = isinstance(low, int)
    return gr.Number(value=value, label=label, info=f"{low} to {high}", step=step,
                     precision=0 if whole else None, min_width=100, elem_id=elem_id or name)


def _generate(model: LoadedModel, choices: dict[str, list], n_points: Any, n_samples: Any, bias: Any,
              temperature: Any, seed: Any, colour_by: Any, marker_layer: Any,
              straighten: Any) -> tuple[str, list[dict[str, Any]], str, str, str]:
    """Check, sample, render, write the downloads; returns (drawings HTML, counts, SVG, PNG, JSON paths)."""
    parameters = sampling_parameters(_whole(n_points, "n_points"), _whole(n_samples, "n_samples"),
                                     _real(bias, "bias"), _real(temperature, "temperature"), _whole(seed, "seed"))
    for name, value in (("colour_by", colour_by), ("marker_layer", marker_layer)):
        if isinstance(value, bool) or value not in choices[name]:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, choices[name]))}, got {value!r}")
    if not isinstance(straighten, bool):
        raise ValueError(f"straighten must be true or false, got {straighten!r}")
    style = {"colour_by": colour_by, "marker_layer": marker_layer or None, "straighten": straighten}

    started = time.perf_counter()
    samples = sample_handwriting(model, **parameters)
    svgs = [render_svg(s.offsets, s.boundaries, **style) for s in samples]
    seconds = time.perf_counter() - started

    folder = Path(tempfile.mkdtemp(prefix="handwriting-", dir=_cache_folder()))
    files = [folder / f"handwriting.{ext}" for ext in ("svg", "png", "json")]
    for path in files:
        save_samples(path, samples, parameters, **style)

    cards = "".join(_card(i, svg, sample) for i, (svg, sample) in enumerate(zip(svgs, samples), start=1))
    header = (f"<p class='hm-note'>{parameters['n_samples']} × {parameters['n_points']} points, seed "
              f"{parameters['seed']}, generated and drawn in {seconds:.2f} s</p>")
    counts = [{"operations": s.operation_counts(), "copied_fraction": round(s.copied_fraction(), 4),
               "boundary_firings": s.firings()} for s in samples]
    return (header + cards, counts, *map(str, files))


def _cache_folder() -> str:
    """Gradio's cache: files written here are served as they are, and `delete_cache` removes them."""
    folder = Path(get_upload_folder())
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def _whole(value: Any, name: str) -> int:
    """`value` if it is a whole number (7 or 7.0); 2.5, "7", True or None name the parameter instead."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        low, high = LIMITS[name]
        raise ValueError(f"{name} must be a whole number between {low} and {high}, got {value!r}")
    return int(value)


def _real(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        low, high = LIMITS[name]
        raise ValueError(f"{name} must be a number between {low} and {high}, got {value!r}")
    return float(value)


def _card(index: int, svg: str, sample: Sample) -> str:
    """One drawing, and below it its table of operations and what the detectors did."""
    rows = "".join(
        f"<tr><td>{layer}</td><td>{ops['UPDATE']}</td><td>{ops['COPY']}</td><td>{ops['FLUSH']}</td></tr>"
        for layer, ops in sample.operation_counts().items()
    )
    n_layers, n_points = sample.operations.shape[1], sample.operations.shape[0]
    computed = int(sample.counts.sum() - sample.counts[:, 0].sum())
    silent = [k for k, fired in enumerate(sample.firings(), start=1) if fired == 0]
    why = (f" (the COPY share; here it comes from layer{'s' if len(silent) > 1 else ''} "
           f"{', '.join(str(k + 1) for k in silent)}, never updated because the detector below never fired, "
           f"not from skips the model chose)" if silent else " (the COPY share)")
    notes = "".join(
        f"<br><span class='hm-silent'>Layer {k}'s boundary detector never fired in this sample: layer {k + 1} "
        f"never updated (it copied its state at every point), and layer-{k} colouring shows one segment.</span>"
        for k, fired in enumerate(sample.firings(), start=1) if fired == 0
    )
    return (
        f"<div class='hm-card' id='sample-{index}'><div class='hm-drawing'>{svg}</div>"
        f"<div class='hm-details'><table><caption><b>Sample {index}</b></caption>"
        "<tr><th>layer</th><th>UPDATE</th><th>COPY</th><th>FLUSH</th></tr>"
        f"{rows}</table><p class='hm-note'>A stacked LSTM computes all {n_layers} layers at all "
        f"{n_points} points ({n_layers * n_points} layer-steps). This HM-LSTM computed {computed} and "
        f"copied the rest: <b>{html.escape(f'{sample.copied_fraction():.0%}')} of layer-steps copied</b>{why}. "
        "Boundaries fired: " + ", ".join(f"layer {k}: {n} times" for k, n in enumerate(sample.firings(), start=1))
        + f".{notes}</p></div></div>"
    )
