"""The `handwriting-hm` command: one subcommand per module.

Each subcommand lives in its own module, which defines `add_arguments(parser)` and
`run(args) -> int`. Modules are imported only when their subcommand runs, so that
`handwriting-hm --help` stays instant.
"""
from __future__ import annotations

import sys

from handwriting_hm.hmlstm.cli import run_cli

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("data_prep.prepare", "Prepare IAM-OnDB: lineStrokes + ascii archives -> one training-ready .npz"),
    "summary": ("data_prep.summary", "Summarise a prepared IAM-OnDB file: counts, lengths, alphabet, a PNG of lines"),
    "train": ("handwriting_hm.train", "Train the handwriting model (presets paper-hm, paper-hm-anneal, paper-lstm, tiny) "
              "or the text-conditioned one (preset synthesis)"),
    "evaluate": ("handwriting_hm.evaluate", "Average log-likelihood per test sequence (paper Table 3), per point, 95% CI"),
    "export": ("handwriting_hm.export", "Checkpoint -> compact half-precision inference model (as shipped by default)"),
    "sample": ("handwriting_hm.unconditional.sample_command", "Generate handwriting with a trained model; write SVG, PNG or JSON with boundary overlays"),
    "write": ("handwriting_hm.synthesis.write_command", "Write a given text with a synthesis model: SVG for pen plotters, PNG or "
              "JSON; multi-line layout; --boundaries draws z1 and z2 against the letters"),
    "boundaries": ("handwriting_hm.unconditional.boundaries_command", "Draw where each layer's detector fires on real "
                   "lines, against the pen-up strokes (the paper's Figure 5), and count the firings at pen-ups"),
    "letters": ("handwriting_hm.synthesis.letters", "Over a set of texts: the share of z1 firings at character ends "
                "and of z2 firings at word ends, against chance"),
    "legibility": ("handwriting_hm.synthesis.legibility", "Character error rate of real and written lines, read by Tesseract"),
    "app": ("app.cli", "Serve the Gradio page: generate handwriting and see the HM-LSTM's boundaries (127.0.0.1 by default)"),
    "compare": ("handwriting_hm.hmlstm.training.compare", "A table of training runs from their logs: best validation "
                "log-likelihood, where the detectors fire against the pen-ups, speed"),
    "bench": ("handwriting_hm.bench_command", "Benchmark the HM-LSTM training paths against nn.LSTM, and the sampler"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `handwriting-hm`."""
    return run_cli("handwriting-hm", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
