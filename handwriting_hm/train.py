"""`handwriting-hm train`: fit the handwriting model on a prepared IAM-OnDB file (paper §4.2).

    handwriting-hm train --preset paper-hm-anneal --data iam.npz --run-dir runs/hm-anneal
    handwriting-hm train --preset tiny --data iam.npz --run-dir runs/tiny --max-steps 200
    handwriting-hm train --data iam.npz --run-dir runs/hm-anneal --resume
    handwriting-hm train --preset tiny --data iam.npz --run-dir runs/warm --init-from handwriting_hm/models/handwriting-default.pt
    handwriting-hm train --preset synthesis --data iam.npz --run-dir runs/synthesis

The `synthesis` preset trains the text-conditioned model of `synthesis/model.py` instead (see
`synthesis/task.py`): the same trainer and the same --resume and --init-from rules, with the flags
that are settings of that model and task (a handwriting-only flag such as --cell is refused in one
line). --resume and --init-from find out from the checkpoint's kind which of the two models a run trains
(kinds.py).

A preset fixes the model (HandwritingConfig), how batches are made and the slope schedule
(TaskSettings, `unconditional/config.py`), and the optimisation (TrainConfig of the shared trainer,
`hmlstm/trainer.py`, which owns the loop, checkpoints, exact resume, the NaN guard, Ctrl-C, logs,
curves and torchrun support). Every field can be overridden from the command line (`hmlstm/presets.py`). On --resume
every setting comes from the run's checkpoint, not from a preset: training flags override it
(a new --lr replaces the current learning rate, --min-lr and --plateau-* change the schedule),
model and data flags may only repeat it. --init-from CHECKPOINT starts a new run, at step 0 with
a fresh optimiser, from the weights of another run's checkpoint or of an exported model (the
shipped one, say): the model config is that file's, the data must be normalised as it was, the
rest comes from the preset and the flags.

Loss: the mean negative log-likelihood per valid point (nats), i.e. the mixture-density
log-likelihood with its end-of-stroke term, in the normalised offset space. Validation reports
it as `val_loss` (it decides best.pt and the plateau) together with the paper's metric, the
log-likelihood per sequence (`val_ll_per_sequence`, see `scoring.py`). The presets and the slope
schedule are `unconditional/config.py`'s, the task `unconditional/task.py`'s. The parser is built from
the config modules, which load no torch, so that --help answers at once.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

# the settings, presets and flags only, which load no torch: the training imports it inside the functions that run
from handwriting_hm.hmlstm.presets import Flag, add_preset_arguments
from handwriting_hm.hmlstm.recipe_settings import DETECTOR_FLAGS, RECIPE_FLAGS
from handwriting_hm.hmlstm.settings import BOUNDARY_MODES
from handwriting_hm.kinds import Family, family_of, family_of_preset
from handwriting_hm.synthesis import config as synthesis
from handwriting_hm.unconditional.config import KIND, LAYER1_BOUNDARIES, PRESETS


# ----------------------------------------------------------------------------- command line

def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 400,400,400, got {text!r}")


def _all_or_count(text: str) -> int | None:
    value = int(text)
    return None if value == 0 else value


FLAGS = (
    Flag("model", "cell", {"choices": ("hm-lstm", "lstm")}),
    Flag("model", "hidden_sizes", {"type": _sizes, "help": "units per layer, e.g. 400,400,400"}),
    Flag("model", "embedding_size", {"type": int}),
    Flag("model", "n_mixtures", {"type": int}),
    Flag("model", "layer_norm", {"action": argparse.BooleanOptionalAction}),
    Flag("model", "boundary_mode", {"choices": BOUNDARY_MODES}),
    *DETECTOR_FLAGS,
    Flag("model", "layer1_boundaries", {"choices": LAYER1_BOUNDARIES,
                                        "help": "learned (the paper's), or pen-ups: z1 is the pen-up bit of the "
                                                "point read, given, and only z2 and above are learned"}),
    Flag("task", "scheme", {"help": "split scheme of the prepared file: paper, official or graves"}),
    Flag("task", "batch_size", {"type": int}),
    Flag("task", "crop_points", {"type": _all_or_count, "help": "train on random windows of N points (0: whole lines)"}),
    Flag("task", "chunk_points", {"type": _all_or_count, "help": "train whole lines in consecutive chunks of N "
                                  "points, one step each, the state carried (0: no chunks)"}),
    Flag("task", "validation_lines", {"type": _all_or_count, "help": "validate on N lines (0: all)"}),
    Flag("task", "slope_rate", {"type": float, "help": "a = min(slope_max, 1 + rate * step / slope_unit_steps)"}),
    Flag("task", "slope_max", {"type": float}),
    Flag("task", "slope_unit_steps", {"type": int, "help": "optimiser steps per unit N of the slope schedule"}),
    Flag("task", "sample_points", {"type": int, "help": "length of the sample pictures"}),
    *RECIPE_FLAGS,
    Flag("task", "oracle_steps", {"type": int, "help": "force layer 1's boundaries to the pen-ups (the points read "
                                                       "that end a stroke) for this many steps, then free them "
                                                       "(the oracle run)"}),
)
N_WINDOW = Flag("model", "n_window", {"type": int, "help": "synthesis: K Gaussians in the attention window"})
SYNTHESIS_ONLY = (N_WINDOW,)
# the flags that are settings of the synthesis model or its task; the others are the handwriting model's only
SYNTHESIS_FIELDS = {field.name for config in (synthesis.SynthesisConfig, synthesis.SynthesisTaskSettings)
                    for field in fields(config)}
SYNTHESIS_FLAGS = tuple(flag for flag in FLAGS if flag.name in SYNTHESIS_FIELDS) + SYNTHESIS_ONLY
DEFAULT_PRESET = "paper-hm-anneal"
# the --impl values the synthesis model takes (SynthesisModel.impl), and why auto picks what it picks
SYNTHESIS_IMPLS = ("reference", "sparse", "auto")
SYNTHESIS_AUTO_REASON = ("on the CPU the sparse step, which skips the rows that COPY, while z1 fires at under 20% of "
                         "the points (where it is the faster; see `python -m handwriting_hm.bench`), else the "
                         "torch.compile'd step; on a GPU, or with --copy-gradient mixed "
                         "(which the sparse step cannot give), the compiled step")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = parser.description or "Train the handwriting model"
    parser.add_argument("--data", required=True, type=Path, help="prepared file from `handwriting-hm prepare`")
    parser.add_argument("--run-dir", required=True, type=Path, help="folder for checkpoints, log, curves, samples")
    add_preset_arguments(parser, {**PRESETS, **synthesis.PRESETS}, DEFAULT_PRESET, FLAGS + SYNTHESIS_ONLY)


def run(args: argparse.Namespace) -> int:
    return trained_family(args).train(args)


def trained_family(args: argparse.Namespace) -> Family:
    """The model family the run trains (kinds.py): the --preset's, else that of the --resume or --init-from
    checkpoint (read once more here, only for its kind: a small cost next to a training run), else the default
    preset's."""
    from handwriting_hm.hmlstm.trainer import LATEST

    if args.preset is None:
        source = args.run_dir / LATEST if args.resume else args.init_from
        if source is not None and Path(source).is_file():
            return family_of(source)
    return family_of_preset(args.preset or DEFAULT_PRESET)


def refuse_flags(args: argparse.Namespace, flags: tuple[Flag, ...], what: str) -> None:
    """One line naming the given `flags`, which are no settings of `what`: a flag is never ignored silently."""
    given = [flag.option for flag in flags if hasattr(args, flag.name)]
    if given:
        raise ValueError(f"{', '.join(given)}: not a setting of {what}; leave it out")


def run_synthesis(args: argparse.Namespace) -> int:
    """`train` for the synthesis model: the same preset rules (`hmlstm/presets.py`), `synthesis.task`'s run."""
    from handwriting_hm.hmlstm.run_start import start_from_args
    from handwriting_hm.synthesis.model import SynthesisModel
    from handwriting_hm.synthesis.task import train_synthesis

    if args.impl not in SYNTHESIS_IMPLS:
        raise ValueError(f"--impl {args.impl}: the synthesis model runs its own loop of steps (its window sits "
                         "between layer 1 and layer 2 inside every step): give reference, sparse (skip the rows "
                         "that COPY) or auto")
    if args.impl == "auto":
        print(f"handwriting-hm: --impl auto for the synthesis model: {SYNTHESIS_AUTO_REASON}", file=sys.stderr)
    refuse_flags(args, tuple(flag for flag in FLAGS if flag not in SYNTHESIS_FLAGS), "the synthesis model")
    start = start_from_args(args, synthesis.PRESETS, synthesis.PRESET_NAME, SYNTHESIS_FLAGS, synthesis.KIND,
                            build=SynthesisModel)
    summary = train_synthesis(args.data, args.run_dir, synthesis.SynthesisPreset.from_preset(start.settings),
                              resume=args.resume, init_from=args.init_from, impl=args.impl)
    return report(summary, start.preset, args.run_dir)


def run_handwriting(args: argparse.Namespace) -> int:
    import numpy as np

    from data_prep.dataset import HandwritingDataset  # CLI glue: the model code never imports data_prep
    from handwriting_hm.hmlstm.run_start import start_from_args
    from handwriting_hm.hmlstm.trainer import LATEST, Trainer, seed_everything
    from handwriting_hm.scoring import line_word_starts
    from handwriting_hm.unconditional.evaluate import check_same_statistics
    from handwriting_hm.unconditional.model import HandwritingModel, read_stats
    from handwriting_hm.unconditional.task import HandwritingTask

    refuse_flags(args, SYNTHESIS_ONLY, "the handwriting model")
    start = start_from_args(args, PRESETS, DEFAULT_PRESET, FLAGS, KIND, build=HandwritingModel)
    model_config, settings, train_config = start.settings.model, start.settings.task, start.settings.train
    if settings.oracle_steps and model_config.cell != "hm-lstm":
        raise ValueError("--oracle-steps forces layer 1's boundaries, which an LSTM has not: leave it out")
    if settings.oracle_steps and model_config.pen_up_clock:
        raise ValueError("--oracle-steps forces layer 1's boundaries to the pen-ups, which --layer1-boundaries "
                         "pen-ups does at every step: give one of them")
    learned = len(model_config.hidden_sizes) - 1 - int(model_config.pen_up_clock)
    if settings.rate_targets and model_config.cell == "hm-lstm" and len(settings.rate_targets) != learned:
        raise ValueError(f"--rate-targets gives {len(settings.rate_targets)} rates for {learned} learned detectors"
                         + (" (z1 is the pen-ups': give the rates of z2 and above)" if model_config.pen_up_clock else ""))

    train_set = HandwritingDataset(args.data, split="train", scheme=settings.scheme)
    validation_set = HandwritingDataset(args.data, split="validation", scheme=settings.scheme)
    stats = {"mean": [float(v) for v in train_set.stats["mean"]], "std": [float(v) for v in train_set.stats["std"]]}
    if start.checkpoint is not None:  # the weights mean something only on data normalised as they were trained
        check_same_statistics(start.checkpoint["metadata"]["stats"], stats,
                              args.run_dir / LATEST if args.resume else args.init_from)
    count = len(validation_set) if settings.validation_lines is None else min(settings.validation_lines, len(validation_set))
    chosen = np.linspace(0, len(validation_set) - 1, count).round().astype(int)  # spread over the split
    validation_items = [validation_set[int(i)] for i in chosen]  # (offsets, text) of each line
    validation_lines = [line for line, _ in validation_items]
    validation_ids = [validation_set.line_ids[int(i)] for i in chosen]
    validation_word_starts = [line_word_starts(line, text, read_stats(stats)) for line, text in validation_items]

    seed_everything(train_config.seed)  # the model's initial weights
    model = HandwritingModel(model_config, impl=args.impl)
    task = HandwritingTask(settings, train_set, validation_lines, stats, train_config.seed, validation_ids,
                           validation_word_starts)
    metadata = {"stats": stats, "preset": start.preset, "task": settings.to_dict(), "scheme": settings.scheme,
                "data": str(args.data)}
    trainer = Trainer(model, task, train_config, args.run_dir, kind=KIND, model_config=model_config.to_dict(),
                      metadata=metadata)
    summary = trainer.fit(resume=args.resume, init_from=args.init_from)
    return report(summary, start.preset, args.run_dir)


def report(summary: dict, preset: str, run_dir: Path) -> int:
    """One line on how the run ended (from the main process only); the exit code."""
    from handwriting_hm.hmlstm.trainer import LATEST, distributed_from_env

    if not distributed_from_env().is_main:
        return 0
    if summary["stopped"] == "interrupted":
        print(f"handwriting-hm: interrupted at step {summary['steps']}; saved {run_dir / LATEST}: continue with "
              f"--resume", file=sys.stderr)
        return 130
    print(f"{preset}: stopped ({summary['stopped']}) after {summary['steps']} steps, {summary['epochs']} "
          f"epochs, {summary['wall_s']:.0f} s; best val_loss {summary['best_metric']:.4f} nats/point "
          f"at step {summary['best_step']}; run folder {run_dir}")
    return 0
