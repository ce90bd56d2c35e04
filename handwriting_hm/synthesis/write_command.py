"""`handwriting-hm write`: the command line of synthesis/write.py. It imports no torch until it runs, so that
`--help` answers at once."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..shipped import DEFAULT_SYNTHESIS_MODEL
from .write_limits import ALIGNMENTS, MAX_CHARACTERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="what to write; a newline (or a typed \\n) starts a new line")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help=f"a synthesis model (a run's best.pt, or exported; default: the shipped model, "
                             f"{DEFAULT_SYNTHESIS_MODEL.name})")
    parser.add_argument("--out", required=True, type=Path,
                        help=".svg (one single-stroke path per pen-down stroke, no fill: for pen plotters), "
                             ".png, or .json (the raw strokes, the text, and per point the attended character)")
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--style", metavar="LINE_ID", help="write in the hand of this IAM-OnDB line (needs --data)")
    style.add_argument("--style-file", type=Path, help="write in the hand of these strokes: a .json or .inkml file")
    parser.add_argument("--data", type=Path, help="prepared IAM-OnDB file holding the --style line")
    parser.add_argument("--style-text", help="the text of the --style-file strokes, where the file does not say it")
    parser.add_argument("--bias", type=float, default=0.0, help="Graves's sampling bias, 0 = none (default 0)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same drawing")
    parser.add_argument("--width", type=int, default=None,
                        help="wrap lines at word boundaries to at most this many CHARACTERS (default: no wrapping)")
    parser.add_argument("--line-spacing", type=float, default=1.5,
                        help="distance between lines, in heights of the tallest line's ink (default 1.5)")
    parser.add_argument("--align", choices=ALIGNMENTS, default="left", help="line alignment (default left)")
    parser.add_argument("--straighten", action="store_true", help="level each line's baseline (for drifting models)")
    parser.add_argument("--boundaries", action="store_true",
                        help="draw where the boundaries fall on the letters instead (.svg/.png): the ink coloured "
                             "by the attended character, its label below, z1 and z2 firings, word ends")


def run(args: argparse.Namespace) -> int:
    from ..hmlstm.atomic import atomic_write
    from ..drawing.png import render_letters_png, render_png
    from ..drawing.records import SAVE_FORMATS
    from ..drawing.style import INK_HEIGHT
    from ..drawing.svg import render_letters_svg, render_plotter_svg
    from .model import load_synthesis_model
    from .styles import style_from_file, style_from_line
    from .write import (check_synthesis_checkpoint, fired_markers, installed_synthesis_model, page_document,
                        primed_points, write_lines)

    suffix = args.out.suffix.lower()
    if suffix not in SAVE_FORMATS:
        raise ValueError(f"--out {args.out}: the extension must be one of {', '.join(SAVE_FORMATS)}")
    if args.boundaries and suffix == ".json":
        raise ValueError("--boundaries draws a picture: give --out a .svg or .png (the JSON always holds them)")
    if args.style is not None and args.data is None:
        raise ValueError("--style LINE_ID needs --data, the prepared IAM-OnDB file that holds the line")
    style = (style_from_line(args.data, args.style) if args.style is not None else
             style_from_file(args.style_file, args.style_text) if args.style_file is not None else None)
    text = args.text.replace("\\n", "\n")
    characters = len(text.replace("\n", ""))
    if characters > MAX_CHARACTERS:
        raise ValueError(f"the text has {characters:,} characters; `write` takes at most {MAX_CHARACTERS} (newlines "
                         f"aside): write a longer text in parts")
    loaded = load_synthesis_model(check_synthesis_checkpoint(args.checkpoint or installed_synthesis_model()))
    parameters = {"bias": args.bias, "temperature": args.temperature, "seed": args.seed, "width": args.width,
                  "line_spacing": args.line_spacing, "align": args.align, "straighten": args.straighten,
                  "style": args.style or (str(args.style_file) if args.style_file else None)}
    page = write_lines(text, loaded, style=style, bias=args.bias, temperature=args.temperature,
                       seed=args.seed, width=args.width, line_spacing=args.line_spacing, align=args.align,
                       straighten=args.straighten)
    written = [line for line in page.lines if line is not None]
    ink_height = INK_HEIGHT * len(page.lines)  # about INK_HEIGHT pixels a line
    if suffix == ".json":
        data = json.dumps(page_document(text, page, parameters), allow_nan=False).encode("utf-8")
    elif suffix == ".svg":
        svg = render_letters_svg(written) if args.boundaries else render_plotter_svg(page.offsets, ink_height)
        data = svg.encode("utf-8")
    else:
        data = render_letters_png(written) if args.boundaries else render_png(page.offsets, ink_height=ink_height)
    with atomic_write(args.out) as file:
        file.write(data)
    print(f"{args.out}: {len(written)} line(s), {sum(len(line.offsets) for line in written)} points")
    if args.boundaries:
        print(fired_markers(page.boundaries))
    if style is not None and min(line.primed for line in written) < len(style[0]):
        print(f"the style's {len(style[0])} points carry more ink than its text {style[1]!r} says: the model was "
              f"primed with its last {primed_points(written)} points only (give the text the strokes say)")
    for number, line in enumerate(written, start=1):
        if not len(line.offsets):
            print(f"line {number} ({line.text!r}): no points written, the window was past the text before the "
                  f"first point")
        elif not line.finished:
            print(f"line {number} ({line.text!r}) stopped at the step cap before the window passed its text")
    return 0
