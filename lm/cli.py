"""The `hm-lm` command: character-level language modelling with the HM-LSTM (paper §4.1).

Subcommands live in their own modules (`add_arguments(parser)`, `run(args) -> int`) and are
imported only when they run; user errors print as one line with exit code 2 (`run_cli`).
"""
from __future__ import annotations

import sys

from handwriting_hm.hmlstm.cli import run_cli

COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("lm.prepare", "Prepare PTB (char), text8 or enwik8 from local files or a verified download -> .npz"),
    "train": ("lm.train", "Train a character-level HM-LSTM or LSTM with the paper's presets (truncated BPTT)"),
    "evaluate": ("lm.evaluate", "Bits per character over a whole split, the state carried across it"),
    "boundaries": ("lm.boundaries", "Draw where each layer's boundary detector fires on a text (PNG) and count updates"),
    "export": ("lm.export", "Write an inference-only (half-precision) copy of a checkpoint"),
    "compare": ("handwriting_hm.hmlstm.training.compare", "A table of training runs from their logs: best validation BPC, boundary figures, speed"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `hm-lm`."""
    return run_cli("hm-lm", COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
