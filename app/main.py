"""The Gradio page where an HM-LSTM writes and shows the boundaries it learned.

The model is loaded once at start-up and handed to `build_app`; nothing about a user lives in
module globals. Every request gets its own folder inside Gradio's cache for the downloads, so
Gradio serves them without copying and `delete_cache` clears them. Generation runs one request
at a time (a CPU has no memory or cores to spare for more); further requests wait in a
bounded queue. The page fetches nothing from the network: no analytics, no update check, no
web fonts.
"""
from __future__ import annotations

import html
import json
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder

from handwriting_hm.drawing import render_grid_png, render_svg, to_json
from handwriting_hm.model import LoadedModel
from handwriting_hm.sample import LIMITS, Sample, check_sampling_args, sample_handwriting

SVG_NAMESPACE = "http://www.w3.org/2000/svg"
COLOUR_CHOICES = [
    ("plain ink", "ink"),
    ("pen-up strokes", "strokes"),
    ("layer-1 segments", "layer1"),
    ("layer-2 segments", "layer2"),
]
MARKER_CHOICES = [("none", 0), ("layer 1 fires", 1), ("layer 2 fires", 2)]
QUEUE_SIZE = 16  # requests waiting beyond this are refused rather than piling up
INK_HEIGHT = 120.0  # pixels; the page scales the drawing to its width

DESCRIPTION = """
# Hierarchical Multiscale LSTM handwriting
An HM-LSTM ([Chung, Ahn & Bengio, 2017](https://arxiv.org/abs/1609.01704)) writes one pen point at a
time. Each layer above the first has a boundary detector: when layer *k* fires, layer *k+1* **updates**;
otherwise it **copies** its state and does no work. The colours show what it learned: *pen-up strokes*
colours each pen-down stroke, *layer-1 / layer-2 segments* colour the runs between that layer's
boundaries, and the red dots mark where the chosen layer fires. Press **Generate**.
"""

CSS = """
.hm-card {display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; margin-bottom: 18px;}
.hm-drawing {flex: 4 1 480px; border: 1px solid var(--border-color-primary); border-radius: 8px;
             background: white; padding: 4px;}
.hm-drawing svg {width: 100%; height: auto; max-height: 70vh; display: block;}
.hm-counts {flex: 1 1 220px; font-size: 0.9em;}
.hm-counts table {border-collapse: collapse; width: 100%;}
.hm-counts th, .hm-counts td {padding: 2px 8px; text-align: right; border-bottom: 1px solid var(--border-color-primary);}
.hm-counts th:first-child, .hm-counts td:first-child {text-align: left;}
.hm-note {color: var(--body-text-color-subdued); font-size: 0.9em;}
"""

# System fonts only: the default theme's Google fonts would make the browser reach the internet.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_app(model: LoadedModel) -> gr.Blocks:
    """The page, bound to one loaded model. Launch it with `launch_app`."""

    def generate(n_points: float, n_samples: float, bias: float, temperature: float, seed: float,
                 colour_by: str, marker_layer: int) -> tuple[str, list[dict[str, Any]], str, str, str]:
        try:
            return _generate(model, n_points, n_samples, bias, temperature, seed, colour_by, marker_layer)
        except ValueError as error:
            raise gr.Error(str(error), print_exception=False) from None

    # delete_cache: every 10 minutes, drop the download files older than an hour
    with gr.Blocks(title="HM-LSTM handwriting", analytics_enabled=False, delete_cache=(600, 3600)) as app:
        gr.Markdown(DESCRIPTION)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=300):
                with gr.Row():
                    n_points = _number("Length (points)", 700, "n_points")
                    n_samples = _number("Samples", 1, "n_samples")
                with gr.Row():
                    bias = _number("Bias (higher: neater)", 0.0, "bias", step=0.1)
                    temperature = _number("Temperature", 1.0, "temperature", step=0.05)
                seed = gr.Number(value=0, label="Seed", info="same seed, same drawing", precision=0, elem_id="seed")
                colour_by = gr.Radio(COLOUR_CHOICES, value="layer2", label="Colour by")
                marker_layer = gr.Dropdown(MARKER_CHOICES, value=0, label="Markers")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=4):
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
            inputs=[n_points, n_samples, bias, temperature, seed, colour_by, marker_layer],
            outputs=[drawings, counts, svg_file, png_file, json_file],
            api_name="generate",
            concurrency_limit=1,
        )
    app.queue(max_size=QUEUE_SIZE)
    return app


def launch_app(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
               prevent_thread_lock: bool = False) -> None:
    """Serve `app` on host:port (port None: Gradio picks a free one)."""
    app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=prevent_thread_lock,
               theme=THEME, css=CSS, footer_links=["api"])


def _number(label: str, value: float, name: str, step: float = 1) -> gr.Number:
    """A number box whose range is checked by `check_sampling_args`, so the UI and the API give the
    same message (Gradio's own bounds check would not say which parameter is out of range)."""
    low, high = LIMITS[name]
    whole = isinstance(low, int)
    return gr.Number(value=value, label=label, info=f"{low} to {high}", step=step,
                     precision=0 if whole else None, min_width=100, elem_id=name)


def _generate(model: LoadedModel, n_points: float, n_samples: float, bias: float, temperature: float,
              seed: float, colour_by: str, marker_layer: int) -> tuple[str, list[dict[str, Any]], str, str, str]:
    """Sample, render, write the downloads; returns (drawings HTML, counts, SVG, PNG, JSON paths)."""
    n_points, n_samples, seed = (_whole(v, name) for v, name in
                                 ((n_points, "n_points"), (n_samples, "n_samples"), (seed, "seed")))
    bias, temperature = _real(bias, "bias"), _real(temperature, "temperature")
    check_sampling_args(n_points, n_samples, bias, temperature, seed)
    marker = int(marker_layer) or None
    started = time.perf_counter()
    samples = sample_handwriting(model, n_samples=n_samples, n_points=n_points, bias=bias,
                                 temperature=temperature, seed=seed)
    svgs = [render_svg(s.offsets, s.boundaries, colour_by, marker, ink_height=INK_HEIGHT) for s in samples]
    seconds = time.perf_counter() - started

    folder = Path(tempfile.mkdtemp(prefix="handwriting-", dir=_cache_folder()))
    svg_path, png_path, json_path = (folder / f"handwriting.{ext}" for ext in ("svg", "png", "json"))
    svg_path.write_text(stack_svgs(svgs), encoding="utf-8")
    render_grid_png([s.offsets for s in samples], boundaries=[s.boundaries for s in samples],
                    colour_by=colour_by, marker_layer=marker, ink_height=INK_HEIGHT, path=png_path,
                    titles=[f"sample {i}" for i in range(1, n_samples + 1)] if n_samples > 1 else None)
    parameters = {"n_points": n_points, "n_samples": n_samples, "bias": bias, "temperature": temperature,
                  "seed": seed}
    json_path.write_text(json.dumps({
        "parameters": parameters,
        "samples": [json.loads(to_json(s.offsets, s.boundaries, s.operations, operation_counts=s.operation_counts()))
                    for s in samples],
    }), encoding="utf-8")

    cards = "".join(_card(i, svg, sample) for i, (svg, sample) in enumerate(zip(svgs, samples), start=1))
    header = (f"<p class='hm-note'>{n_samples} × {n_points} points, seed {seed}, "
              f"generated and drawn in {seconds:.2f} s</p>")
    counts = [{"operations": s.operation_counts(), "copied_fraction": round(s.copied_fraction(), 4)} for s in samples]
    return header + cards, counts, str(svg_path), str(png_path), str(json_path)


def _cache_folder() -> str:
    """Gradio's cache: files written here are served as they are, and `delete_cache` removes them."""
    folder = Path(get_upload_folder())
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder)


def _whole(value: Any, name: str) -> int:
    if value is None or isinstance(value, bool) or not float(value).is_integer():
        low, high = LIMITS[name]
        raise ValueError(f"{name} must be a whole number between {low} and {high}, got {value!r}")
    return int(value)


def _real(value: Any, name: str) -> float:
    if value is None or isinstance(value, bool):
        low, high = LIMITS[name]
        raise ValueError(f"{name} must be a number between {low} and {high}, got {value!r}")
    return float(value)


def _card(index: int, svg: str, sample: Sample) -> str:
    """One drawing with its table of operations beside it."""
    rows = "".join(
        f"<tr><td>{layer}</td><td>{ops['UPDATE']}</td><td>{ops['COPY']}</td><td>{ops['FLUSH']}</td></tr>"
        for layer, ops in sample.operation_counts().items()
    )
    n_layers, n_points = sample.operations.shape[1], sample.operations.shape[0]
    computed = int(sample.counts.sum() - sample.counts[:, 0].sum())
    return (
        f"<div class='hm-card' id='sample-{index}'><div class='hm-drawing'>{svg}</div>"
        f"<div class='hm-counts'><b>Sample {index}</b><table>"
        "<tr><th>layer</th><th>UPDATE</th><th>COPY</th><th>FLUSH</th></tr>"
        f"{rows}</table><p class='hm-note'>A stacked LSTM computes all {n_layers} layers at all "
        f"{n_points} points ({n_layers * n_points} layer-steps). This HM-LSTM computed {computed} and "
        f"copied the rest: <b>{html.escape(f'{sample.copied_fraction():.0%}')} saved</b>.</p></div></div>"
    )


def stack_svgs(svgs: list[str]) -> str:
    """Several SVG documents stacked top to bottom in one SVG document (one is returned as it is)."""
    if len(svgs) == 1:
        return svgs[0]
    ET.register_namespace("", SVG_NAMESPACE)
    drawings = [ET.fromstring(svg) for svg in svgs]
    sizes = [(float(d.get("width").removesuffix("px")), float(d.get("height").removesuffix("px"))) for d in drawings]
    width, height = max(w for w, _ in sizes), sum(h for _, h in sizes)
    stack = ET.Element(f"{{{SVG_NAMESPACE}}}svg", {"width": f"{width:.0f}px", "height": f"{height:.0f}px",
                                                   "viewBox": f"0 0 {width:.2f} {height:.2f}"})
    top = 0.0
    for drawing, (_, h) in zip(drawings, sizes):
        drawing.set("y", f"{top:.2f}")
        stack.append(drawing)
        top += h
    return ET.tostring(stack, encoding="unicode")
