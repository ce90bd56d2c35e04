"""`hm-lm compare` and `handwriting-hm compare`: one table of runs from their logs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from handwriting_hm.cli import main as handwriting_main
from lm.cli import main as lm_main


def write_log(run: Path, records: list[dict]) -> Path:
    run.mkdir()
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return run


def test_compare_tables_each_runs_best_free_validation(tmp_path: Path, capsys):
    run = write_log(tmp_path / "recipe", [
        {"type": "train", "step": 10, "steps_per_s": 2.0}, {"type": "train", "step": 20, "steps_per_s": 4.0},
        {"type": "val", "step": 10, "val_loss": 1.7, "val_bpc": 2.5, "z1_rate": 0.4, "z1_precision": 0.3},
        {"type": "val", "step": 20, "val_loss": 1.5, "val_bpc": 2.1, "z1_rate": 0.2, "z1_precision": 0.9,
         "z1_lift": 2.5},
        {"type": "val", "step": 30, "val_loss": 1.6, "val_bpc": 2.2, "z1_rate": 0.1, "elapsed_s": 90.0}])
    assert lm_main(["compare", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["step"] == 20 and summary["val_bpc"] == 2.1 and summary["z1_precision"] == 0.9
    assert summary["steps_per_s"] == 3.0 and summary["last_step"] == 30
    for budget in (["--steps", "15"], ["--minutes", "1"]):  # step 20's validation has no elapsed_s: 0 minutes
        assert lm_main(["compare", str(run), "--json", *budget]) == 0
        assert json.loads(capsys.readouterr().out)["step"] == (10 if budget[0] == "--steps" else 20)
    assert lm_main(["compare", str(run), "--steps", "5"]) == 2
    assert "within the budget" in capsys.readouterr().err
    assert lm_main(["compare", str(run)]) == 0
    out = capsys.readouterr().out
    assert "| run | best step | val BPC |" in out
    assert "| recipe | 20 | 2.100 | 0.20 | 0.90 | – | – | 2.50 |" in out
    assert lm_main(["compare", str(tmp_path / "nowhere")]) == 2
    assert "no log.jsonl" in capsys.readouterr().err


def test_handwriting_runs_leave_out_the_oracles_forced_validations(tmp_path: Path, capsys):
    oracle = write_log(tmp_path / "oracle", [
        {"type": "val", "step": 250, "val_loss": -1.9, "val_ll_per_sequence": 1190.0, "val_oracle": 1.0,
         "z1_rate": 0.04, "z1_precision": 1.0},
        {"type": "val", "step": 500, "val_loss": -1.6, "val_ll_per_sequence": 1003.25, "z1_rate": 0.05,
         "z1_precision": 0.8, "z1_word_precision": 0.3, "z1_word_lift": 4.0, "z1_word_recall": 0.9}])
    lstm = write_log(tmp_path / "lstm", [{"type": "val", "step": 500, "val_loss": -1.5,
                                          "val_ll_per_sequence": 990.0}])
    assert handwriting_main(["compare", str(oracle), str(lstm)]) == 0
    out = capsys.readouterr().out
    assert "| run | best step | val LL/sequence |" in out
    assert "| oracle | 500 | 1003.2 | 0.05 | 0.80 |" in out  # not the forced 1190 of step 250
    assert "| z1 in window | z1 word precision | z1 word lift | steps/s |" in out
    assert "| 0.30 | 4.00 | – |" in out
    assert "| lstm | 500 | 990.0 | – |" in out
    assert handwriting_main(["compare", str(oracle), "--json", "--steps", "499"]) == 2  # nothing free by then
    assert "none is free yet" in capsys.readouterr().err
    early = write_log(tmp_path / "early-lstm", [{"type": "val", "step": 250, "val_loss": -1.2,
                                                 "val_ll_per_sequence": 700.0}])
    assert handwriting_main(["compare", str(oracle), str(early), "--steps", "300"]) == 0  # a table of what qualifies
    captured = capsys.readouterr()
    assert "| early-lstm | 250 | 700.0 |" in captured.out and "| oracle |" not in captured.out
    assert captured.err.startswith("left out ") and "oracle: every validation so far forced" in captured.err
    forced_only = write_log(tmp_path / "early", [{"type": "val", "step": 250, "val_loss": -1.9, "val_oracle": 1.0}])
    assert handwriting_main(["compare", str(forced_only)]) == 2
    assert "none is free yet" in capsys.readouterr().err
