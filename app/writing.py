"""The work of one `/write` request, and the processes that do it.

`write_request` checks a request's raw inputs, writes its text with the synthesis model, lays the lines
out, draws them and saves the downloads; it imports no Gradio. `WriterPool` runs it in processes of
their own: a write is thousands of small steps of Python, and in the server's process it would hold
the interpreter's lock half the time, doubling the time of every `/generate` served beside it. In a
process of its own a write leaves the server free, and writers run truly at once where cores allow.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import torch

from handwriting_hm.drawing.png import render_png
from handwriting_hm.drawing.style import INK_HEIGHT
from handwriting_hm.drawing.svg import render_letters_svg, render_plotter_svg, render_svg
from handwriting_hm.hmlstm.atomic import atomic_write
from handwriting_hm.synthesis.alphabet import UnknownCharacters
from handwriting_hm.synthesis.generate import MAX_POINTS_PER_CHARACTER
from handwriting_hm.synthesis.model import LoadedSynthesisModel
from handwriting_hm.synthesis.styles import MAX_TEXT as MAX_STYLE_TEXT, style_from_line, style_from_strokes
from handwriting_hm.synthesis.write import WrittenText, page_document, primed_points, wrap_text, write_lines
from handwriting_hm.unconditional.sample import LIMITS

from . import canvas

LOG = logging.getLogger("app")
MAX_LINES = 8
MAX_CHARACTERS = 300  # over all lines: at most 24,000 steps of the sampler at the cap, for one request
WRITE_RESULT = tuple[str, str, str, str, str, str]  # drawing HTML, finished line, SVG, PNG, plotter SVG, JSON paths


class WriterPool:
    """`writers` processes that run `write_request`, each holding its own copy of the synthesis model.

    The processes are started (spawned: the server has threads, which forking would copy half-way) as
    the pool is made, in the background, so the first request finds one ready or nearly so. A user's
    error comes back as the ValueError it was; a process that dies (killed, out of memory) fails its
    request with one line, and the next request gets a fresh pool.
    """

    def __init__(self, synthesis: LoadedSynthesisModel, style_data: Path | None, choices: dict[str, list],
                 writers: int) -> None:
        self._start = (synthesis, style_data, choices, torch.get_num_threads())
        self.writers = writers
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        executor = ProcessPoolExecutor(self.writers, mp_context=multiprocessing.get_context("spawn"),
                                       initializer=_start_writer, initargs=self._start)
        for _ in range(self.writers):  # start them now rather than on the first requests
            executor.submit(os.getpid)
        return executor

    def write(self, folder: Path, *inputs: Any) -> WRITE_RESULT:
        """`write_request(model, style_data, choices, folder, *inputs)` in one of the writer processes."""
        try:
            return self._executor.submit(_write_in_writer, folder, inputs).result()
        except BrokenProcessPool:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = self._new_executor()
            LOG.error("/write: a writer process stopped unexpectedly; the writers were started again")
            raise RuntimeError("the process writing this request stopped unexpectedly (out of memory or killed); "
                               "the writers were started again: send the request again") from None

    def close(self) -> None:
        """Stop the writer processes (a request being written is finished first)."""
        self._executor.shutdown(wait=True, cancel_futures=True)


_WRITER: tuple[LoadedSynthesisModel, Path | None, dict[str, list]] | None = None  # in a writer process only


def _start_writer(synthesis: LoadedSynthesisModel, style_data: Path | None, choices: dict[str, list],
                  threads: int) -> None:
    global _WRITER
    torch.set_num_threads(threads)  # as many as the server's own work uses
    _WRITER = (synthesis, style_data, choices)


def _write_in_writer(folder: Path, inputs: tuple) -> WRITE_RESULT:
    try:
        return write_request(*_WRITER, folder, *inputs)
    except ValueError as error:  # as a plain ValueError: any subclass comes back through pickling the same way
        raise ValueError(str(error)) from None


def write_request(synthesis: LoadedSynthesisModel, style_data: Path | None, choices: dict[str, list], folder: Path,
           text: Any, bias: Any, temperature: Any, seed: Any, style: Any, style_line: Any, style_strokes: Any,
           style_text: Any, align: Any, colour_by: Any, marker_layer: Any,
           straighten: Any) -> tuple[str, str, str, str, str, str]:
    """Check the raw inputs, write, lay out, draw, save into `folder`; returns (drawing HTML, finished line,
    SVG, PNG, plotter SVG, JSON paths). A user's error raises ValueError with one line."""
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
