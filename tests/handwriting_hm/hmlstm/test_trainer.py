"""Tests of the shared training machinery: checkpoints, exact resume, guards, schedule, logs."""
from __future__ import annotations

import argparse
import dataclasses
import os
import math
import random
import signal
import socket
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from handwriting_hm.hmlstm.checkpoint import FORMAT, FORMAT_VERSION, load_checkpoint, save_checkpoint
from handwriting_hm.hmlstm.trainer import (
    NonFiniteValidation,
    TrainConfig,
    Trainer,
    TrainingDiverged,
    TrainingTask,
    add_train_arguments,
    move_to,
    read_log,
    seed_everything,
    shard_batches,
    train_config_from_args,
)

MODEL_CONFIG = {"inputs": 4, "hidden": 16, "dropout": 0.3}


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Linear(MODEL_CONFIG["inputs"], MODEL_CONFIG["hidden"]),
        torch.nn.Dropout(MODEL_CONFIG["dropout"]),
        torch.nn.Tanh(),
        torch.nn.Linear(MODEL_CONFIG["hidden"], 1),
    )


class ToyTask(TrainingTask):
    """Regression on 40 fixed points, 5 batches an epoch, every RNG in play.

    Batches are shuffled with a per-epoch seed; dropout draws from torch's RNG; the input
    noise from python's and numpy's. Validation and sampling draw from all three too, which
    must not change training. `slope` and `seen` stand for task state (slope, carried state).
    """

    def __init__(self, bad_steps: dict[int, str] | None = None, metrics: list[float] | None = None):
        generator = torch.Generator().manual_seed(123)
        self.x = torch.randn(40, 4, generator=generator)
        self.y = torch.randn(40, 1, generator=generator)
        self.slope = 1.0
        self.seen = 0
        self.bad_steps = bad_steps or {}  # step number (1-based) -> "nan" | "inf_grad"
        self.metrics = list(metrics) if metrics else None  # scripted validation values
        self.params_before_step: dict[int, list[torch.Tensor]] = {}
        self.sample_paths: list[Path] = []

    def batches(self, epoch):
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(1000 + epoch))
        for start in range(0, len(order), 8):
            index = order[start:start + 8]
            yield self.x[index], self.y[index]

    def on_epoch_start(self, epoch):
        self.slope = 1.0 + 0.5 * epoch

    def loss(self, model, batch):
        x, y = batch
        self.seen += 1
        self.params_before_step[self.seen] = [p.detach().clone() for p in model.parameters()]
        noise = random.random() + float(np.random.rand())
        prediction = model(x + 0.01 * noise) * self.slope
        loss = F.mse_loss(prediction, y)
        bad = self.bad_steps.get(self.seen)
        if bad == "nan":
            loss = loss * float("nan")
        elif bad == "inf_grad":  # finite loss (sqrt(0) = 0), infinite derivative
            loss = loss + torch.sqrt(prediction.sum() * 0)
        return loss, len(x)

    def validate(self, model):
        torch.rand(3), random.random(), np.random.rand()
        if self.metrics is not None:
            return {"val_loss": self.metrics.pop(0)}
        loss = F.mse_loss(model(self.x), self.y).item()
        # Rising with the step count, so that the plateau schedule drops the rate in short runs.
        return {"val_loss": loss + self.seen, "val_other": 1.0}

    def scalars(self):
        return {"slope": self.slope}

    def state_dict(self):
        return {"slope": self.slope, "seen": self.seen}

    def load_state_dict(self, state):
        self.slope, self.seen = state["slope"], state["seen"]

    def write_samples(self, model, path):
        torch.rand(5)
        Path(path).write_bytes(b"\x89PNG\r\n\x1a\n")
        self.sample_paths.append(Path(path))


def config(**overrides) -> TrainConfig:
    settings = dict(lr=0.05, max_steps=13, eval_every=3, log_every=2, plateau_factor=0.5,
                    plateau_patience=0, quiet=True, device="cpu")
    settings.update(overrides)
    return TrainConfig(**settings)


def make_trainer(run_dir: Path, task: ToyTask | None = None, **overrides) -> Trainer:
    seed_everything(0)
    return Trainer(make_model(), task or ToyTask(), config(**overrides), run_dir, kind="toy",
                   model_config=dict(MODEL_CONFIG), metadata={"mean": [0.5, 1.5]})


# ---- exact resume --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("eval_every", [3, None])
@pytest.mark.parametrize("first_steps", [7, 10])  # mid-epoch, and exactly at the end of epoch 2
def test_resume_gives_bit_identical_weights(tmp_path, eval_every, first_steps):
    straight = make_trainer(tmp_path / "straight", eval_every=eval_every)
    straight.fit()
    straight_rng = torch.get_rng_state()
    assert straight.optimizer.param_groups[0]["lr"] < 0.05, "the schedule should have acted"

    first = make_trainer(tmp_path / "split", eval_every=eval_every, max_steps=first_steps)
    assert first.fit()["steps"] == first_steps
    resumed = make_trainer(tmp_path / "split", eval_every=eval_every)
    summary = resumed.fit(resume=True)

    assert summary["steps"] == 13 and resumed.epoch == straight.epoch and resumed.position == straight.position
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(straight.optimizer.state.values(), resumed.optimizer.state.values()):
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert straight.scheduler.state_dict() == resumed.scheduler.state_dict()
    assert straight.task.state_dict() == resumed.task.state_dict()
    assert torch.equal(torch.get_rng_state(), straight_rng)


def test_resume_appends_to_log_and_restores_metadata(tmp_path):
    make_trainer(tmp_path, max_steps=6).fit()
    before = (tmp_path / "log.jsonl").read_text().splitlines()
    make_trainer(tmp_path, max_steps=10).fit(resume=True)
    after = (tmp_path / "log.jsonl").read_text().splitlines()
    assert after[:len(before)] == before and len(after) > len(before)
    starts = [r for r in read_log(tmp_path / "log.jsonl") if r["type"] == "start"]
    assert [r["resumed"] for r in starts] == [False, True] and starts[1]["step"] == 6
    latest = load_checkpoint(tmp_path / "latest.pt", kind="toy")
    assert latest["progress"]["step"] == 10 and latest["metadata"] == {"mean": [0.5, 1.5]}


def test_fresh_fit_refuses_existing_run_and_resume_needs_one(tmp_path):
    make_trainer(tmp_path, max_steps=2).fit()
    with pytest.raises(ValueError, match="already exists"):
        make_trainer(tmp_path).fit()
    with pytest.raises(ValueError, match="no such file"):
        make_trainer(tmp_path / "empty").fit(resume=True)
    seed_everything(0)
    other = Trainer(make_model(), ToyTask(), config(), tmp_path, kind="toy",
                    model_config={**MODEL_CONFIG, "hidden": 32})
    with pytest.raises(ValueError, match="differs in hidden"):
        other.fit(resume=True)


def test_wall_clock_limit_stops_with_a_checkpoint_and_no_validation(tmp_path):
    summary = make_trainer(tmp_path, max_steps=None, max_minutes=0.0).fit()
    assert summary["stopped"] == "max_minutes"
    assert load_checkpoint(tmp_path / "latest.pt")["progress"]["step"] == summary["steps"]
    assert not [r for r in read_log(tmp_path / "log.jsonl") if r["type"] == "val"]


# ---- non-finite guard ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["nan", "inf_grad"])
def test_nonfinite_step_is_skipped_and_counted(tmp_path, bad):
    task = ToyTask(bad_steps={3: bad})
    summary = make_trainer(tmp_path, task, max_steps=6).fit()
    assert summary["skipped_nonfinite"] == 1 and summary["steps"] == 6
    untouched = zip(task.params_before_step[3], task.params_before_step[4])
    assert all(torch.equal(a, b) for a, b in untouched)
    moved = zip(task.params_before_step[2], task.params_before_step[3])
    assert not all(torch.equal(a, b) for a, b in moved)
    train_records = [r for r in read_log(tmp_path / "log.jsonl") if r["type"] == "train"]
    assert [r["skipped_nonfinite"] for r in train_records] == [0, 1, 1]


def test_consecutive_nonfinite_steps_stop_training(tmp_path):
    task = ToyTask(bad_steps={step: "nan" for step in range(1, 100)})
    trainer = make_trainer(tmp_path, task, max_nonfinite=4)
    initial = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(TrainingDiverged, match="4 consecutive steps") as raised:
        trainer.fit()
    assert isinstance(raised.value, ValueError) and "\n" not in str(raised.value)
    assert all(torch.equal(a, b) for a, b in zip(initial, trainer.model.parameters()))
    assert not trainer.optimizer.state  # Adam never stepped
    assert read_log(tmp_path / "log.jsonl")[-1]["type"] == "diverged"


def test_divergence_names_latest_pt_only_when_one_was_written(tmp_path):
    never = ToyTask(bad_steps={step: "nan" for step in range(1, 100)})
    with pytest.raises(TrainingDiverged) as raised:
        make_trainer(tmp_path / "fresh", never, max_nonfinite=2).fit()  # before the first validation, at step 3
    assert "no checkpoint was written yet" in str(raised.value) and "latest.pt" not in str(raised.value)
    assert not (tmp_path / "fresh" / "latest.pt").exists()
    later = ToyTask(bad_steps={step: "nan" for step in range(4, 100)})  # validation at step 3 saves latest.pt
    with pytest.raises(TrainingDiverged, match=r"the last good checkpoint is .*latest\.pt"):
        make_trainer(tmp_path / "later", later, max_nonfinite=2).fit()
    assert load_checkpoint(tmp_path / "later" / "latest.pt")["progress"]["step"] == 3


def test_a_non_finite_validation_stops_the_run_in_one_line(tmp_path):
    # Before: the plateau schedule cut the rate at every validation, best.pt was never written
    # and fit() returned normally.
    task = ToyTask(metrics=[1.0, math.nan, 0.5])
    trainer = make_trainer(tmp_path, task, max_steps=9, eval_every=3)
    with pytest.raises(NonFiniteValidation) as raised:
        trainer.fit()
    message = str(raised.value)
    assert isinstance(raised.value, ValueError) and "\n" not in message
    assert "step 6" in message and "val_loss = nan" in message and "latest.pt" in message
    assert trainer.optimizer.param_groups[0]["lr"] == 0.05  # the NaN never reached the schedule
    assert load_checkpoint(tmp_path / "latest.pt")["progress"]["step"] == 3  # the last good one stays
    assert read_log(tmp_path / "log.jsonl")[-1]["type"] == "invalid_validation"


# ---- Ctrl-C ---------------------------------------------------------------------------------


class InterruptedToyTask(ToyTask):
    """Ctrl-C arrives while step `at` is computed (the signal itself, as a terminal sends it)."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def loss(self, model, batch):
        if self.seen + 1 == self.at:
            signal.raise_signal(signal.SIGINT)
        return super().loss(model, batch)


@pytest.mark.usefixtures("ctrl_c_as_in_a_terminal")
def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path):
    straight = make_trainer(tmp_path / "straight")
    straight.fit()
    interrupted = make_trainer(tmp_path / "split", InterruptedToyTask(at=5))
    summary = interrupted.fit()
    # Before: KeyboardInterrupt escaped fit() and latest.pt held step 3, the last validation.
    assert summary["stopped"] == "interrupted" and summary["steps"] == 5  # the step under way was finished
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is put back
    assert load_checkpoint(tmp_path / "split" / "latest.pt")["progress"]["step"] == 5
    assert [r["step"] for r in read_log(tmp_path / "split" / "log.jsonl") if r["type"] == "val"] == [3]
    resumed = make_trainer(tmp_path / "split")
    assert resumed.fit(resume=True)["steps"] == 13
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_sigterm_stops_after_the_step_and_saves_like_ctrl_c(tmp_path):
    """`kill PID` (a scheduler, `docker stop`): before, the process died and lost every step since
    the last validation."""
    class Terminated(ToyTask):
        def loss(self, model, batch):
            if self.seen + 1 == 5:
                signal.raise_signal(signal.SIGTERM)
            return super().loss(model, batch)

    def terminate(signum, frame):  # stands in for the default action, which would end pytest too
        raise SystemExit("terminated")

    inherited = signal.signal(signal.SIGTERM, terminate)
    try:
        summary = make_trainer(tmp_path / "run", Terminated()).fit()
        assert signal.getsignal(signal.SIGTERM) is terminate  # the handler is put back
    finally:
        signal.signal(signal.SIGTERM, inherited)
    assert summary["stopped"] == "interrupted" and summary["steps"] == 5
    assert load_checkpoint(tmp_path / "run" / "latest.pt")["progress"]["step"] == 5


@pytest.mark.usefixtures("ctrl_c_as_in_a_terminal")
def test_a_second_ctrl_c_interrupts_at_once(tmp_path):
    class TwiceInterrupted(ToyTask):
        def loss(self, model, batch):
            if self.seen == 1:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
            return super().loss(model, batch)

    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, TwiceInterrupted()).fit()
    assert not (tmp_path / "latest.pt").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_ctrl_c_stays_ignored(tmp_path):
    """A run started with SIGINT ignored (nohup, a background job) is not made interruptible."""
    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        summary = make_trainer(tmp_path, InterruptedToyTask(at=5)).fit()
        assert summary["stopped"] != "interrupted" and summary["steps"] == 13
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


# ---- resume settings and starting from other weights ---------------------------------------------


def test_resume_applies_new_learning_rate_settings_and_records_them(tmp_path):
    make_trainer(tmp_path, max_steps=6).fit()
    resumed = make_trainer(tmp_path, max_steps=6, lr=0.01, min_lr=0.001, plateau_patience=5, plateau_factor=0.2)
    resumed.fit(resume=True)  # the step limit is already reached: nothing trains
    # Before: the optimiser and the schedule kept the saved lr 0.05, patience 0, factor 0.5, min_lr 0.
    assert resumed.optimizer.param_groups[0]["lr"] == 0.01
    assert (resumed.scheduler.patience, resumed.scheduler.factor, resumed.scheduler.min_lrs) == (5, 0.2, [0.001])
    make_trainer(tmp_path, max_steps=7, lr=0.01, min_lr=0.001, plateau_patience=5, plateau_factor=0.2).fit(resume=True)
    saved = load_checkpoint(tmp_path / "latest.pt")
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.01
    assert (saved["scheduler"]["patience"], saved["scheduler"]["factor"], saved["scheduler"]["min_lrs"]) == (5, 0.2, [0.001])
    assert (saved["train_config"]["lr"], saved["train_config"]["min_lr"]) == (0.01, 0.001)


def test_resume_with_the_saved_lr_keeps_the_rate_the_schedule_reached(tmp_path):
    make_trainer(tmp_path, ToyTask(metrics=[1.0, 1.0]), max_steps=6).fit()  # patience 0: the rate halves once
    assert load_checkpoint(tmp_path / "latest.pt")["optimizer"]["param_groups"][0]["lr"] == 0.025
    resumed = make_trainer(tmp_path, max_steps=6)  # lr 0.05, as saved
    resumed.fit(resume=True)
    assert resumed.optimizer.param_groups[0]["lr"] == 0.025


def test_resume_refuses_an_exported_model_in_one_line(tmp_path):
    from handwriting_hm.hmlstm.checkpoint import export_checkpoint

    make_trainer(tmp_path / "run", max_steps=3).fit()
    export_checkpoint(tmp_path / "run" / "latest.pt", tmp_path / "exported" / "latest.pt", "toy")
    with pytest.raises(ValueError, match="exported model .* cannot be resumed.*--init-from"):  # before: KeyError
        make_trainer(tmp_path / "exported").fit(resume=True)


def test_resume_refuses_a_new_seed(tmp_path):
    make_trainer(tmp_path, max_steps=3).fit()
    with pytest.raises(ValueError, match="seed 1: the run's random streams continue"):
        make_trainer(tmp_path, seed=1).fit(resume=True)


def test_init_from_starts_a_new_run_from_the_weights_with_a_fresh_optimiser(tmp_path):
    source = make_trainer(tmp_path / "source", ToyTask(metrics=[1.0, 1.0]), max_steps=6)
    source.fit()
    assert source.optimizer.param_groups[0]["lr"] == 0.025
    task = ToyTask()
    started = make_trainer(tmp_path / "new", task, max_steps=4)
    summary = started.fit(init_from=tmp_path / "source" / "latest.pt")
    assert all(torch.equal(a, b) for a, b in zip(task.params_before_step[1], source.model.parameters()))
    assert summary["steps"] == 4 and started.epoch == 0
    assert all(int(state["step"]) == 4 for state in started.optimizer.state.values())  # Adam from zero
    assert [r["lr"] for r in read_log(tmp_path / "new" / "log.jsonl") if r["type"] == "train"][0] == 0.05
    assert read_log(tmp_path / "new" / "log.jsonl")[0]["init_from"] == str(tmp_path / "source" / "latest.pt")


def test_init_from_refuses_another_model_or_a_resume(tmp_path):
    make_trainer(tmp_path / "source", max_steps=3).fit()
    seed_everything(0)
    other = Trainer(make_model(), ToyTask(), config(), tmp_path / "new", kind="toy",
                    model_config={**MODEL_CONFIG, "hidden": 32})
    with pytest.raises(ValueError, match="cannot start from .*differs in hidden"):
        other.fit(init_from=tmp_path / "source" / "latest.pt")
    with pytest.raises(ValueError, match="give one of them"):
        make_trainer(tmp_path / "source").fit(resume=True, init_from=tmp_path / "source" / "latest.pt")


# ---- schedule, best checkpoint, logs and pictures ---------------------------------------------


def test_learning_rate_drops_on_plateau(tmp_path):
    task = ToyTask(metrics=[1.0, 1.0, 1.0, 1.0])
    make_trainer(tmp_path, task, max_steps=8, eval_every=2, plateau_patience=1, plateau_factor=0.1).fit()
    rates = [r["lr"] for r in read_log(tmp_path / "log.jsonl") if r["type"] == "val"]
    assert rates == pytest.approx([0.05, 0.05, 0.005, 0.005])


def test_best_checkpoint_tracks_the_lowest_validation_metric(tmp_path):
    task = ToyTask(metrics=[3.0, 1.0, 2.0])
    summary = make_trainer(tmp_path, task, max_steps=6, eval_every=2).fit()
    best = load_checkpoint(tmp_path / "best.pt", kind="toy")
    latest = load_checkpoint(tmp_path / "latest.pt", kind="toy")
    assert best["progress"]["step"] == 4 and best["progress"]["best_metric"] == 1.0
    assert latest["progress"]["step"] == 6 and summary["best_step"] == 4
    assert not torch.equal(best["model"]["0.weight"], latest["model"]["0.weight"])


class RegimeTask(ToyTask):
    """Scripted validations measured under a forcing that stops at `free_from` (as the oracle's does)."""

    def __init__(self, metrics: list[float], free_from: int):
        super().__init__(metrics=metrics)
        self.free_from = free_from

    def metric_regime(self):
        return "forced" if self.seen < self.free_from else ""


def test_a_new_metric_regime_restarts_best_pt_and_the_plateau(tmp_path, capsys):
    """Forced validations (1.0, then 1.1: a plateau) are not what the free model is held to: its worse 3.0 and
    2.9 neither count as a plateau nor lose best.pt to a forced step."""
    task = RegimeTask(metrics=[1.0, 1.1, 3.0, 2.9], free_from=5)
    summary = make_trainer(tmp_path, task, max_steps=8, eval_every=2, plateau_patience=0, plateau_factor=0.1).fit()
    records = read_log(tmp_path / "log.jsonl")
    assert [r["lr"] for r in records if r["type"] == "val"] == pytest.approx([0.05, 0.005, 0.005, 0.005])
    assert summary["best_step"] == 8 and summary["best_metric"] == 2.9
    assert load_checkpoint(tmp_path / "best.pt", kind="toy")["progress"]["step"] == 8
    assert [r["step"] for r in records if r["type"] == "regime"] == [6]
    assert "validation measures the usual metric from step 6 on" in capsys.readouterr().err


def test_log_curves_and_samples_are_written(tmp_path):
    task = ToyTask()
    make_trainer(tmp_path, task, max_steps=6).fit()
    records = read_log(tmp_path / "log.jsonl")
    train = [r for r in records if r["type"] == "train"]
    val = [r for r in records if r["type"] == "val"]
    assert [r["step"] for r in train] == [2, 4, 6] and [r["step"] for r in val] == [3, 6]
    for key in ("epoch", "loss", "lr", "slope", "steps_per_s", "items_per_s", "skipped_nonfinite"):
        assert key in train[0]
    assert train[0]["items_per_s"] > 0 and val[0]["val_other"] == 1.0
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in task.sample_paths] == ["step_00000003.png", "step_00000006.png"]
    assert all(p.exists() for p in task.sample_paths)


# ---- checkpoint files --------------------------------------------------------------------------


def payload(**extra) -> dict:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "toy", "weights": torch.ones(3), **extra}


def test_failed_save_keeps_the_previous_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(path, payload(step=1))

    def broken_save(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, payload(step=2))
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_save_refuses_what_safe_loading_would_refuse(tmp_path):
    with pytest.raises(TypeError, match=r"payload\['stats'\]\[0\] is a numpy.ndarray"):
        save_checkpoint(tmp_path / "x.pt", payload(stats=[np.zeros(2)]))
    with pytest.raises(TypeError, match="numpy.float64"):
        save_checkpoint(tmp_path / "x.pt", payload(mean=np.float64(1.0)))
    assert not list(tmp_path.iterdir())


class Smuggled:
    pass


def write_garbage(path: Path) -> None:
    path.write_bytes(b"this is not a checkpoint" * 10)


def write_truncated(path: Path) -> None:
    save_checkpoint(path, payload(big=torch.zeros(1000)))
    path.write_bytes(path.read_bytes()[:500])


def write_pickled_object(path: Path) -> None:
    torch.save(payload(thing=Smuggled()), path)


def write_foreign(path: Path) -> None:
    torch.save({"state_dict": {"w": torch.ones(2)}}, path)


def write_future(path: Path) -> None:
    save_checkpoint(path, {**payload(), "format_version": FORMAT_VERSION + 1})


def write_other_kind(path: Path) -> None:
    save_checkpoint(path, {**payload(), "kind": "lm"})


@pytest.mark.parametrize("write, problem", [
    (None, "no such file"),
    (write_garbage, "cannot be read"),
    (write_truncated, "cannot be read"),
    (write_pickled_object, "Smuggled) that safe loading refuses"),
    (write_foreign, "not a handwriting-hm checkpoint"),
    (write_future, "format version 2 is not supported"),
    (write_other_kind, "holds a 'lm' model, expected a 'toy' model"),
])
def test_bad_checkpoints_raise_one_clear_line(tmp_path, write, problem):
    path = tmp_path / "model.pt"
    if write is not None:
        write(path)
    with pytest.raises(ValueError) as raised:
        load_checkpoint(path, kind="toy")
    message = str(raised.value)
    assert problem in message and str(path) in message and "\n" not in message
    # No chained pickle/zip traceback behind the one line.
    assert raised.value.__cause__ is None and (raised.value.__context__ is None or raised.value.__suppress_context__)


def test_trainer_checkpoint_loads_with_weights_only(tmp_path):
    make_trainer(tmp_path, max_steps=3).fit()
    raw = torch.load(tmp_path / "latest.pt", weights_only=True)
    assert raw["kind"] == "toy" and raw["config"] == MODEL_CONFIG
    assert set(raw) >= {"model", "optimizer", "scheduler", "progress", "rng", "task", "metadata", "train_config"}
    assert isinstance(raw["rng"][0]["torch"], torch.Tensor)


# ---- several processes -------------------------------------------------------------------------


class ShardedToyTask(ToyTask):
    def __init__(self, rank: int, world_size: int):
        super().__init__()
        self.rank, self.world_size = rank, world_size

    def batches(self, epoch):
        return shard_batches(super().batches(epoch), self.rank, self.world_size)


def ddp_worker(rank: int, world_size: int, port: int, run_dir: Path) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    trainer = make_trainer(run_dir, ShardedToyTask(rank, world_size), max_steps=4, eval_every=2)
    trainer.fit()
    torch.save([p.detach() for p in trainer.model.parameters()], run_dir.parent / f"params_{rank}.pt")


@pytest.mark.skipif(not dist.is_available(), reason="torch built without torch.distributed")
@pytest.mark.slow  # two processes
def test_two_process_ddp_on_cpu_keeps_ranks_in_step_and_only_rank_0_writes(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(ddp_worker, args=(2, port, tmp_path / "run"), nprocs=2)
    rank_0, rank_1 = (torch.load(tmp_path / f"params_{rank}.pt") for rank in (0, 1))
    assert all(torch.equal(a, b) for a, b in zip(rank_0, rank_1))
    starts = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["type"] == "start"]
    assert len(starts) == 1 and starts[0]["world_size"] == 2
    latest = load_checkpoint(tmp_path / "run" / "latest.pt", kind="toy")
    # 2 of the 5 batches an epoch per rank: step 4 is the last batch of the second epoch.
    assert (latest["progress"]["step"], latest["progress"]["epoch"], latest["progress"]["position"]) == (4, 1, 2)
    assert len(latest["rng"]) == 2 and not torch.equal(latest["rng"][0]["torch"], latest["rng"][1]["torch"])


# ---- small helpers ------------------------------------------------------------------------------


def test_shard_batches_gives_every_rank_the_same_count():
    shards = [list(shard_batches(range(11), rank, 3)) for rank in range(3)]
    assert shards == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_config_needs_a_limit():
    with pytest.raises(ValueError, match="at least one of"):
        TrainConfig(lr=1e-3)
    with pytest.raises(ValueError, match="plateau_factor"):
        TrainConfig(max_steps=1, plateau_factor=1.5)


def test_move_to_moves_every_tensor_and_keeps_the_structure():
    Pair = namedtuple("Pair", "points lengths")

    @dataclasses.dataclass
    class Batch:
        pair: Pair
        names: list

    packed = torch.nn.utils.rnn.pack_sequence([torch.ones(3), torch.ones(2)])
    batch = {"batch": Batch(Pair(torch.ones(2), [torch.zeros(1)]), ["a"]), "packed": packed, "n": 3}
    moved = move_to(batch, torch.device("meta"))
    assert moved["batch"].pair.points.is_meta and moved["batch"].pair.lengths[0].is_meta
    assert isinstance(moved["batch"].pair, Pair) and moved["batch"].names == ["a"] and moved["n"] == 3
    assert moved["packed"].data.is_meta and moved["packed"].batch_sizes.device.type == "cpu"


def test_command_line_flags_round_trip_to_a_config():
    defaults = TrainConfig(lr=2e-3, max_epochs=30, plateau_factor=0.02, metric="val_bpc")
    parser = argparse.ArgumentParser()
    add_train_arguments(parser, defaults)
    args = parser.parse_args(["--max-steps", "500", "--bf16", "--resume", "--eval-every", "100"])
    config = train_config_from_args(args, defaults)
    assert config == dataclasses.replace(defaults, max_steps=500, bf16=True, eval_every=100) and args.resume
    with pytest.raises(ValueError, match="lr must be positive"):
        train_config_from_args(parser.parse_args(["--lr", "0"]), defaults)


def test_trainer_refuses_a_config_that_could_not_be_checkpointed(tmp_path):
    with pytest.raises(TypeError, match=r"model_config\['data'\] is a pathlib"):
        Trainer(make_model(), ToyTask(), config(), tmp_path, kind="toy", model_config={"data": tmp_path})


def test_flags_left_at_none_take_the_given_defaults():
    parser = argparse.ArgumentParser()
    add_train_arguments(parser, TrainConfig(max_epochs=1))
    parser.set_defaults(lr=None, max_epochs=None)  # as a trainer with preset-dependent defaults does
    preset = TrainConfig(lr=0.002, max_epochs=100, plateau_factor=0.02)
    config = train_config_from_args(parser.parse_args(["--max-steps", "7"]), preset)
    # lr and max_epochs from the preset, max_steps as given, plateau_factor the parser's own default
    assert (config.lr, config.max_epochs, config.max_steps, config.plateau_factor) == (0.002, 100, 7, 0.5)
    config = train_config_from_args(parser.parse_args(["--lr", "0.1"]), preset)
    assert config.lr == 0.1 and config.max_epochs == 100
