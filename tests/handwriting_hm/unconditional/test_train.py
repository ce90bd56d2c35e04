"""`handwriting-hm train`: presets, the handwriting task, the CLI end to end, exact resume."""
from __future__ import annotations

import contextlib
import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from data_prep.dataset import HandwritingDataset
from handwriting_hm.cli import main
from handwriting_hm.hmlstm import trainer as trainer_module
from handwriting_hm.hmlstm.checkpoint import load_checkpoint
from handwriting_hm.hmlstm.graphed_step import GraphedStep
from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel, load_handwriting_model
from handwriting_hm.unconditional.task import PRESETS, HandwritingTask, LineChunk, TaskSettings
from tests.factories import make_prepared

# A model small enough that a step takes milliseconds; an annealed slope, so resume must restore it.
SMALL = ["--preset", "tiny", "--hidden-sizes", "8,8", "--embedding-size", "8", "--n-mixtures", "2",
         "--batch-size", "8", "--crop-points", "0", "--validation-lines", "0", "--sample-points", "12",
         "--slope-rate", "0.5", "--slope-unit-steps", "2", "--slope-max", "2", "--log-every", "1",
         "--device", "cpu", "--quiet"]


def train(data: Path, run_dir: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--run-dir", str(run_dir), *SMALL, *extra])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained_run(prepared, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("run") / "run"
    assert train(prepared, run_dir, "--max-steps", "4", "--eval-every", "2") == 0
    return run_dir


def read_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- presets

def test_paper_presets_have_the_papers_values():
    for name in ("paper-hm", "paper-hm-anneal", "paper-lstm"):
        preset = PRESETS[name]
        assert preset.model.hidden_sizes == (400, 400, 400) and preset.model.embedding_size == 400
        assert preset.model.layer_norm and preset.model.n_mixtures == 20
        assert preset.task.batch_size == 32 and preset.task.scheme == "paper" and preset.task.crop_points is None
        assert preset.train.lr == 3e-4 and preset.train.clip == 1.0 and preset.train.bf16
        assert preset.train == PRESETS["paper-hm"].train  # the same budget for the three rows of Table 3
    assert PRESETS["paper-lstm"].model.cell == "lstm"
    assert PRESETS["paper-hm"].model.cell == PRESETS["paper-hm-anneal"].model.cell == "hm-lstm"
    assert PRESETS["paper-hm"].task.slope(10**6) == 1.0
    anneal = PRESETS["paper-hm-anneal"].task
    assert (anneal.slope_rate, anneal.slope_max) == (0.004, 3.0)
    assert anneal.slope(0) == 1.0 and anneal.slope(10**6) == 3.0
    assert anneal.slope(anneal.slope_unit_steps * 100) == pytest.approx(1.4)  # 1 + 0.004 * 100


def test_bad_task_settings_are_clear_errors():
    with pytest.raises(ValueError, match="batch_size"):
        TaskSettings(batch_size=0)
    with pytest.raises(ValueError, match="slope"):
        TaskSettings(slope_max=0.5)


# ----------------------------------------------------------------------------- the task

def test_batches_are_repeatable_per_epoch_and_crops_have_the_asked_length(prepared):
    train_set = HandwritingDataset(prepared, "train", "paper")
    settings = TaskSettings(batch_size=8, crop_points=15)
    task = HandwritingTask(settings, train_set, [], train_set.stats, seed=3)
    first, again, other = list(task.batches(0)), list(task.batches(0)), list(task.batches(1))
    assert len(first) == -(-len(train_set) // 8)
    assert all(torch.equal(a.offsets, b.offsets) for a, b in zip(first, again))
    assert not all(a.offsets.shape == b.offsets.shape and torch.equal(a.offsets, b.offsets) for a, b in zip(first, other))
    assert all(batch.offsets.shape[1] == 15 and bool(batch.mask.all()) for batch in first)  # every line >= 20 points


def test_the_loss_of_a_cropped_batch_can_be_captured_in_a_cuda_graph(prepared, monkeypatch):
    """TrainingTask.graph_safe: on crops the loss waits for no device value (on the meta device, which
    has no values, .item() or bool(tensor) would raise), changes no Python state of the task, and reads
    the slope from the tensor start_step() fills, so a replay without the Python uses the new slope."""
    train_set = HandwritingDataset(prepared, "train", "paper")
    settings = TaskSettings(batch_size=4, crop_points=15, slope_rate=0.5, slope_max=3.0)
    task = HandwritingTask(settings, train_set, [], train_set.stats, seed=0)
    batch = next(iter(task.batches(0)))
    assert task.graph_safe(batch)
    torch.manual_seed(0)
    config = HandwritingConfig(hidden_sizes=(8, 8, 8), embedding_size=8, n_mixtures=2)
    model = HandwritingModel(config, impl="reference").to("meta")
    meta = torch.device("meta")
    with monkeypatch.context() as patch:  # the meta device has no autocast; nothing here runs under one
        patch.setattr(torch, "autocast", lambda *args, **kwargs: contextlib.nullcontext())
        task.start_step(meta)
        before = {name: value for name, value in vars(task).items() if not isinstance(value, torch.Tensor)}
        loss, points = task.loss(model, batch._replace(offsets=batch.offsets.to(meta), mask=batch.mask.to(meta)))
        loss.backward()
    assert {name: value for name, value in vars(task).items() if not isinstance(value, torch.Tensor)} == before
    assert isinstance(points, torch.Tensor) and task._slope_input.device == meta

    # on the CPU: a loss that reads the slope tensor equals one given the same slope as a number
    model = HandwritingModel(config, impl="reference")
    def gradients(slope_number, slope_tensor=None):
        task.slope, task._slope_input = slope_number, slope_tensor
        model.zero_grad()
        task.loss(model, batch)[0].backward()
        return [p.grad.clone() for p in model.parameters()]
    number = gradients(2.5)
    tensor = gradients(1.0, torch.tensor(2.5))  # the number is ignored when the tensor is there
    assert all(torch.equal(a, b) for a, b in zip(number, tensor))
    assert not all(torch.equal(a, b) for a, b in zip(number, gradients(1.0)))


def test_loss_is_the_mean_nll_per_valid_point(prepared):
    from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel

    train_set = HandwritingDataset(prepared, "train", "paper")
    task = HandwritingTask(TaskSettings(batch_size=4), train_set, [], train_set.stats, seed=0)
    batch = next(iter(task.batches(0)))
    torch.manual_seed(0)
    model = HandwritingModel(HandwritingConfig(hidden_sizes=(8, 8), embedding_size=8, n_mixtures=2))
    loss, points = task.loss(model, batch)
    lines = [batch.offsets[row, :length] for row, length in enumerate(batch.lengths.tolist())]
    with torch.no_grad():  # one line at a time, no padding
        total = sum(float(model.sequence_log_likelihood(line[None])[0]) for line in lines)
    assert int(points) == int(batch.lengths.sum())
    assert float(loss.detach()) == pytest.approx(-total / float(points), rel=1e-5)


# ----------------------------------------------------------------------------- the command

def test_train_writes_checkpoints_log_curves_and_samples(trained_run):
    for name in ("latest.pt", "best.pt", "curves.png", "log.jsonl"):
        assert (trained_run / name).is_file(), name
    assert sorted(p.name for p in (trained_run / "samples").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    checkpoint = torch.load(trained_run / "latest.pt", weights_only=True)
    assert checkpoint["kind"] == "handwriting" and checkpoint["config"]["hidden_sizes"] == [8, 8]
    assert set(checkpoint["metadata"]["stats"]) == {"mean", "std"} and checkpoint["metadata"]["preset"] == "tiny"
    assert checkpoint["task"] == {"step": 4, "slope": 1.75, "carried": None}  # slope of the 4th step: 1 + 0.5 * 3 / 2
    records = read_records(trained_run)
    train_records = [r for r in records if r["type"] == "train"]
    assert [r["slope"] for r in train_records] == [1.0, 1.25, 1.5, 1.75]
    assert all(r["train_nll_per_sequence"] > 0 for r in train_records)
    validation = [r for r in records if r["type"] == "val"]
    assert [r["step"] for r in validation] == [2, 4]
    assert all(r["val_ll_per_sequence"] < 0 and "val_boundary_rate_1" in r for r in validation)
    loaded = load_handwriting_model(trained_run / "best.pt")
    assert loaded.slope in (1.25, 1.75)


def test_resume_continues_exactly(prepared, trained_run, tmp_path):
    split = tmp_path / "split"
    assert train(prepared, split, "--max-steps", "2", "--eval-every", "2") == 0
    assert main(["train", "--data", str(prepared), "--run-dir", str(split), "--resume", "--max-steps", "4",
                 "--quiet"]) == 0
    straight = torch.load(trained_run / "latest.pt", weights_only=True)
    resumed = torch.load(split / "latest.pt", weights_only=True)
    assert resumed["task"] == straight["task"]
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def test_fresh_run_refuses_an_existing_run_folder(prepared, trained_run, capsys):
    assert train(prepared, trained_run, "--max-steps", "1") == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("handwriting-hm: error:") and "already exists" in error and "\n" not in error


def test_export_writes_a_half_precision_model_that_loads(trained_run, tmp_path):
    out = tmp_path / "model.pt"
    assert main(["export", str(trained_run / "best.pt"), str(out)]) == 0
    exported = torch.load(out, weights_only=True)
    assert {"optimizer", "rng", "task"}.isdisjoint(exported)
    assert all(v.dtype == torch.float16 for v in exported["model"].values() if v.is_floating_point())
    original, compact = load_handwriting_model(trained_run / "best.pt"), load_handwriting_model(out)
    assert compact.slope == original.slope and compact.stats == original.stats
    inputs = torch.randn(2, 7, 3)
    expected = original.model(inputs, slope=original.slope).params.mu
    assert torch.allclose(compact.model(inputs, slope=compact.slope).params.mu, expected, atol=2e-2)


def test_fused_impl_trains_to_the_same_weights(prepared, tmp_path, monkeypatch):
    import handwriting_hm.hmlstm.paths.fused as fused

    calls = []
    real = fused.hmlstm_fused
    monkeypatch.setattr(fused, "hmlstm_fused", lambda *args: calls.append(1) or real(*args))
    runs = {}
    for impl in ("reference", "fused"):
        run_dir = tmp_path / impl
        calls.clear()
        assert train(prepared, run_dir, "--max-steps", "3", "--eval-every", "3", "--impl", impl) == 0
        assert bool(calls) == (impl == "fused")  # the flag reaches the core
        runs[impl] = torch.load(run_dir / "latest.pt", weights_only=True)["model"]
    assert runs["reference"].keys() == runs["fused"].keys()
    for name, weight in runs["reference"].items():
        torch.testing.assert_close(runs["fused"][name], weight, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- resume, init-from, Ctrl-C, export

def test_resume_takes_every_setting_from_the_run_and_applies_training_flags(prepared, tmp_path):
    run_dir = tmp_path / "run"
    assert train(prepared, run_dir, "--max-steps", "2", "--eval-every", "2", "--clip", "0.5",
                 "--plateau-patience", "7") == 0
    # No --preset: the default preset (paper-hm-anneal, lr 3e-4, clip 1) must not leak into the tiny run.
    assert main(["train", "--data", str(prepared), "--run-dir", str(run_dir), "--resume", "--max-steps", "3",
                 "--lr", "0.01", "--min-lr", "0.001"]) == 0
    saved = torch.load(run_dir / "latest.pt", weights_only=True)
    config = saved["train_config"]
    assert (config["clip"], config["plateau_patience"], config["eval_every"], config["log_every"]) == (0.5, 7, 2, 1)
    assert (config["lr"], config["min_lr"], config["max_steps"]) == (0.01, 0.001, 3)
    assert saved["metadata"]["preset"] == "tiny" and saved["config"]["hidden_sizes"] == [8, 8]
    # Before: written into train_config but not applied; the optimiser went on at 2e-3.
    assert saved["optimizer"]["param_groups"][0]["lr"] == 0.01
    assert (saved["scheduler"]["min_lrs"], saved["scheduler"]["patience"]) == ([0.001], 7)


def test_a_run_saved_before_a_config_setting_existed_resumes_with_its_own_command(prepared, trained_run, tmp_path):
    """A run written before copy_gradient joined the model config (as every early run was)."""
    run_dir = tmp_path / "old"
    shutil.copytree(trained_run, run_dir)
    checkpoint = torch.load(run_dir / "latest.pt", weights_only=True)
    del checkpoint["config"]["copy_gradient"]
    torch.save(checkpoint, run_dir / "latest.pt")
    assert train(prepared, run_dir, "--resume", "--max-steps", "5") == 0
    assert torch.load(run_dir / "latest.pt", weights_only=True)["progress"]["step"] == 5


def test_resume_refuses_flags_that_contradict_the_run_in_one_line(prepared, trained_run, capsys):
    for extra, named in ((["--hidden-sizes", "16,16"], "--hidden-sizes 16,16 contradicts"),
                         (["--batch-size", "4"], "--batch-size 4 contradicts"),
                         (["--preset", "paper-hm"], "--preset paper-hm")):
        assert main(["train", "--data", str(prepared), "--run-dir", str(trained_run), "--resume", *extra]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("handwriting-hm: error:") and named in error and "\n" not in error
    # Repeating the run's own values is fine: the command that started a run resumes it with --resume.
    assert train(prepared, trained_run, "--resume", "--max-steps", "4") == 0


@pytest.mark.usefixtures("ctrl_c_as_in_a_terminal")
def test_ctrl_c_saves_latest_pt_says_so_and_exits_130(prepared, trained_run, tmp_path, monkeypatch, capsys):
    real_loss = HandwritingTask.loss

    def interrupted_at_step_3(self, model, batch):
        if self.step == 3:  # start_step() has counted this step
            signal.raise_signal(signal.SIGINT)
        return real_loss(self, model, batch)

    run_dir = tmp_path / "run"
    monkeypatch.setattr(HandwritingTask, "loss", interrupted_at_step_3)
    assert train(prepared, run_dir, "--max-steps", "4", "--eval-every", "2") == 130
    error = capsys.readouterr().err.strip()
    assert error == f"handwriting-hm: interrupted at step 3; saved {run_dir / 'latest.pt'}: continue with --resume"
    monkeypatch.undo()
    assert torch.load(run_dir / "latest.pt", weights_only=True)["progress"]["step"] == 3
    assert main(["train", "--data", str(prepared), "--run-dir", str(run_dir), "--resume", "--quiet"]) == 0
    straight = torch.load(trained_run / "latest.pt", weights_only=True)
    resumed = torch.load(run_dir / "latest.pt", weights_only=True)
    assert resumed["task"] == straight["task"]
    for name, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][name]), name


def test_export_over_a_training_checkpoint_is_refused_and_an_export_does_not_resume(trained_run, prepared,
                                                                                   tmp_path, capsys):
    latest = trained_run / "latest.pt"
    before = latest.read_bytes()
    for destination in (latest, trained_run / "best.pt"):
        assert main(["export", str(latest), str(destination)]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("handwriting-hm: error: export:") and "\n" not in error
    assert latest.read_bytes() == before
    exported = tmp_path / "exported" / "latest.pt"
    assert main(["export", str(latest), str(exported)]) == 0
    capsys.readouterr()
    # Before: KeyError: 'train_config', with a traceback.
    assert main(["train", "--data", str(prepared), "--run-dir", str(exported.parent), "--resume"]) == 2
    error = capsys.readouterr().err.strip()
    assert "exported model" in error and f"--init-from {exported}" in error and "\n" not in error


def test_init_from_starts_a_new_run_from_an_exported_model(trained_run, prepared, tmp_path, capsys):
    exported = tmp_path / "model.pt"
    assert main(["export", str(trained_run / "best.pt"), str(exported)]) == 0
    run_dir = tmp_path / "warm"
    assert train(prepared, run_dir, "--max-steps", "1", "--eval-every", "1", "--init-from", str(exported)) == 0
    start = read_records(run_dir)[0]
    assert start["init_from"] == str(exported) and start["step"] == 0 and not start["resumed"]
    checkpoint = torch.load(run_dir / "latest.pt", weights_only=True)
    assert checkpoint["progress"]["step"] == 1 and checkpoint["config"] == torch.load(exported, weights_only=True)["config"]
    capsys.readouterr()
    for extra, named in ((["--embedding-size", "16"], "--embedding-size 16 contradicts"),
                         (["--resume"], "give one of them")):
        assert train(prepared, tmp_path / "other", "--init-from", str(exported), *extra) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("handwriting-hm: error:") and named in error and "\n" not in error


def test_init_from_may_change_the_copy_gradient_but_resume_may_not(trained_run, prepared, tmp_path, capsys):
    """copy_gradient changes how a model learns, not what it computes: a straight run's weights may
    go on learning with the mixed gradient."""
    assert torch.load(trained_run / "best.pt", weights_only=True)["config"]["copy_gradient"] == "straight"
    run_dir = tmp_path / "mixed"
    assert train(prepared, run_dir, "--max-steps", "1", "--eval-every", "1", "--init-from",
                 str(trained_run / "best.pt"), "--copy-gradient", "mixed", "--impl", "sparse") == 0
    assert torch.load(run_dir / "latest.pt", weights_only=True)["config"]["copy_gradient"] == "mixed"
    capsys.readouterr()
    assert train(prepared, run_dir, "--resume", "--max-steps", "2", "--copy-gradient", "straight") == 2
    assert "--copy-gradient straight contradicts" in capsys.readouterr().err


def test_the_run_says_which_core_path_auto_picked_and_logs_it(prepared, tmp_path, capsys):
    assert train(prepared, tmp_path / "auto", "--max-steps", "1", "--eval-every", "1", "--impl", "auto") == 0
    assert "core: auto on the CPU: the sparse path" in capsys.readouterr().err
    assert read_records(tmp_path / "auto")[0]["core_path"] == "sparse"
    assert train(prepared, tmp_path / "lstm", "--max-steps", "1", "--eval-every", "1", "--cell", "lstm") == 0
    assert "core:" not in capsys.readouterr().err and "core_path" not in read_records(tmp_path / "lstm")[0]


def test_a_validation_line_with_a_non_finite_log_likelihood_is_named(prepared):
    from handwriting_hm.unconditional.model import HandwritingConfig, HandwritingModel

    validation = HandwritingDataset(prepared, "validation", "paper")
    lines = [validation[i][0].clone() for i in range(3)]
    lines[1][4, 0] = float("nan")
    task = HandwritingTask(TaskSettings(batch_size=2), validation, lines, validation.stats, seed=0,
                           validation_ids=validation.line_ids[:3])
    torch.manual_seed(0)
    model = HandwritingModel(HandwritingConfig(hidden_sizes=(8, 8), embedding_size=8, n_mixtures=2))
    # Before: val_loss nan was returned; the schedule cut the rate at every validation.
    with pytest.raises(ValueError) as raised:
        task.validate(model)
    message = str(raised.value)
    assert f"validation line {validation.line_ids[1]} has log-likelihood nan" in message
    assert "NaN or infinite values" in message and "\n" not in message


@pytest.mark.slow
def test_whole_lines_in_chunks_carry_the_state_and_resume_exactly(tmp_path):
    """chunk_points: every line of a batch whole, in consecutive chunks; the chunks' log-likelihoods add
    up to the lines' (the state is carried), and a run stopped between two chunks resumes exactly."""
    data = make_prepared(tmp_path, n_forms=2)
    train_set = HandwritingDataset(data, split="train", scheme="paper")
    torch.manual_seed(0)
    model = HandwritingModel(HandwritingConfig(hidden_sizes=(8, 8, 8), embedding_size=8, n_mixtures=2))
    settings = TaskSettings(batch_size=4, chunk_points=7)
    task = HandwritingTask(settings, train_set, [train_set[0][0]], {"mean": [0, 0], "std": [1, 1]}, seed=0)
    chunks = list(task.batches(0))
    assert all(isinstance(chunk, LineChunk) and chunk.offsets.shape[1] <= 7 for chunk in chunks)
    starts = [i for i, chunk in enumerate(chunks) if chunk.previous is None]
    first_batch = chunks[starts[0]:starts[1]]
    total = 0.0
    with torch.no_grad():
        for chunk in first_batch:  # the carried state is float32, so the model is too
            loss, points = task.loss(model, chunk)
            total += -float(loss) * int(points)
        offsets = torch.cat([chunk.offsets for chunk in first_batch], dim=1)
        lengths = torch.cat([chunk.mask for chunk in first_batch], dim=1).sum(dim=1)
        whole, _ = model.sequence_log_likelihood(offsets, lengths)
    assert total == pytest.approx(float(whole.sum()), rel=1e-5)
    assert len(first_batch) > 2  # lines of 20 to 59 points: several chunks each

    train = ["train", "--data", str(data), "--preset", "tiny", "--hidden-sizes", "8,8,8", "--embedding-size", "8",
             "--n-mixtures", "2", "--batch-size", "4", "--crop-points", "0", "--chunk-points", "8",
             "--validation-lines", "2", "--eval-every", "100", "--device", "cpu", "--quiet"]
    assert main([*train, "--run-dir", str(tmp_path / "straight"), "--max-steps", "5"]) == 0
    assert main([*train, "--run-dir", str(tmp_path / "resumed"), "--max-steps", "3"]) == 0
    stopped = load_checkpoint(tmp_path / "resumed" / "latest.pt", kind="handwriting")
    assert stopped["task"]["carried"] is not None and stopped["metadata"]["task"]["chunk_points"] == 8
    assert main(["train", "--data", str(data), "--run-dir", str(tmp_path / "resumed"), "--resume", "--max-steps", "5",
                 "--quiet"]) == 0
    straight, resumed = (load_checkpoint(tmp_path / run / "latest.pt", kind="handwriting") for run in ("straight", "resumed"))
    for name, weight in straight["model"].items():
        assert torch.equal(weight, resumed["model"][name]), name


class ReplayedOnTheCPU(GraphedStep):
    """CUDA-graph capture acted out on the CPU, for the trainer's side of it: "capture" runs the step on
    static copies of the inputs and keeps its outputs and gradients; each "replay" runs it again and
    writes the results into those same tensors, as a replayed graph writes into its own memory. Unlike a
    graph it runs the step's Python again: what a replay must not depend on is tested above."""

    def _why_not_capturable(self, inputs):
        return None

    def _capture(self, inputs):
        self.static_inputs = [t.clone() for t in inputs]
        for _ in range(self.warmup_steps):
            self.eager_step(*self.static_inputs)
        self.static_outputs = self.eager_step(*self.static_inputs)
        self.gradients = [p.grad for p in self.parameters]
        self.graph = self

    def replay(self):
        before = [p.grad for p in self.parameters]  # a replay leaves Python attributes as they were
        outputs = self.eager_step(*self.static_inputs)
        for static, new in zip((*self.static_outputs, *self.gradients), (*outputs, *(p.grad for p in self.parameters))):
            static.copy_(new)
        for p, grad in zip(self.parameters, before):
            p.grad = grad


def test_a_run_whose_steps_replay_from_a_graph_trains_as_the_eager_run(prepared, tmp_path, monkeypatch, capsys):
    """The trainer's CUDA-graph path, with capture acted out on the CPU: new batches reach the static
    inputs, the optimizer steps on the replayed gradients (the trainer lets go of them after each step),
    the annealed slope advances, and a batch of other shapes runs eagerly."""
    crops = ["--crop-points", "15", "--batch-size", "6", "--max-steps", "7"]  # 20 lines: 6, 6, 6, then 2
    assert train(prepared, tmp_path / "eager", *crops) == 0
    monkeypatch.setattr(trainer_module, "GRAPH_DEVICE_TYPES", ("cuda", "cpu"))
    monkeypatch.setattr(trainer_module, "GraphedStep", ReplayedOnTheCPU)
    capsys.readouterr()
    assert train(prepared, tmp_path / "graphed", *crops) == 0
    assert "cuda graph: captured: batches of shapes 6x15x3, 6, 6x15 replay" in capsys.readouterr().err
    eager, graphed = (load_checkpoint(tmp_path / run / "latest.pt") for run in ("eager", "graphed"))
    assert graphed["slope"] == eager["slope"] > 1.0
    for name, weight in eager["model"].items():
        assert torch.equal(weight, graphed["model"][name]), name
    losses = [[r["loss"] for r in read_records(tmp_path / run) if r["type"] == "train"] for run in ("eager", "graphed")]
    assert losses[0] == losses[1] and len(set(losses[0])) == len(losses[0])
