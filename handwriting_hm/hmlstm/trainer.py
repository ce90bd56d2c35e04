"""Training loop machinery shared by `handwriting-hm train` and `hm-lm train`.

A trainer describes its task by subclassing `TrainingTask` and hands it, with the model,
to `Trainer`; the loop, checkpoints, resume, non-finite guard, learning-rate schedule,
progress bar, logs and plots are the same for every task:

    seed_everything(seed)                        # before building the model
    model = build_model(...)
    trainer = Trainer(model, task, TrainConfig(lr=1e-3, max_epochs=50), run_dir,
                      kind="lm", model_config=asdict(model_config), metadata={"vocab": ...})
    summary = trainer.fit(resume=args.resume)     # or fit(init_from=path): another run's weights

What the task provides (see `TrainingTask`):
  batches(epoch)       the epoch's batches, the same every time it is called with that epoch
                       (shuffle with a generator seeded from the epoch, never the global RNGs).
                       Batches may be tensors or tuples/lists/dicts/dataclasses of them, on the
                       CPU: the trainer moves them to the device.
  loss(model, batch)   -> (mean loss to backpropagate, number of items for throughput).
                       `model` is the module to call forward on: the DDP wrapper when training
                       on several GPUs, the model itself otherwise. Runs under bf16 autocast
                       when asked for on CUDA.
  validate(model)      -> metrics dict holding `config.metric` (lower is better). Called on the
                       bare model in eval mode under no_grad, in full precision, on rank 0 only.
  on_epoch_start(epoch), scalars(), state_dict(), load_state_dict(state), write_samples(model,
                       path): optional, see the class.
  start_step(device), graph_safe(batch): optional; a task whose loss() may be captured in a CUDA
                       graph says so per batch, and advances its per-step schedules in start_step().
                       On CUDA, one process, with config.cuda_graph, the trainer then replays each
                       step's forward, backward and clipping from one graph (GraphedStep) for
                       batches of the first such batch's shapes; Adam's step stays outside it.

Command line: `add_train_arguments(parser, TrainConfig(...task defaults...))` adds the shared
flags (--lr, --clip, --max-epochs, --max-steps, --max-minutes, --eval-every, --log-every,
--plateau-factor, --plateau-patience, --min-lr, --max-nonfinite, --seed, --device, --bf16,
--cuda-graph, --quiet, --resume); `train_config_from_args(args, defaults)` turns them back into a TrainConfig.
With defaults None a flag left out is absent from `args`, and `defaults` (a preset's, a resumed
run's) fills it in: see `presets.py`, which both trainers use and which adds --init-from.

The run folder holds `latest.pt` (saved at every validation and when training stops),
`best.pt` (lowest `config.metric` so far), `log.jsonl` (one JSON record per line, appended
across resumes: "start", "train" every `log_every` steps, "val" at each validation,
"diverged"), `curves.png` (redrawn at each validation) and `samples/step_XXXXXXXX.png` when
the task writes samples.

Checkpoint keys (all loadable with weights_only=True; built by `checkpoint.checkpoint_payload`):
format, format_version, kind, config (model_config), model, slope (task.slope), metadata, and for
resuming train_config, optimizer, scheduler, progress (step, epoch, position, best_metric, ...),
rng (one entry per rank), task (task.state_dict()). A sampler needs only
`load_checkpoint(path, kind)` and its "config", "model", "slope" and "metadata". To
resume, rebuild the model from `load_checkpoint(run_dir / "latest.pt", kind)["config"]`
(and take the metadata, e.g. the vocabulary, from there too) before creating the Trainer.

Steps, epochs and stopping:
  * A step is one batch; `step` counts steps taken including skipped ones, `position` the
    batches done in the current epoch, `epoch` the completed epochs.
  * Validation runs every `eval_every` steps, or at the end of every epoch when it is None;
    the plateau schedule (lr *= plateau_factor after plateau_patience validations without
    improvement) sees only those. When max_steps or max_epochs ends a run between two
    validations, one last validation updates best.pt and the log but not the schedule, so
    where a run is cut never changes its trajectory.
  * max_minutes stops after the step during which the time ran out, saving latest.pt without
    validating: a time-limited session resumes later from there.
  * `fit(resume=True)` restores model, optimiser, schedule, step/epoch/position (the batches
    of the current epoch already done are skipped), task state and the python/numpy/torch
    RNG states, so N steps + resume + M steps gives the same weights as N+M steps.
    Validation and sample pictures run with the RNG states saved and restored around them,
    so they do not change the training stream. Every field of the new TrainConfig applies:
    limits, intervals, clipping and the plateau schedule's factor, patience and min_lr at
    once; an lr different from the run's saved one replaces the current learning rate (one
    equal to it keeps the rate the schedule has reached). A different seed is refused: the
    random streams continue from the checkpoint, so a new seed could not take effect.
  * `fit(init_from=path)` starts a new run (step 0, a fresh optimiser and schedule) from the
    weights of another checkpoint of the same kind and model config, a run's or an export's.
  * Ctrl-C (SIGINT) or `kill` (SIGTERM, as a scheduler or `docker stop` sends it) stops the run
    after the current step: latest.pt is saved at that step (resumable, written atomically, no
    validation) and fit() returns with stopped "interrupted". A second signal of the same kind
    acts at once, without saving.
  * A step whose loss or gradient norm is not finite is skipped (gradients dropped, weights
    and optimiser untouched) and counted; `max_nonfinite` in a row raise TrainingDiverged
    (a ValueError, so the CLI prints one line). latest.pt stays the last good checkpoint.
  * A validation whose metric is not finite stops the run with a ValueError: the schedule
    and best.pt cannot use it, and it usually means bad validation data (see the task's message).

Several GPUs: launch with `torchrun --nproc_per_node=N ...`. The trainer reads WORLD_SIZE,
RANK and LOCAL_RANK, joins the process group, wraps the model in DistributedDataParallel and
lets only rank 0 validate and write files. Each rank must see its own share of the batches:
use `shard_batches(batches, rank, world_size)` inside `batches()` (or shard the streams
yourself, e.g. by batch row for truncated BPTT), with `distributed_from_env()` giving the
rank. Without those environment variables nothing distributed is touched.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.utils.rnn import PackedSequence
from tqdm import tqdm

from .atomic import atomic_write
from .checkpoint import check_plain, checkpoint_payload, load_checkpoint, save_checkpoint
from .core import HMLSTM, LEARNING_ONLY, impl_choice
from .detectors import silent_detectors
from .device import resolve_device
from .graphed_step import GraphedStep
from .run_lock import locked_run_dir

LATEST = "latest.pt"
GRAPH_DEVICE_TYPES = ("cuda",)  # where the trainer captures steps in graphs (GraphedStep); a test adds "cpu"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # stop after the current step and save latest.pt
BEST = "best.pt"
LOG = "log.jsonl"
CURVES = "curves.png"


class TrainingDiverged(ValueError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class NonFiniteValidation(ValueError):
    """Validation gave a metric that is NaN or infinite."""


@dataclass
class TrainConfig:
    """How to train; the model's own hyperparameters live in the model's config."""

    lr: float = 1e-3
    clip: float | None = 1.0  # max gradient norm; None or 0: no clipping (the norm is still checked)
    max_epochs: int | None = None
    max_steps: int | None = None
    max_minutes: float | None = None  # wall-clock budget of this fit() call
    eval_every: int | None = None  # steps between validations; None: at the end of every epoch
    log_every: int = 50  # steps between "train" log records
    metric: str = "val_loss"  # key of validate()'s dict that decides best.pt and the plateau
    plateau_factor: float = 0.5  # lr *= factor on a plateau (the LM paper's /50 is 0.02)
    plateau_patience: int = 2  # validations without improvement before the drop
    min_lr: float = 0.0
    max_nonfinite: int = 20  # consecutive skipped steps before giving up
    seed: int = 0
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    bf16: bool = False  # bf16 autocast for the training forward; CUDA only, ignored on CPU
    cuda_graph: bool = True  # on CUDA, replay each step's forward, backward and clipping from one CUDA graph
                             # where the task allows it (TrainingTask.graph_safe)
    quiet: bool = False  # no progress bar or progress lines

    def __post_init__(self) -> None:
        if self.max_epochs is None and self.max_steps is None and self.max_minutes is None:
            raise ValueError("set at least one of max_epochs, max_steps, max_minutes, or training never stops")
        positive = {"lr": self.lr, "log_every": self.log_every, "max_nonfinite": self.max_nonfinite}
        optional_positive = {"max_epochs": self.max_epochs, "max_steps": self.max_steps, "eval_every": self.eval_every}
        for name, value in {**positive, **{k: v for k, v in optional_positive.items() if v is not None}}.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.max_minutes is not None and self.max_minutes < 0:
            raise ValueError(f"max_minutes must be >= 0, got {self.max_minutes}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor must be in (0, 1), got {self.plateau_factor}")
        if self.plateau_patience < 0 or self.min_lr < 0:
            raise ValueError("plateau_patience and min_lr must be >= 0")


# TrainConfig fields that both trainers expose as command-line flags (metric is the task's business).
_FLAGS: dict[str, tuple[type, str]] = {
    "lr": (float, "Adam learning rate"),
    "clip": (float, "maximum gradient norm; 0 disables clipping"),
    "max_epochs": (int, "stop after this many epochs"),
    "max_steps": (int, "stop after this many steps (batches)"),
    "max_minutes": (float, "stop cleanly, with a checkpoint, after this many minutes of this session"),
    "eval_every": (int, "validate every this many steps (default: at the end of every epoch)"),
    "log_every": (int, "steps between log records"),
    "plateau_factor": (float, "multiply the learning rate by this when validation stops improving"),
    "plateau_patience": (int, "validations without improvement before the learning rate drops"),
    "min_lr": (float, "never drop the learning rate below this"),
    "max_nonfinite": (int, "give up after this many consecutive steps with a NaN/inf loss or gradient"),
    "seed": (int, "random seed"),
    "device": (str, "auto, cpu, cuda or cuda:N"),
    "bf16": (bool, "bf16 autocast on CUDA (ignored on the CPU)"),
    "cuda_graph": (bool, "replay each training step from a CUDA graph where the task allows it (CUDA only)"),
    "quiet": (bool, "no progress bar or progress lines"),
}


def add_train_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig | None,
                        unset_help: str = "from the preset") -> None:
    """Add the shared training flags (--lr, --max-steps, ..., --resume), defaulting to `defaults`;
    with None, a flag left out is absent from the parsed namespace and its help says `unset_help`."""
    group = parser.add_argument_group("training")
    for name, (kind, help_text) in _FLAGS.items():
        flag = "--" + name.replace("_", "-")
        default = argparse.SUPPRESS if defaults is None else getattr(defaults, name)
        shown = unset_help if defaults is None else default
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                               help=f"{help_text} (default: {shown})")
        else:
            group.add_argument(flag, type=kind, default=default, help=f"{help_text} (default: {shown})")
    group.add_argument("--resume", action="store_true", help="continue the run folder's latest.pt exactly where it stopped")


def train_config_from_args(args: argparse.Namespace, defaults: TrainConfig) -> TrainConfig:
    """The TrainConfig that `add_train_arguments`' flags describe. A flag absent from `args` or left
    at None, and every other field, takes its value from `defaults` (a preset's or a resumed run's)."""
    given = {name: getattr(args, name) for name in _FLAGS if getattr(args, name, None) is not None}
    return dataclasses.replace(defaults, **given)


class TrainingTask:
    """What a trainer implements for its model and data; the defaults suit a stateless task."""

    slope: float = 1.0  # the boundary slope the model trains at now; every checkpoint records it

    def batches(self, epoch: int) -> Iterable[Any]:
        """The batches of `epoch`, identical on every call with the same epoch."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, int | torch.Tensor]:
        """Mean loss of `batch` to backpropagate, and how many items (points, characters) it covers."""
        raise NotImplementedError

    def start_step(self, device: torch.device) -> None:
        """Called before each step's loss(), never inside a CUDA graph: advance per-step schedules here
        (e.g. the slope) and write what loss() reads of them into tensors on `device`."""

    def graph_safe(self, batch: Any) -> bool:
        """Whether loss(model, batch) may be captured in a CUDA graph and replayed for later batches of
        the same shapes. A replay runs loss()'s kernels, not its Python, so loss() must then read
        everything that changes between steps from the batch or from tensors that start_step()
        refills, change no Python state, wait for no device value (.item(), bool(tensor)) and count
        its items as a tensor."""
        return False

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        """Validation metrics; must include the trainer's `metric` key (lower is better)."""
        raise NotImplementedError

    def on_epoch_start(self, epoch: int) -> None:
        """Called before the first batch of each epoch (not again when resuming mid-epoch)."""

    def scalars(self) -> dict[str, float]:
        """Extra numbers for the "train" log records, e.g. the boundary slope."""
        return {}

    def state_dict(self) -> dict:
        """Task state to checkpoint (tensors and primitives), e.g. the slope or a carried hidden state."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""

    def write_samples(self, model: torch.nn.Module, path: Path) -> None:
        """Optionally write a PNG of a few samples to `path`; called at each validation."""


@dataclass(frozen=True)
class Distributed:
    """Where this process sits in a `torchrun` launch (rank 0 of 1 otherwise)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_from_env() -> Distributed:
    """Read the variables `torchrun` sets; absent variables mean a single process."""
    return Distributed(
        rank=int(os.environ.get("RANK", 0)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
    )


def shard_batches(batches: Iterable[Any], rank: int, world_size: int) -> Iterator[Any]:
    """Deal batches round-robin to ranks, dropping a last incomplete round.

    Every rank gets the same number of batches, which DDP needs: a rank that runs out early
    would leave the others waiting in the gradient all-reduce forever.
    """
    round_of_batches: list[Any] = []
    for batch in batches:
        round_of_batches.append(batch)
        if len(round_of_batches) == world_size:
            yield round_of_batches[rank]
            round_of_batches = []


def share_lines(groups: Iterable[list[int]], rank: int, world_size: int) -> Iterator[tuple[list[int], list[int]]]:
    """(this rank's share, the whole group) of each group of lines, for training lines in chunks.

    A line's chunks must follow each other in one process (the carried state runs through them),
    so the processes share each group's lines instead of being dealt whole groups; a group with
    fewer lines than processes is left out, as some process would have none of it.
    """
    for group in groups:
        if len(group) >= world_size:
            yield group[rank::world_size], group


def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng_state() -> dict:
    """The global RNG states as tensors, lists and primitives (weights_only-loadable)."""
    version, keys, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": [version, list(keys), gauss],
        "numpy": {
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Undo `capture_rng_state`; CUDA states are restored when CUDA is here to take them."""
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    numpy_state = state["numpy"]
    np.random.set_state((
        "MT19937",
        numpy_state["keys"].numpy().astype(np.uint32),
        numpy_state["pos"],
        numpy_state["has_gauss"],
        numpy_state["cached_gaussian"],
    ))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Run a block (validation, sampling) without moving the global RNG streams."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


def move_to(batch: Any, device: torch.device) -> Any:
    """Move the tensors in a (nested tuple/list/dict/dataclass) batch to `device`."""
    return _map_tensors(batch, lambda t: t.to(device, non_blocking=True))


def tensors_of(batch: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) batch, in the order `with_tensors` puts them back."""
    found: list[torch.Tensor] = []
    _map_tensors(batch, lambda t: found.append(t) or t)
    return found


def with_tensors(batch: Any, tensors: Sequence[torch.Tensor]) -> Any:
    """`batch` with its tensors replaced, in `tensors_of` order, by `tensors` (e.g. a graph's static copies)."""
    replacements = iter(tensors)
    return _map_tensors(batch, lambda _: next(replacements))


def _map_tensors(batch: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(batch, (torch.Tensor, PackedSequence)):  # a PackedSequence moves whole: batch_sizes stays on the CPU
        return fn(batch)
    if isinstance(batch, dict):
        return {key: _map_tensors(value, fn) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)) and not hasattr(batch, "_fields"):
        return type(batch)(_map_tensors(value, fn) for value in batch)
    if isinstance(batch, tuple):  # namedtuple
        return type(batch)(*(_map_tensors(value, fn) for value in batch))
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        return dataclasses.replace(
            batch, **{field.name: _map_tensors(getattr(batch, field.name), fn) for field in dataclasses.fields(batch)})
    return batch


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def append_log(log_path: Path, record: dict) -> None:
    """Append one JSON record as a line and flush it, so a crash loses at most that line."""
    line = json.dumps({key: _json_safe(value) for key, value in record.items()}, allow_nan=False)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


def read_log(log_path: str | Path) -> list[dict]:
    """The records of a log.jsonl; a torn last line (crash mid-write) is ignored."""
    records = []
    for line in Path(log_path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def plot_learning_curves(log_path: str | Path, png_path: str | Path, metric: str = "val_loss") -> None:
    """Draw train loss, validation `metric` and the learning rate against steps from a log.jsonl.

    When a run was resumed, steps logged after its checkpoint appear twice in the log;
    the latest record of each step wins.
    """
    # Figure without pyplot: no global backend state, safe to call from any thread.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    train: dict[int, dict] = {}
    val: dict[int, dict] = {}
    for record in read_log(log_path):
        if record.get("type") == "train":
            train[record["step"]] = record
        elif record.get("type") == "val":
            val[record["step"]] = record

    detectors = sorted({int(key[1:-5]) for record in val.values() for key in record
                        if key.startswith("z") and key.endswith("_rate")})
    figure = Figure(figsize=(9, 8 if detectors else 6))
    figure.subplots_adjust(left=0.09, right=0.98, top=0.97, bottom=0.08, hspace=0.08)
    FigureCanvasAgg(figure)
    axes = figure.subplots(3 if detectors else 2, 1, sharex=True, height_ratios=[3, 1, 1.5] if detectors else [3, 1])
    losses, rates = axes[0], axes[1]
    train_points = [(step, r["loss"]) for step, r in sorted(train.items()) if r.get("loss") is not None]
    val_points = [(step, r[metric]) for step, r in sorted(val.items()) if r.get(metric) is not None]
    if train_points:
        losses.plot(*zip(*train_points), label="train loss", linewidth=1)
    if val_points:
        losses.plot(*zip(*val_points), "o-", label=metric, markersize=3)
    losses.set_ylabel("loss")
    losses.grid(alpha=0.3)
    if train_points or val_points:
        losses.legend()
    rate_points = [(step, r["lr"]) for step, r in sorted(train.items()) if r.get("lr")]
    if rate_points:
        rates.plot(*zip(*rate_points), color="tab:green", drawstyle="steps-post")
        rates.set_yscale("log")
    rates.set_ylabel("learning rate")
    rates.grid(alpha=0.3)
    if detectors:  # the detectors' health: firing rate (solid) and share in the straight-through window (dashed)
        health = axes[2]
        for l in detectors:
            for key, style in ((f"z{l}_rate", "-"), (f"z{l}_window", "--")):
                points = [(step, r[key]) for step, r in sorted(val.items()) if r.get(key) is not None]
                if points:
                    health.plot(*zip(*points), style, marker="o", markersize=2, color=f"C{l - 1}",
                                label=f"z{l} {'rate' if key.endswith('rate') else 'in window'}")
        health.set_ylim(-0.02, 1.02)
        health.set_ylabel("detectors")
        health.legend(fontsize=7, ncol=2)
        health.grid(alpha=0.3)
    axes[-1].set_xlabel("step")

    with atomic_write(png_path) as file:
        figure.savefig(file, format="png", dpi=100)


class Trainer:
    """Train `model` on `task`, keeping checkpoints and logs in `run_dir`.

    `kind` ("handwriting", "lm") and `model_config` (a plain dict from which the model can be
    rebuilt) go into every checkpoint, with `metadata` (plain data the sampler needs, e.g. the
    normalisation statistics or the vocabulary). On resume the checkpoint's `config` must
    equal `model_config`: read it first with `load_checkpoint(run_dir / "latest.pt", kind)`
    to rebuild the same model.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        task: TrainingTask,
        config: TrainConfig,
        run_dir: str | Path,
        kind: str,
        model_config: dict,
        metadata: dict | None = None,
    ) -> None:
        self.task = task
        self.config = config
        self.run_dir = Path(run_dir)
        self.kind = kind
        self.model_config = model_config
        self.metadata = metadata or {}
        # Fail now, not at the first checkpoint an hour into training.
        check_plain(model_config, "model_config")
        check_plain(self.metadata, "metadata")
        self.dist = distributed_from_env()
        self._owns_process_group = False
        self.device = resolve_device(config.device, self.dist.local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self.model = model.to(self.device)
        self.forward_module: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
                self._owns_process_group = True
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_module = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        self.bf16 = config.bf16 and self.device.type == "cuda"
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=config.plateau_factor, patience=config.plateau_patience, min_lr=config.min_lr
        )
        self.step = 0
        self.epoch = 0
        self.position = 0
        self.best_metric = math.inf
        self.best_step: int | None = None
        self.skipped_nonfinite = 0
        self.consecutive_nonfinite = 0
        self.elapsed_before = 0.0  # training seconds of earlier fit() calls on this run
        self.last_validated_step: int | None = None
        self._graph: GraphedStep | None = None  # the captured training step (_graphed_step)
        self._validations: list[dict] = []  # this fit()'s validation metrics, to notice silent detectors
        self._said_silent: set[int] = set()
        self._graph_reported = False

    # ---- the run -------------------------------------------------------------------------

    def fit(self, resume: bool = False, init_from: str | Path | None = None) -> dict:
        """Train until a limit in the config is reached, or Ctrl-C; return a summary of the run.

        resume=True continues from `run_dir/latest.pt`; otherwise a run folder that already
        holds one is refused, so a finished run is never overwritten by accident. `init_from`
        starts the new run from that checkpoint's weights (same kind and model config). The run folder is
        locked meanwhile (run_lock.py): a second trainer there is refused.
        """
        with locked_run_dir(self.run_dir, take=self.dist.is_main):
            return self._fit(resume, init_from)

    def _fit(self, resume: bool, init_from: str | Path | None) -> dict:
        latest = self.run_dir / LATEST
        if resume and init_from is not None:
            raise ValueError("--resume continues a run and --init-from starts a new one: give one of them")
        if resume:
            self._restore(load_checkpoint(latest, kind=self.kind, resumable=True))
        elif latest.exists():
            raise ValueError(f"{latest} already exists: resume that run or choose another run folder")
        else:
            if init_from is not None:
                self._load_weights(Path(init_from))
            seed_everything(self.config.seed + self.dist.rank)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            path = self._core_path()
            if path is not None and self.model.core.impl == "auto":  # say what it picked and why, even with --quiet
                print(f"core: {path[1]}", file=sys.stderr)
            self._log({
                "type": "start", "resumed": resume, "step": self.step, "epoch": self.epoch,
                "device": str(self.device), "world_size": self.dist.world_size, "bf16": self.bf16,
                **({"init_from": str(init_from)} if init_from is not None else {}),
                **({"core_path": path[0]} if path is not None else {}),
            })
        self._started = time.monotonic()
        self._reset_interval()
        show_bar = self.dist.is_main and not self.config.quiet and sys.stderr.isatty()
        self._bar = tqdm(total=self.config.max_steps, initial=self.step, unit="step", dynamic_ncols=True, disable=not show_bar)
        self._print_lines = self.dist.is_main and not self.config.quiet and not show_bar
        try:
            with self._stop_on_interrupt():
                stopped = self._run()
        finally:
            self._bar.close()
            if self._owns_process_group:
                dist.destroy_process_group()
        return {
            "stopped": stopped,
            "steps": self.step,
            "epochs": self.epoch,
            "best_metric": self.best_metric,
            "best_step": self.best_step,
            "skipped_nonfinite": self.skipped_nonfinite,
            "wall_s": time.monotonic() - self._started,
        }

    def _core_path(self) -> tuple[str, str] | None:
        """(path, why) of the model's HM-LSTM core (`core.impl_choice`), or None if it has none."""
        core = getattr(self.model, "core", None)
        if not isinstance(core, HMLSTM):
            return None
        return impl_choice(core.impl, self.device, core.boundary_mode, core.copy_gradient, core.reference_only,
                           core.c_loop_only)

    @contextlib.contextmanager
    def _stop_on_interrupt(self) -> Iterator[None]:
        """Turn the first Ctrl-C or SIGTERM into a request to stop after the current step, so that
        the step, the optimiser and the checkpoint written for it are whole; the handler then steps
        aside, and a second signal of that kind acts at once (KeyboardInterrupt, or termination).
        Signals reach only the main thread, and a process told to ignore one (SIGINT in a background
        job, nohup) keeps ignoring it."""
        self._interrupted = False
        on_main_thread = threading.current_thread() is threading.main_thread()
        previous = {number: signal.getsignal(number) for number in STOP_SIGNALS} if on_main_thread else {}
        handled = {number: handler for number, handler in previous.items() if handler not in (None, signal.SIG_IGN)}

        def request_stop(signum, frame) -> None:
            self._interrupted = True
            signal.signal(signum, handled[signum])

        for number in handled:
            signal.signal(number, request_stop)
        try:
            yield
        finally:
            for number, handler in handled.items():
                signal.signal(number, handler)

    def _run(self) -> str:
        while (stopped := self._limit_reached()) is None:
            stopped = self._run_epoch()
            if stopped is not None:
                break
        if self.last_validated_step != self.step:  # a validation already saved this step
            if stopped in ("max_minutes", "interrupted"):  # the user is waiting: save, do not validate
                self._save_checkpoints(improved=False)
            else:
                self._validate(scheduled=False)
        return stopped

    def _run_epoch(self) -> str | None:
        """Train on the rest of the current epoch; return why training stopped, if it did."""
        if self.position == 0:
            self.task.on_epoch_start(self.epoch)
        started_at = self.position
        for batch in itertools.islice(self.task.batches(self.epoch), self.position, None):
            self._train_step(batch)
            if self.step % self.config.log_every == 0:
                self._log_train()
            if self.config.eval_every is not None and self.step % self.config.eval_every == 0:
                self._validate(scheduled=True)
            if (stopped := self._limit_reached()) is not None:
                return stopped
        if started_at == 0 and self.position == 0:
            raise ValueError(f"the training data gave no batches in epoch {self.epoch}")
        self.epoch += 1
        self.position = 0
        if self.config.eval_every is None:
            self._validate(scheduled=True)
        return None

    def _limit_reached(self) -> str | None:
        config = self.config
        if config.max_steps is not None and self.step >= config.max_steps:
            return "max_steps"
        if config.max_epochs is not None and self.epoch >= config.max_epochs:
            return "max_epochs"
        out_of_time = config.max_minutes is not None and time.monotonic() - self._started >= 60 * config.max_minutes
        interrupted = self._interrupted
        if self.dist.world_size > 1:  # clocks and signals differ: all ranks must stop at the same step
            flags = torch.tensor([float(out_of_time), float(interrupted)], device=self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            out_of_time, interrupted = bool(flags[0].item()), bool(flags[1].item())
        if interrupted:
            return "interrupted"
        if out_of_time:
            return "max_minutes"
        return None

    # ---- one step ------------------------------------------------------------------------

    def _train_step(self, batch: Any) -> None:
        self.model.train()
        self.task.start_step(self.device)
        batch = move_to(batch, self.device)
        graphed = self._graphed_step(batch)
        if graphed is None:
            loss, items, finite = self._loss_and_gradients(batch)
        else:
            loss, items, finite = graphed(*tensors_of(batch))
            self._report_graph(graphed)
        if self.dist.world_size > 1:  # one rank's bad loss skips the step everywhere
            finite = finite.float()
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if bool(finite.item()):
            self.optimizer.step()
            self.consecutive_nonfinite = 0
            self._interval_loss += loss.item()
            self._interval_good += 1
        else:
            self.skipped_nonfinite += 1
            self.consecutive_nonfinite += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.position += 1
        self._interval_items += int(items)
        self._bar.update(1)
        if self.consecutive_nonfinite >= self.config.max_nonfinite:
            latest = self.run_dir / LATEST
            saved = f"the last good checkpoint is {latest}" if latest.exists() else "no checkpoint was written yet"
            message = (
                f"training diverged: {self.consecutive_nonfinite} consecutive steps had a non-finite loss or "
                f"gradient (step {self.step}); {saved}"
            )
            if self.dist.is_main:
                self._log({"type": "diverged", "step": self.step, "epoch": self.epoch,
                           "skipped_nonfinite": self.skipped_nonfinite, "message": message})
            raise TrainingDiverged(message)

    def _loss_and_gradients(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward, backward and clipping: everything of a step before the optimizer's, which waits for
        `finite`. Returns (loss, items, finite) as tensors. What a CUDA graph captures and replays."""
        # autocast's weight cache would hold casts made at capture: a replay must cast afresh
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16,
                            cache_enabled=self._graph is None):
            loss, items = self.task.loss(self.forward_module, batch)
        # Backward even a non-finite loss: under DDP every rank must join the gradient all-reduce.
        loss.backward()
        max_norm = self.config.clip if self.config.clip else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        finite = torch.isfinite(loss.detach().float()) & torch.isfinite(grad_norm)
        return loss.detach(), torch.as_tensor(items), finite

    def _graphed_step(self, batch: Any) -> GraphedStep | None:
        """The CUDA-graph step for this batch, or None for the eager step: on CUDA, one process, with
        config.cuda_graph, for batches the task calls graph-safe. The graph is captured for the first
        such batch's shapes; batches of other shapes run eagerly (GraphedStep)."""
        if not (self.config.cuda_graph and self.device.type in GRAPH_DEVICE_TYPES and self.task.graph_safe(batch)):
            return None
        if self.dist.world_size > 1:
            if not self._graph_reported:
                self._graph_reported = True
                self._say_graph("running eagerly: not captured under DDP (its all-reduce hooks)")
            return None
        if self._graph is None:
            template = batch
            self._graph = GraphedStep(lambda *tensors: self._loss_and_gradients(with_tensors(template, tensors)),
                                      self.model.parameters(), tensors_of(batch))
        return self._graph

    def _report_graph(self, graphed: GraphedStep) -> None:
        """Once, after the first graph-safe step: say whether the step was captured. The capture's warm-up
        passes ran the task's loss too: drop what they added to the task's logged scalars."""
        if self._graph_reported or not graphed.tried:
            return
        self._graph_reported = True
        if graphed.graph is not None:
            self.task.scalars()
            shapes = ", ".join("x".join(map(str, shape)) for shape, _, _ in graphed.signature)
            self._say_graph(f"captured: batches of shapes {shapes} replay from one CUDA graph, others run eagerly")
        else:
            self._say_graph(f"running eagerly: {graphed.reason}")

    def _say_graph(self, message: str) -> None:
        if self.dist.is_main:
            print(f"cuda graph: {message}", file=sys.stderr, flush=True)
            self._log({"type": "cuda_graph", "step": self.step, "message": message})

    def _reset_interval(self) -> None:
        self._interval_start = time.monotonic()
        self._interval_steps_from = self.step
        self._interval_loss = 0.0
        self._interval_good = 0
        self._interval_items = 0

    def _lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def _log_train(self) -> None:
        seconds = max(time.monotonic() - self._interval_start, 1e-9)
        steps = self.step - self._interval_steps_from
        loss = self._interval_loss / self._interval_good if self._interval_good else math.nan
        record = {
            "type": "train", "step": self.step, "epoch": self.epoch, "loss": loss, "lr": self._lr(),
            **{name: float(value) for name, value in self.task.scalars().items()},
            "steps_per_s": steps / seconds, "items_per_s": self._interval_items / seconds,
            "skipped_nonfinite": self.skipped_nonfinite, "elapsed_s": self._elapsed(),
        }
        self._bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self._lr():.2e}", refresh=False)
        if self._print_lines:
            print(
                f"step {self.step} epoch {self.epoch} loss {loss:.4f} lr {self._lr():.2e} "
                f"{record['steps_per_s']:.2f} steps/s skipped {self.skipped_nonfinite}",
                file=sys.stderr, flush=True,
            )
        if self.dist.is_main:
            self._log(record)
        self._reset_interval()

    # ---- validation and checkpoints -------------------------------------------------------

    def _validate(self, scheduled: bool) -> None:
        """Validate, feed the plateau schedule (if `scheduled`), save checkpoints, redraw plots."""
        validate_started = time.monotonic()
        metrics = None
        if self.dist.is_main:
            with preserved_rng(), torch.no_grad():
                self.model.eval()
                metrics = {name: float(value) for name, value in self.task.validate(self.model).items()}
                self.model.train()
        if self.dist.world_size > 1:  # every rank must take the same schedule decision
            shared = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        if self.config.metric not in metrics:
            raise ValueError(f"validate() returned {sorted(metrics)}, without the tracked metric {self.config.metric!r}")
        value = metrics[self.config.metric]
        if not math.isfinite(value):  # would halve the rate at every validation and never write best.pt
            latest = self.run_dir / LATEST
            saved = f"the last checkpoint is {latest}" if latest.exists() else "no checkpoint was written yet"
            message = f"validation at step {self.step} gave {self.config.metric} = {value}; {saved}"
            if self.dist.is_main:
                self._log({"type": "invalid_validation", "step": self.step, "epoch": self.epoch, "message": message})
            raise NonFiniteValidation(message)
        if scheduled:
            self.scheduler.step(value)
        improved = value < self.best_metric
        if improved:
            self.best_metric, self.best_step = value, self.step
        self.last_validated_step = self.step
        self._save_checkpoints(improved)
        if self.dist.is_main:
            self._log({
                "type": "val", "step": self.step, "epoch": self.epoch, **metrics, "lr": self._lr(),
                "best_metric": self.best_metric, "scheduled": scheduled, "elapsed_s": self._elapsed(),
            })
            self._say_silent_detectors(metrics)
            if type(self.task).write_samples is not TrainingTask.write_samples:
                samples = self.run_dir / "samples" / f"step_{self.step:08d}.png"
                samples.parent.mkdir(exist_ok=True)
                with preserved_rng(), torch.no_grad():
                    self.model.eval()
                    self.task.write_samples(self.model, samples)
                    self.model.train()
            plot_learning_curves(self.run_dir / LOG, self.run_dir / CURVES, self.config.metric)
        # Time spent validating is not training time: keep it out of steps/s.
        self._interval_start += time.monotonic() - validate_started

    def _say_silent_detectors(self, metrics: dict[str, float]) -> None:
        """One line, once, for each detector that has not fired in two validations in a row."""
        self._validations.append(metrics)
        silent = silent_detectors(self._validations)
        for l in silent:
            if l not in self._said_silent:
                message = f"layer {l}'s detector has stopped firing at step {self.step}"
                print(message, file=sys.stderr, flush=True)
                self._log({"type": "detector", "step": self.step, "detector": l, "message": message})
        self._said_silent = set(silent)

    def _elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._started

    def _save_checkpoints(self, improved: bool) -> None:
        rng = [capture_rng_state()]
        if self.dist.world_size > 1:  # each rank keeps its own dropout stream across a resume
            rng = [None] * self.dist.world_size
            dist.all_gather_object(rng, capture_rng_state())
        if not self.dist.is_main:
            return
        payload = checkpoint_payload(
            self.kind, self.model_config, self.model.state_dict(), self.task.slope, self.metadata,
            train_config=asdict(self.config),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            progress={
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "best_metric": self.best_metric,
                "best_step": self.best_step,
                "skipped_nonfinite": self.skipped_nonfinite,
                "consecutive_nonfinite": self.consecutive_nonfinite,
                "last_validated_step": self.last_validated_step,
                "elapsed_s": self._elapsed(),
            },
            rng=rng,
            task=self.task.state_dict(),
        )
        save_checkpoint(self.run_dir / LATEST, payload)
        if improved:
            save_checkpoint(self.run_dir / BEST, payload)

    def _check_model_config(self, checkpoint: dict, path: Path, use: str) -> None:
        """Every setting the checkpoint saved must equal this run's (when starting from its weights, not
        resuming it, one of core.LEARNING_ONLY may differ). A setting it lacks was added to the config
        since it was written: the client read the checkpoint with StoredConfig.from_dict, which gives
        such a setting its default, so that run's own command still resumes it."""
        saved = checkpoint["config"]
        free = LEARNING_ONLY if use == "start from" else ()
        differing = sorted(key for key in saved if saved[key] != self.model_config.get(key) and key not in free)
        if differing:
            raise ValueError(f"cannot {use} {path}: its model config differs in {', '.join(differing)}")

    def _load_weights(self, path: Path) -> None:
        """Start from another checkpoint's weights (an export's may be half precision)."""
        checkpoint = load_checkpoint(path, kind=self.kind)
        self._check_model_config(checkpoint, path, "start from")
        try:
            self.model.load_state_dict({name: value.float() if value.is_floating_point() else value
                                        for name, value in checkpoint["model"].items()})
        except RuntimeError:  # torch's message lists every tensor, over many lines
            raise ValueError(f"cannot start from {path}: its weights do not fit its model config") from None

    def _restore(self, checkpoint: dict) -> None:
        self._check_model_config(checkpoint, self.run_dir / LATEST, "resume")
        saved = checkpoint["train_config"]
        if self.config.seed != saved["seed"]:
            raise ValueError(f"cannot resume {self.run_dir / LATEST} with seed {self.config.seed}: the run's random "
                             f"streams continue from the checkpoint (seed {saved['seed']}); leave --seed out")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self._apply_schedule_settings(saved)
        self.task.load_state_dict(checkpoint["task"])
        progress = checkpoint["progress"]
        self.step = progress["step"]
        self.epoch = progress["epoch"]
        self.position = progress["position"]
        self.best_metric = progress["best_metric"]
        self.best_step = progress["best_step"]
        self.skipped_nonfinite = progress["skipped_nonfinite"]
        self.consecutive_nonfinite = progress["consecutive_nonfinite"]
        self.last_validated_step = progress["last_validated_step"]
        self.elapsed_before = progress["elapsed_s"]
        rng = checkpoint["rng"]
        if self.dist.rank < len(rng):
            restore_rng_state(rng[self.dist.rank])
        else:  # more ranks than when saved: a fresh, distinct stream for the new ones
            seed_everything(self.config.seed + self.dist.rank + self.step)

    def _apply_schedule_settings(self, saved: dict) -> None:
        """Make the learning-rate settings of this config hold, not the ones the restored optimiser
        and schedule were saved with (the other fields are read from the config at each use)."""
        if self.config.lr != saved["lr"]:  # an equal lr keeps the rate the schedule has reached
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.lr
        self.scheduler.factor = self.config.plateau_factor
        self.scheduler.patience = self.config.plateau_patience
        self.scheduler.default_min_lr = self.config.min_lr
        self.scheduler.min_lrs = [self.config.min_lr] * len(self.optimizer.param_groups)

    def _log(self, record: dict) -> None:
        append_log(self.run_dir / LOG, record)
