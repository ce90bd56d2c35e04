"""`hm-lm train`: the paper's character-level language models (§4.1) on the shared Trainer.

Settings and flags work as for `handwriting-hm train` (`handwriting_hm/hmlstm/presets.py`): a flag
left out takes the preset's value; on --resume every setting is the run's own (max_epochs and
min_lr included, whatever --preset says), training flags override it and model and data flags
may only repeat it; --init-from CHECKPOINT starts a new run from another run's (or an exported
model's) weights, with that model's config and a fresh optimiser, on data of the same vocabulary.

The presets and settings are config.py's and the task task.py's; this module, the command, loads torch only
once it runs, so that --help answers at once.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from handwriting_hm.hmlstm.presets import Flag, add_preset_arguments
from handwriting_hm.hmlstm.recipe_settings import DETECTOR_FLAGS, RECIPE_FLAGS
from handwriting_hm.hmlstm.settings import SLOPE_PRESETS

# the presets and settings, re-exported: clients import them here
from .config import BPTT, MAX_DROPS, PLATEAU_FACTOR, PLATEAU_PATIENCE, PRESETS, TaskSettings

__all__ = ["BPTT", "DEFAULT_PRESET", "FLAGS", "MAX_DROPS", "PLATEAU_FACTOR", "PLATEAU_PATIENCE", "PRESETS",
           "TaskSettings", "add_arguments", "run"]


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes like 512,512,512, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return sizes


FLAGS = (
    Flag("model", "cell", {"choices": ("hm-lstm", "lstm")}),
    Flag("model", "hidden_sizes", {"type": _sizes, "help": "units per layer, e.g. 512,512,512"}),
    Flag("model", "embedding_size", {"type": int, "help": "output embedding size"}),
    Flag("model", "boundary_mode", {"choices": ("step", "bernoulli", "soft")}),
    Flag("model", "layer_norm", {"action": argparse.BooleanOptionalAction}),
    Flag("task", "batch_size", {"type": int}),
    Flag("task", "bptt", {"type": int, "help": "steps per window"}),
    Flag("task", "slope_schedule", {"choices": tuple(SLOPE_PRESETS)}),
    Flag("task", "train_symbols", {"type": int, "help": "train on the first N symbols only (a slice, for CPU runs)"}),
    Flag("task", "valid_symbols", {"type": int, "help": "validate on the first N symbols only"}),
    Flag("task", "val_rows", {"type": int, "help": "rows read side by side in validation"}),
    *DETECTOR_FLAGS,
    *RECIPE_FLAGS,
    Flag("task", "oracle_steps", {"type": int, "help": "force layer 1's boundaries to the word separators for this "
                                                       "many steps (the oracle run)"}),
)
DEFAULT_PRESET = "ptb"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="prepared .npz from `hm-lm prepare`")
    parser.add_argument("--run-dir", required=True, help="folder for checkpoints, log.jsonl and curves.png")
    add_preset_arguments(parser, PRESETS, DEFAULT_PRESET, FLAGS)


def run(args: argparse.Namespace) -> int:
    # imported here, not above, so that --help answers at once
    import numpy as np

    from handwriting_hm.hmlstm.run_start import start_from_args
    from handwriting_hm.hmlstm.trainer import LATEST, Trainer, seed_everything

    from .model import KIND, LanguageModel
    from .prepared_text import load_prepared_text
    from .task import LanguageModelTask

    run_dir = Path(args.run_dir)
    data = load_prepared_text(args.data)
    start = start_from_args(args, PRESETS, DEFAULT_PRESET, FLAGS, KIND, build=LanguageModel)
    config, settings, train_config = start.settings.model, start.settings.task, start.settings.train
    if not args.resume and hasattr(args, "lr") and not hasattr(args, "min_lr"):
        # the presets' rule for a new run: the rate drops at most MAX_DROPS times from where it starts
        train_config = dataclasses.replace(train_config, min_lr=train_config.lr * PLATEAU_FACTOR ** MAX_DROPS)
    if start.checkpoint is None:
        config = dataclasses.replace(config, vocab_size=len(data.vocab))
    elif start.checkpoint["metadata"]["vocab"] != data.vocab:
        source = run_dir / LATEST if args.resume else args.init_from
        raise ValueError(f"{args.data}: its vocabulary differs from the one {source} was trained on")
    task = LanguageModelTask(data.splits["train"], data.splits["valid"], settings, vocab=data.vocab)
    seed_everything(train_config.seed)
    model = LanguageModel(config, impl=args.impl)
    trainer = Trainer(model, task, train_config, run_dir, kind=KIND, model_config=config.to_dict(),
                      metadata={"dataset": data.metadata["dataset"], "vocab": data.vocab,
                                "task": settings.to_dict(), "preset": start.preset,
                                "data_sha256": data.metadata["sources_sha256"]})
    summary = trainer.fit(resume=args.resume, init_from=args.init_from)
    if summary["stopped"] == "interrupted":
        print(f"hm-lm: interrupted at step {summary['steps']}; saved {run_dir / LATEST}: continue with --resume",
              file=sys.stderr)
        return 130
    print(f"stopped ({summary['stopped']}) after {summary['steps']} steps, {summary['epochs']} epochs, "
          f"{summary['wall_s']:.0f} s; best val_loss {summary['best_metric']:.4f} nats "
          f"({summary['best_metric'] / np.log(2.0):.4f} BPC) at step {summary['best_step']}; run folder {run_dir}")
    return 0
