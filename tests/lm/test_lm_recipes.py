"""The boundary recipes of `hm-lm train` and the boundary figures of training logs and `hm-lm evaluate`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from handwriting_hm.hmlstm.checkpoint import load_checkpoint
from lm.cli import main
from lm.model import LanguageModel, LMConfig
from lm.prepare import prepare
from lm.prepared_text import load_prepared_text

LINES = ["the cat sat on the mat", "a dog ate N apples", "<unk> said the bank 's chief", "prices fell"]


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    folder = tmp_path / "ptb"
    folder.mkdir()
    for split, lines in (("train", LINES * 30), ("valid", LINES[:2] * 5), ("test", LINES[2:] * 5)):
        text = "".join(" ".join("_".join(line.split())) + " \n " for line in lines)
        (folder / f"ptb.char.{split}.txt").write_text(text, encoding="ascii")
    output = tmp_path / "ptb.npz"
    prepare("ptb", output, path=folder)
    return output


def train(prepared: Path, run_dir: Path, capsys, *extra: str) -> tuple[int, str, str]:
    code = main(["train", "--data", str(prepared), "--run-dir", str(run_dir), "--preset", "tiny",
                 "--hidden-sizes", "8,8,8", "--embedding-size", "8", "--batch-size", "4", "--bptt", "10",
                 "--train-symbols", "400", "--valid-symbols", "120", "--val-rows", "2", "--device", "cpu",
                 "--quiet", "--log-every", "2", *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def validations(run_dir: Path) -> list[dict]:
    return [r for r in map(json.loads, (run_dir / "log.jsonl").read_text().splitlines()) if r["type"] == "val"]


@pytest.mark.slow
def test_validation_logs_the_detectors_health_and_where_they_fire(tmp_path: Path, prepared: Path, capsys):
    code, _, _ = train(prepared, tmp_path / "run", capsys, "--max-steps", "4", "--eval-every", "2", "--impl", "auto")
    assert code == 0
    record = validations(tmp_path / "run")[-1]
    for key in ("z1_rate", "z2_rate", "z1_window", "z2_window", "layer1_update", "layer2_copy", "layer3_flush",
                "z1_precision", "z1_recall", "z1_f1", "z1_lift", "z2_precision"):
        assert key in record, key
    assert record["layer1_copy"] == 0.0  # layer 1 reads every symbol
    for l in (1, 2, 3):
        assert sum(record[f"layer{l}_{op}"] for op in ("copy", "update", "flush")) == pytest.approx(1.0)
    assert (tmp_path / "run" / "curves.png").exists()


@pytest.mark.slow
def test_a_detector_that_never_fires_is_named_once(tmp_path: Path, prepared: Path, capsys):
    code, _, err = train(prepared, tmp_path / "run", capsys, "--max-steps", "4", "--eval-every", "1",
                         "--boundary-bias", "-50")  # inside the norm: the norm's bias, far below the window
    assert code == 0
    assert err.count("layer 1's detector has stopped firing at step 2") == 1
    assert err.count("layer 2's detector has stopped firing") == 1
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["detector"] for r in records if r["type"] == "detector"] == [1, 2]


@pytest.mark.slow
def test_the_rate_loss_moves_the_firing_rates_towards_their_targets(tmp_path: Path, prepared: Path, capsys):
    common = ("--max-steps", "30", "--eval-every", "30", "--lr", "0.02", "--boundary-bias", "-2")
    assert train(prepared, tmp_path / "free", capsys, *common)[0] == 0
    assert train(prepared, tmp_path / "pulled", capsys, *common, "--rate-targets", "0.9,0.9",
                 "--rate-weight", "20")[0] == 0
    free, pulled = validations(tmp_path / "free")[-1], validations(tmp_path / "pulled")[-1]
    assert pulled["z1_rate"] > free["z1_rate"] + 0.2
    saved = load_checkpoint(tmp_path / "pulled" / "latest.pt", kind="lm")
    assert saved["task"]["steps_done"] == 30


def test_oracle_forces_layer_1_to_the_separators_and_bernoulli_samples(tmp_path: Path, prepared: Path):
    vocab = load_prepared_text(prepared).vocab
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=len(vocab), input_embedding=6, hidden_sizes=(6, 6, 6),
                                   embedding_size=6), impl="auto")
    ids = torch.tensor([[vocab.index(s) for s in "the_cat_sat\n"]])
    forced = torch.tensor([[float(s in "_\n") for s in "the_cat_sat\n"]])
    assert torch.equal(model(ids, forced_z1=forced).core.boundaries[..., 0], forced)
    from lm.task import LanguageModelTask, TaskSettings
    data = load_prepared_text(prepared)
    task = LanguageModelTask(data.splits["train"], data.splits["valid"],
                             TaskSettings(batch_size=2, bptt=12, oracle_steps=1), vocab=vocab)
    inputs, targets = next(iter(task.batches(0)))
    task.start_step(torch.device("cpu"))
    task.loss(model, (inputs, targets))
    with pytest.raises(ValueError, match="target rates"):
        LanguageModelTask(data.splits["train"], data.splits["valid"], TaskSettings(batch_size=2, rate_weight=1.0))


def test_recipe_flags_are_checked_in_one_line(tmp_path: Path, prepared: Path, capsys):
    code, _, err = train(prepared, tmp_path / "run", capsys, "--max-steps", "2", "--z-on-copy", "keep",
                         "--copy-gradient", "exact")
    assert code == 2 and "does not go with" in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        train(prepared, tmp_path / "run2", capsys, "--max-steps", "2", "--rate-targets", "0.2,x")
    assert exited.value.code == 2 and "expected rates like 0.18,0.06" in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_reports_where_the_boundaries_fall(tmp_path: Path, prepared: Path, capsys):
    assert train(prepared, tmp_path / "run", capsys, "--max-steps", "2", "--z-on-copy", "recompute",
                 "--copy-gradient", "exact", "--no-boundary-norm", "--boundary-bias", "1")[0] == 0
    checkpoint = str(tmp_path / "run" / "latest.pt")
    assert main(["evaluate", checkpoint, "--data", str(prepared), "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    z1 = result["boundaries"]["z1"]
    for key in ("rate", "precision", "recall", "f1", "lift", "shift_precision", "shift_lift"):
        assert np.isfinite(z1[key]), key
    assert "boundary_slope" in result and "z1_window" in result["health"]
    assert main(["evaluate", checkpoint, "--data", str(prepared), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "boundary slope a = " in out and "z1: fires at" in out and "layer 3 UPDATE" in out


@pytest.mark.slow
def test_boundaries_command_reports_alignment_and_bounds_the_text(tmp_path: Path, prepared: Path, capsys):
    assert train(prepared, tmp_path / "run", capsys, "--max-steps", "2")[0] == 0
    checkpoint = str(tmp_path / "run" / "latest.pt")
    assert main(["boundaries", checkpoint, "the cat sat on the mat", "-o", str(tmp_path / "b.png")]) == 0
    out = capsys.readouterr().out
    assert "z1: fires at" in out and "z2: fires at" in out and "precision" in out
    assert main(["boundaries", checkpoint, "the cat " * 300, "-o", str(tmp_path / "long.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most 2000" in err and not (tmp_path / "long.png").exists()


@pytest.mark.slow
def test_validation_forces_layer_1_while_the_oracle_does(tmp_path: Path, prepared: Path, capsys):
    code, _, _ = train(prepared, tmp_path / "run", capsys, "--max-steps", "4", "--eval-every", "2",
                       "--oracle-steps", "3")
    assert code == 0
    records = validations(tmp_path / "run")
    assert [r["step"] for r in records] == [2, 4]
    assert records[0].get("val_oracle") == 1.0 and "val_oracle" not in records[1]
    assert records[0]["z1_precision"] == 1.0 and records[0]["z1_recall"] == 1.0  # z1 is the separators themselves
    # the free model is not held to the forced BPC: best.pt and the plateau start again at the first free validation
    assert records[1]["best_metric"] == records[1]["val_loss"]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["regime"]) for r in log if r["type"] == "regime"] == [(4, "")]
    assert load_checkpoint(tmp_path / "run" / "best.pt")["progress"]["step"] == 4
