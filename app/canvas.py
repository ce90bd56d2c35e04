"""The drawing canvas of the Write view: a person writes a line, which primes the model's style.

The canvas records the pen path, not a picture: each pen-down stroke is a list of [x, y] points
in canvas pixels (y down), and the page's script writes the list of strokes as JSON into a hidden
textbox, which the Write handler reads like any other input (so the API takes the same JSON).

Pixels are not the units the model was trained in. `strokes_from_json` scales them by
PIXEL_SCALE = 5 IAM-OnDB sensor units per canvas pixel: the canvas's guide lines are 60 pixels
apart, 300 units, about the height of a capital in IAM-OnDB (whose median line, descenders and
ascenders included, is 340 units tall between its 5th and 95th percentiles), so writing between
them comes out at the size of the training data. A mouse or a finger also samples the path at
its own rate, so each stroke is resampled every RESAMPLE_STEP = 18 units of arc length, the
median pen-down step of IAM-OnDB: the model reads points as far apart as those it learned from.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from data_prep.cleaning import resample_strokes
from handwriting_hm.drawing.geometry import split_strokes
from handwriting_hm.synthesis.styles import MAX_COORDINATE, MAX_POINTS as MAX_STYLE_POINTS

PIXEL_SCALE = 5.0  # IAM-OnDB sensor units per canvas pixel
RESAMPLE_STEP = 18.0  # sensor units between points after resampling: IAM-OnDB's median pen-down step
MAX_POINTS = 20_000  # what one request may send: many minutes of drawing, far less than a memory problem
WIDTH, HEIGHT = 1000, 200  # canvas pixels; CSS may show it smaller, the script maps back to these
BASELINE, TOP_LINE = 140, 80  # the guide lines' heights in canvas pixels

HTML = f"""
<div class="hm-canvas">
  <p class="hm-note">Write a line in your own hand here, sitting on the lower guide line, capitals up to the
  upper one; then type what it says in the box below.</p>
  <canvas width="{WIDTH}" height="{HEIGHT}" aria-label="drawing canvas: write a line of text here"></canvas>
  <button type="button" class="hm-clear">Clear</button>
</div>
"""

# `element` is the gr.HTML component's root. Strokes go to the hidden #style_strokes textbox, and
# an "input" event tells Gradio its value changed (setting .value alone would not).
SCRIPT = f"""
const canvas = element.querySelector('canvas');
const pen = canvas.getContext('2d');
let strokes = [];
let current = null;

function at(event) {{  // client pixels -> canvas pixels, whatever size CSS shows the canvas at
  const box = canvas.getBoundingClientRect();
  return [Math.round((event.clientX - box.left) * canvas.width / box.width * 10) / 10,
          Math.round((event.clientY - box.top) * canvas.height / box.height * 10) / 10];
}}

function redraw() {{
  pen.clearRect(0, 0, canvas.width, canvas.height);
  pen.strokeStyle = '#c8cde0';
  pen.lineWidth = 1;
  for (const y of [{TOP_LINE}, {BASELINE}]) {{
    pen.beginPath(); pen.moveTo(0, y); pen.lineTo(canvas.width, y); pen.stroke();
  }}
  pen.strokeStyle = '#1b1f3b';
  pen.lineWidth = 3;
  pen.lineCap = pen.lineJoin = 'round';
  for (const stroke of strokes) {{
    pen.beginPath();
    pen.moveTo(stroke[0][0], stroke[0][1]);
    for (const [x, y] of stroke) pen.lineTo(x, y);
    if (stroke.length === 1) pen.lineTo(stroke[0][0] + 0.1, stroke[0][1]);  // a dot
    pen.stroke();
  }}
}}

function publish() {{
  const box = document.querySelector('#style_strokes textarea');
  box.value = strokes.length ? JSON.stringify(strokes) : '';
  box.dispatchEvent(new Event('input', {{bubbles: true}}));
}}

canvas.addEventListener('pointerdown', (event) => {{
  canvas.setPointerCapture(event.pointerId);
  current = [at(event)];
  strokes.push(current);
  redraw();
}});
canvas.addEventListener('pointermove', (event) => {{
  if (current === null) return;
  current.push(at(event));
  redraw();
}});
for (const name of ['pointerup', 'pointercancel']) {{
  canvas.addEventListener(name, () => {{
    if (current === null) return;
    current = null;
    publish();
  }});
}}
element.querySelector('.hm-clear').addEventListener('click', () => {{
  strokes = [];
  redraw();
  publish();
}});
redraw();
"""

CSS = """
.hm-canvas canvas {width: 100%; height: auto; border: 1px solid var(--border-color-primary); border-radius: 8px;
                   background: white; touch-action: none; cursor: crosshair; display: block;}
.hm-canvas .hm-clear {margin-top: 4px; padding: 2px 12px; border: 1px solid var(--border-color-primary);
                      border-radius: 6px; background: var(--button-secondary-background-fill);}
"""


def strokes_from_json(value: Any) -> list[np.ndarray]:
    """The canvas's JSON (a list of strokes, each a list of [x, y] canvas pixels) -> strokes in
    IAM-OnDB sensor units (y down still), resampled every RESAMPLE_STEP units. Raises ValueError
    with one line naming `style_strokes` for anything else, or for strokes that resampling would
    make longer than a style may be (counted before resampling)."""
    expected = "style_strokes must be a JSON list of strokes, each a list of [x, y] points"
    if not isinstance(value, str):
        raise ValueError(f"{expected}, got {value!r:.80}")
    try:
        strokes = json.loads(value)
    except json.JSONDecodeError as error:
        raise ValueError(f"{expected} (not JSON: {error})") from None
    if (not isinstance(strokes, list) or not strokes
            or not all(isinstance(stroke, list) and stroke for stroke in strokes)):
        raise ValueError(f"{expected}, got {value!r:.80}")
    if sum(map(len, strokes)) > MAX_POINTS:
        raise ValueError(f"style_strokes has {sum(map(len, strokes))} points; at most {MAX_POINTS} are taken")
    try:
        arrays = [np.asarray(stroke, dtype=np.float64) for stroke in strokes]
    except (TypeError, ValueError):
        raise ValueError(f"{expected}, got {value!r:.80}") from None
    if any(a.ndim != 2 or a.shape[1] != 2 for a in arrays) or not all(np.isfinite(a).all() for a in arrays):
        raise ValueError(f"{expected} (finite numbers), got {value!r:.80}")
    scaled = [a * PIXEL_SCALE for a in arrays]
    if any(np.abs(a).max() > MAX_COORDINATE for a in scaled):
        raise ValueError(f"style_strokes' coordinates must lie within +-{MAX_COORDINATE / PIXEL_SCALE:,.0f} pixels")
    # what resampling will make of them, counted before it is done: a point every RESAMPLE_STEP and each end
    resampled = sum(int(np.hypot(*np.diff(a, axis=0).T).sum() // RESAMPLE_STEP) + 2 for a in scaled)
    if resampled > MAX_STYLE_POINTS:
        raise ValueError(f"style_strokes would make about {resampled:,} points once resampled every "
                         f"{RESAMPLE_STEP / PIXEL_SCALE:g} pixels; a style takes at most {MAX_STYLE_POINTS:,}")
    # resample_strokes takes (N, 3) points whose third column ends each stroke
    points = np.concatenate([np.column_stack([a, np.arange(len(a)) == len(a) - 1]) for a in scaled])
    return split_strokes(resample_strokes(points, RESAMPLE_STEP))
