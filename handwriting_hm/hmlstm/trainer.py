"""The training loop shared by `handwriting-hm train` and `hm-lm train`: a task (TrainingTask) and a model go
in; checkpoints, exact resume, the non-finite guard, the learning-rate schedule, progress, logs and curves come
out, the same for every task. docs/training.md ("The training loop") is its manual.

    seed_everything(seed)                        # before building the model
    model = build_model(...)
    trainer = Trainer(model, task, TrainConfig(lr=1e-3, max_epochs=50), run_dir,
                      kind="lm", model_config=asdict(model_config), metadata={"vocab": ...})
    summary = trainer.fit(resume=args.resume)     # or fit(init_from=path): another run's weights

The loop's parts live in `training/` (config and flags, the task protocol, distributed sharding, the random
streams, batches, the run log and curves); this module re-exports their names, which clients import from here.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from tqdm import tqdm

from .checkpoint import check_plain, checkpoint_payload, load_checkpoint, save_checkpoint
from .core import HMLSTM, LEARNING_ONLY, impl_choice
from .detectors import silent_detectors
from .device import resolve_device
from .graphed_step import GraphedStep
from .run_lock import locked_run_dir
from .training.batches import move_to, tensors_of, with_tensors
from .training.config import TrainConfig, add_train_arguments, train_config_from_args
from .training.distributed import Distributed, distributed_from_env, shard_batches, share_lines
from .training.rng import capture_rng_state, preserved_rng, restore_rng_state, seed_everything
from .training.run_log import CURVES, LOG, append_log, plot_learning_curves, read_log
from .training.task import TrainingTask

__all__ = ["BEST", "CURVES", "GRAPH_DEVICE_TYPES", "LATEST", "LOG", "Distributed", "NonFiniteValidation",
           "TrainConfig", "Trainer", "TrainingDiverged", "TrainingTask", "add_train_arguments", "append_log",
           "capture_rng_state", "distributed_from_env", "move_to", "plot_learning_curves", "preserved_rng",
           "read_log", "restore_rng_state", "seed_everything", "shard_batches", "share_lines", "tensors_of",
           "train_config_from_args", "with_tensors"]

LATEST = "latest.pt"
# The device types whose steps the trainer captures in graphs (GraphedStep): CUDA only. The tests act a capture
# out on the CPU by adding "cpu" here.
GRAPH_DEVICE_TYPES = ("cuda",)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # stop after the current step and save latest.pt
BEST = "best.pt"


class TrainingDiverged(ValueError):
    """Too many consecutive steps with a non-finite loss or gradient."""


class NonFiniteValidation(ValueError):
    """Validation gave a metric that is NaN or infinite."""


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
        self.metric_regime: str | None = None  # the task's metric_regime() at the last validation
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
        return impl_choice(core.impl, self.device, core.boundary_mode, core.copy_gradient, core.c_loop_only)

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
        regime = self.task.metric_regime()
        if self.metric_regime is not None and regime != self.metric_regime:
            self._compare_afresh(regime)
        self.metric_regime = regime
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

    def _compare_afresh(self, regime: str) -> None:
        """Validation measures something else from now on: forget the best value and the plateau's count."""
        self.best_metric, self.best_step = math.inf, None
        self.scheduler.best = self.scheduler.mode_worse
        self.scheduler.num_bad_epochs = self.scheduler.cooldown_counter = 0
        if self.dist.is_main:
            message = (f"validation measures {regime or 'the usual metric'} from step {self.step} on: best.pt and the "
                       f"plateau schedule start again")
            print(message, file=sys.stderr, flush=True)
            self._log({"type": "regime", "step": self.step, "regime": regime, "message": message})

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
                "metric_regime": self.metric_regime,
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
        self.metric_regime = progress.get("metric_regime")  # absent from checkpoints written before it was kept
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
