"""`hm-lm evaluate`: the fast default (64 rows) says so, `--rows 1` is the exact number, progress on stderr."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from handwriting_hm.hmlstm.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint
from lm.cli import main
from lm.scoring import split_bpc
from lm.model import LanguageModel, LMConfig
from lm.prepare import prepare
from lm.prepared_text import load_prepared_text

LINES = ["the cat sat on the mat", "a dog ate N apples", "<unk> said the bank 's chief", "prices fell"]


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory) -> tuple[Path, Path, LanguageModel]:
    folder = tmp_path_factory.mktemp("ptb")
    for split, repeats in (("train", 30), ("valid", 5), ("test", 12)):  # Mikolov's character files
        text = "".join(" ".join("_".join(line.split())) + " \n " for line in LINES * repeats)
        (folder / f"ptb.char.{split}.txt").write_text(text, encoding="ascii")
    prepared = folder / "ptb.npz"
    prepare("ptb", prepared, path=folder)
    vocab = load_prepared_text(prepared).vocab
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=len(vocab), input_embedding=6, hidden_sizes=(8, 7, 6),
                                   embedding_size=9)).eval()
    checkpoint = folder / "m.pt"
    save_checkpoint(checkpoint, {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": "lm",
                                 "config": model.config.to_dict(), "model": model.state_dict(),
                                 "task": {"slope": 1.0}, "metadata": {"dataset": "ptb", "vocab": vocab}})
    return checkpoint, prepared, model


def evaluate(capsys, *arguments: str) -> tuple[dict, str]:
    code = main(["evaluate", *arguments, "--json", "--device", "cpu"])
    captured = capsys.readouterr()
    assert code == 0
    return json.loads(captured.out), captured.err


def test_the_default_reads_64_rows_and_rows_1_is_the_exact_number(model_and_data, capsys):
    checkpoint, prepared, model = model_and_data
    ids = load_prepared_text(prepared).splits["test"]
    fast, _ = evaluate(capsys, str(checkpoint), "--data", str(prepared), "--bptt", "20")
    exact, _ = evaluate(capsys, str(checkpoint), "--data", str(prepared), "--bptt", "20", "--rows", "1")
    assert fast["rows"] == 64 and exact["rows"] == 1
    assert fast["bpc"] == pytest.approx(split_bpc(model, ids, rows=64, bptt=20)[0], rel=1e-6)
    assert exact["bpc"] == pytest.approx(split_bpc(model, ids, rows=1, bptt=20)[0], rel=1e-6)
    assert fast["symbols_scored"] == exact["symbols_scored"] == len(ids) - 1  # every symbol once either way


def test_the_command_shows_progress_on_stderr(model_and_data, capsys):
    checkpoint, prepared, _ = model_and_data
    _, err = evaluate(capsys, str(checkpoint), "--data", str(prepared), "--rows", "1", "--bptt", "50")
    assert "scoring: 100%" in err and "window" in err
