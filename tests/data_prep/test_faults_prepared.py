"""A prepared file whose arrays disagree is refused with one line when it is loaded; a run folder is locked
while a trainer writes to it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tests.factories import make_prepared

from data_prep.prepared_file import ARRAYS, write_prepared
from handwriting_hm.cli import main

SMALL = ["--preset", "tiny", "--hidden-sizes", "8,8", "--embedding-size", "8", "--n-mixtures", "2",
         "--batch-size", "8", "--crop-points", "0", "--validation-lines", "0", "--sample-points", "12",
         "--log-every", "1", "--device", "cpu", "--quiet", "--max-steps", "2"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("data"), n_forms=2)


def tampered(prepared: Path, folder: Path, change) -> Path:
    with np.load(prepared, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in ARRAYS}
        metadata = json.loads(str(archive["metadata"]))
    change(arrays)
    path = folder / "tampered.npz"
    write_prepared(path, arrays, metadata)
    return path


def start_past_the_end(arrays):
    arrays["starts"] = arrays["starts"].copy()
    arrays["starts"][5] = len(arrays["offsets"]) + 1000


def huge_last_start(arrays):
    arrays["starts"] = arrays["starts"].copy()
    arrays["starts"][-1] = 2**40


def offsets_left_over(arrays):
    arrays["offsets"] = np.concatenate([arrays["offsets"], np.zeros((10, 3), np.float32)])


def one_text_missing(arrays):
    arrays["texts"] = arrays["texts"][:-1]


def flat_offsets(arrays):
    arrays["offsets"] = arrays["offsets"].reshape(-1)


@pytest.mark.parametrize("change", [start_past_the_end, huge_last_start, offsets_left_over, one_text_missing,
                                   flat_offsets])
@pytest.mark.parametrize("command", ["summary", "train", "write"])
def test_a_prepared_file_whose_arrays_disagree_is_one_line(prepared, tmp_path, capsys, change, command):
    path = tampered(prepared, tmp_path, change)
    argv = {"summary": ["summary", str(path)],
            "train": ["train", "--data", str(path), "--run-dir", str(tmp_path / "run"), *SMALL],
            "write": ["write", "abc", "--style", "a00-000u-01", "--data", str(path), "--out", str(tmp_path / "a.svg")],
            }[command]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "the prepared file's arrays disagree" in error, error


def test_an_intact_prepared_file_loads(prepared, capsys):
    assert main(["summary", str(prepared)]) == 0


HOLD = """
import fcntl, sys, time
with open(sys.argv[1], "a+") as file:
    fcntl.flock(file.fileno(), fcntl.LOCK_EX)
    file.truncate(0); file.write("4242"); file.flush()
    print("held", flush=True)
    time.sleep(120)
"""


def test_a_second_trainer_in_a_locked_run_folder_is_refused(prepared, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--data", str(prepared), "--run-dir", str(run_dir), *SMALL]) == 2
        error = capsys.readouterr().err
        assert error.count("\n") == 1 and "in use by another trainer (process 4242" in error, error
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written beside the holder
    finally:
        holder.kill()
        holder.wait()
    # the holder gone (even killed), the lock is free: training runs
    assert main(["train", "--data", str(prepared), "--run-dir", str(run_dir), *SMALL]) == 0
    assert (run_dir / "best.pt").exists()


def test_the_lock_is_held_while_the_trainer_runs(prepared, tmp_path):
    """A trainer in a subprocess holds the lock: an attempt to take it while the trainer runs fails."""
    from handwriting_hm.hmlstm.run_lock import locked_run_dir

    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    trainer = subprocess.Popen([sys.executable, "-m", "handwriting_hm.cli", "train", "--data", str(prepared),
                                "--run-dir", str(run_dir), *SMALL[:-1], "100000"], env=env,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "log.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(ValueError, match=f"in use by another trainer \\(process {trainer.pid} holds"):
            with locked_run_dir(run_dir):
                pass
    finally:
        trainer.kill()
        trainer.wait()
    with locked_run_dir(run_dir):
        pass
