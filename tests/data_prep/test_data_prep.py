"""data_prep: parsing, cleaning, splits, bad input, atomic output, dataset, sampler and summary,
on tiny fixtures built here."""
from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data_prep.cleaning import CleaningConfig, cap_jumps, drop_duplicate_points, resample_strokes, to_offsets
from data_prep.iam_xml import _parse_strict, parse_strokes, parse_transcription
from data_prep.prepare import prepare
from data_prep.dataset import BucketBatchSampler, HandwritingDataset, StrokeBatch, collate_strokes
from data_prep.prepared_file import load_prepared
from data_prep.splits import paper_split
from data_prep.summary import draw_lines, summarise
from handwriting_hm.cli import main
from tests.factories import random_strokes, stroke_xml, transcription


def write_iam(root: Path, lines: dict[str, str], texts: dict[str, list[str]], lists: dict[str, list[str]]) -> dict[str, Path]:
    """Write lineStrokes/, ascii/ and splits/ folders the way the release lays them out."""
    for line_id, xml in lines.items():
        form = line_id.rsplit("-", 1)[0]
        path = root / "lineStrokes" / form[:3] / form[:7] / f"{line_id}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(xml, encoding="latin-1")
    for form, written in texts.items():
        path = root / "ascii" / form[:3] / form[:7] / f"{form}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(transcription(written))
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for name in ("trainset", "testset_v", "testset_t", "testset_f"):
        (root / "splits" / f"{name}.txt").write_text("".join(f" {form}\n" for form in lists.get(name, [])))
    return {"strokes": root / "lineStrokes", "ascii": root / "ascii", "splits": root / "splits"}


def pack(folder: Path, archive: Path) -> Path:
    mode = {".gz": "w:gz", ".xz": "w:xz"}[archive.suffix]
    with tarfile.open(archive, mode) as tar:
        tar.add(folder, arcname=folder.name)
    return archive


@pytest.fixture
def iam_small(tmp_path: Path) -> dict[str, Path]:
    """Two forms with three clean lines each, transcribed, one form per official list."""
    rng = np.random.default_rng(1)
    lines = {f"{form}-{k:02d}": stroke_xml(random_strokes(rng, 30 + 10 * k)) for form in ("a01-000u", "b02-010x") for k in (1, 2, 3)}
    texts = {"a01-000u": ["first line", "second, line", "third"], "b02-010x": ["Alpha", "Beta", "Gamma"]}
    return write_iam(tmp_path / "iam", lines, texts, {"trainset": ["a01-000u"], "testset_v": ["b02-010x"]})


def run_prepare(paths: dict[str, Path], out: Path, **kwargs):
    return prepare(paths["strokes"], paths["ascii"], out, paths["splits"], workers=1, progress=False, **kwargs)


# --- parsing -------------------------------------------------------------------------------------


def test_fast_and_strict_parsers_agree_and_mark_stroke_ends():
    xml = stroke_xml([[(10, 20), (11, 22), (13, 25)], [(40, 20)], [(50, 21), (52, 19)]]).encode()
    points, problems = parse_strokes(xml)
    strict, _ = _parse_strict(xml)
    assert problems == []
    np.testing.assert_array_equal(points, strict)
    np.testing.assert_array_equal(points[:, 2], [0, 0, 1, 1, 0, 1])
    np.testing.assert_array_equal(points[:, :2], [[10, 20], [11, 22], [13, 25], [40, 20], [50, 21], [52, 19]])


def test_unusual_layout_goes_through_the_strict_parser():
    xml = stroke_xml([[(10, 20), (11, 22)]]).replace('<Point x="11" y="22"', '<Point y="22" x="11"').encode()
    points, problems = parse_strokes(xml)
    np.testing.assert_array_equal(points, [[10, 20, 0], [11, 22, 1]])
    assert problems == []


def test_point_without_an_attribute_is_skipped_and_named():
    xml = stroke_xml([[(10, 20), (11, 22), (12, 23)]]).replace('<Point x="11" y="22"', '<Point x="11"').encode()
    points, problems = parse_strokes(xml)
    np.testing.assert_array_equal(points, [[10, 20, 0], [12, 23, 1]])
    assert problems == ["stroke 1 point 2: no 'y' attribute, point skipped"]


@pytest.mark.parametrize("data, reason", [(b"", "malformed XML"), (b"<a><b></a>", "malformed XML"), (b"<a/>", "no <StrokeSet>")])
def test_unusable_files_raise_a_clear_error(data, reason):
    with pytest.raises(ValueError, match=reason):
        parse_strokes(data)


def test_transcription_lines_come_from_the_csr_section_only():
    assert parse_transcription(transcription(["one", "", "two  "])) == ["one", "two"]
    with pytest.raises(ValueError, match="CSR"):
        parse_transcription("OCR:\n\nsome text\n")


def test_offsets_flip_y_and_start_at_zero():
    points = np.array([[10, 20, 0], [13, 16, 1], [20, 30, 1]], dtype=float)
    np.testing.assert_array_equal(to_offsets(points), [[0, 0, 0], [3, 4, 1], [7, -14, 1]])


# --- cleaning ------------------------------------------------------------------------------------


def test_duplicates_are_dropped_within_strokes_only():
    points = np.array([[1, 1, 0], [1, 1, 0], [2, 2, 0], [2, 2, 1], [2, 2, 0], [3, 3, 1]], dtype=float)
    cleaned = drop_duplicate_points(points)
    np.testing.assert_array_equal(cleaned, [[1, 1, 0], [2, 2, 1], [2, 2, 0], [3, 3, 1]])


def test_jump_capping_shortens_only_long_pen_down_steps():
    points = np.array([[0, 0, 0], [300, 400, 1], [2000, 0, 0], [2003, 4, 1]], dtype=float)
    capped = cap_jumps(points, 100.0)
    steps = np.diff(capped[:, :2], axis=0)
    np.testing.assert_allclose(steps, [[60, 80], [1700, -400], [3, 4]])  # the pen-up move stays


def test_resampling_spaces_samples_evenly_and_keeps_stroke_ends():
    points = np.array([[0, 0, 0], [10, 0, 1], [50, 50, 1]], dtype=float)
    resampled = resample_strokes(points, 2.5)
    np.testing.assert_allclose(resampled[:, 0], [0, 2.5, 5, 7.5, 10, 50])
    np.testing.assert_array_equal(resampled[:, 2], [0, 0, 0, 0, 1, 1])


def test_cleaning_steps_report_what_they_removed(tmp_path, iam_small):
    spike = [[(0, 0), (0, 0), (5, 5), (3000, 5), (3005, 5)]] + [[(10 * i, 0), (10 * i + 3, 1)] for i in range(20)]
    (iam_small["strokes"] / "a01" / "a01-000" / "a01-000u-02.xml").write_text(stroke_xml(spike))
    report = run_prepare(iam_small, tmp_path / "capped.npz", cleaning=CleaningConfig(drop_duplicates=True, max_jump=500))
    assert report.cleaning["duplicate_points_removed"] >= 1
    assert report.cleaning["jumps_capped"] == 1
    report = run_prepare(iam_small, tmp_path / "dropped.npz", cleaning=CleaningConfig(max_jump=500, jump_action="drop-line"))
    assert report.cleaning["lines_dropped_for_jumps"] == 1
    assert report.lines == 5
    assert ("a01-000u-02", "dropped by cleaning (pen-down jump over --max-jump)") in report.skipped


def test_cleaning_is_off_by_default(tmp_path, iam_small):
    report = run_prepare(iam_small, tmp_path / "out.npz")
    arrays, metadata = load_prepared(tmp_path / "out.npz")
    assert report.cleaning == {}
    assert report.points == int(arrays["raw_points"].sum()) == len(arrays["offsets"])
    assert metadata["settings"]["cleaning"] == {"drop_duplicates": False, "max_jump": None, "jump_action": "cap", "resample_step": None}


# --- splits --------------------------------------------------------------------------------------


def test_paper_split_is_90_5_5_of_long_lines_and_fixed_by_seed():
    n_points = np.r_[np.full(1000, 300), np.full(50, 299)]
    codes = paper_split(n_points)
    assert (codes[1000:] == -1).all()
    assert np.bincount(codes[:1000]).tolist() == [900, 50, 50]
    np.testing.assert_array_equal(codes, paper_split(n_points))
    assert not np.array_equal(codes, paper_split(n_points, seed=1))


def test_prepared_file_matches_lines_texts_and_official_lists(tmp_path, iam_small):
    report = run_prepare(iam_small, tmp_path / "out.npz", min_points=0)
    arrays, metadata = load_prepared(tmp_path / "out.npz")
    assert arrays["line_ids"].tolist() == sorted(arrays["line_ids"].tolist())
    by_id = dict(zip(arrays["line_ids"].tolist(), arrays["texts"].tolist()))
    assert by_id["a01-000u-02"] == "second, line" and by_id["b02-010x-03"] == "Gamma"
    assert arrays["forms"].tolist() == ["a01-000u"] * 3 + ["b02-010x"] * 3
    assert report.split_counts["official"]["train"] == 3 and report.split_counts["official"]["validation"] == 3
    assert report.split_counts["graves"] == {"train": 3, "validation": 3}
    assert sum(report.split_counts["paper"].values()) == 6
    assert set(metadata["stats"]) == {"paper", "official", "graves"}
    assert len(metadata["sources"]["strokes"]["sha256"]) == 64 and set(metadata["sources"]["split_lists"]) == {
        "trainset", "testset_v", "testset_t", "testset_f"}


def test_statistics_come_from_the_training_split_only(tmp_path):
    wide = [[(300 * k, 0), (300 * k + 100, 0), (300 * k + 200, 0)] for k in range(4)]  # every dx = 100
    narrow = [[(3 * k, 0), (3 * k + 1, 0), (3 * k + 2, 0)] for k in range(4)]  # every dx = 1
    paths = write_iam(tmp_path, {"a01-000u-01": stroke_xml(wide), "b02-010x-01": stroke_xml(narrow)},
                      {"a01-000u": ["a"], "b02-010x": ["b"]}, {"trainset": ["a01-000u"], "testset_v": ["b02-010x"]})
    run_prepare(paths, tmp_path / "out.npz", min_points=0)
    _, metadata = load_prepared(tmp_path / "out.npz")
    assert metadata["stats"]["official"] == {"mean": [100.0, 0.0], "std": [0.0, 0.0]}
    assert metadata["stats"]["graves"]["mean"][0] == 100.0


# --- sources and bad input -----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".gz", ".xz"])
def test_archives_give_the_same_file_as_folders(tmp_path, iam_small, suffix):
    run_prepare(iam_small, tmp_path / "folder.npz")
    packed = dict(iam_small, strokes=pack(iam_small["strokes"], tmp_path / f"lineStrokes.tar{suffix}"),
                  ascii=pack(iam_small["ascii"], tmp_path / f"ascii.tar{suffix}"))
    run_prepare(packed, tmp_path / "archive.npz")
    from_folder, _ = load_prepared(tmp_path / "folder.npz")
    from_archive, _ = load_prepared(tmp_path / "archive.npz")
    for name, array in from_folder.items():
        np.testing.assert_array_equal(array, from_archive[name])


def test_bad_items_are_skipped_and_listed(tmp_path, iam_small):
    folder = iam_small["strokes"] / "a01" / "a01-000"
    (folder / "a01-000u-01.xml").write_text("")
    (folder / "a01-000u-02.xml").write_text(stroke_xml([[(1, 2), (3, 4)]])[:200])  # truncated
    (folder / "a01-000u-09.xml").write_text(stroke_xml([[(1, 2), (3, 4)]]))  # no such CSR line
    (folder / "notes.xml").write_text(stroke_xml([[(1, 2)]]))
    orphan = iam_small["strokes"] / "c03" / "c03-000" / "c03-000a-01.xml"  # form without ascii file
    orphan.parent.mkdir(parents=True)
    orphan.write_text(stroke_xml([[(1, 2), (3, 4)]]))
    (iam_small["splits"] / "testset_f.txt").write_text(" zz9-999\n")
    report = run_prepare(iam_small, tmp_path / "out.npz", min_points=0)
    skipped = dict(report.skipped)
    assert "malformed XML" in skipped["a01/a01-000/a01-000u-01.xml"]
    assert "malformed XML" in skipped["a01/a01-000/a01-000u-02.xml"]
    assert "not <form>-<kk>.xml" in skipped["a01/a01-000/notes.xml"]
    assert skipped["testset_f.txt: zz9-999"] == "form has no line files"
    assert report.untranscribed == [("a01-000u-09", "a01-000u.txt has no CSR line 9 (it has 3)"),
                                    ("c03-000a-01", "no transcription file for form c03-000a")]
    assert report.lines == 6
    assert "a01-000u-09: a01-000u.txt has no CSR line 9 (it has 3)" in report.format()


def test_truncated_archive_is_an_error_unless_partial_is_allowed(tmp_path, iam_small):
    archive = pack(iam_small["strokes"], tmp_path / "lineStrokes.tar.gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{archive}: archive is damaged or ends early.*--allow-partial"):
        run_prepare(dict(iam_small, strokes=archive), tmp_path / "out.npz", min_points=0)
    assert not (tmp_path / "out.npz").exists()
    report = run_prepare(dict(iam_small, strokes=archive), tmp_path / "out.npz", min_points=0, allow_partial=True)
    assert 0 < report.lines < 6
    assert any("damaged or ends early" in why for item, why in report.skipped if item == str(archive))
    assert len(report.warnings) == 1 and str(archive) in report.warnings[0]


def xz_tar_cuts(archive: Path) -> list[bytes]:
    """The archive cut at 12 places from a tenth of it to its last byte."""
    data = archive.read_bytes()
    return [data[:cut] for cut in np.linspace(len(data) // 10, len(data) - 1, 12).astype(int)]


def plain_tar_cuts(archive: Path) -> list[bytes]:
    """The archive cut at every member header: tarfile reading a stream takes that for the end."""
    data = archive.read_bytes()
    with tarfile.open(archive) as tar:
        return [data[:member.offset] for member in tar.getmembers()[1:]]


@pytest.mark.parametrize("suffix, cuts", [(".tar.xz", xz_tar_cuts), (".tar", plain_tar_cuts)])
def test_an_archive_cut_anywhere_is_an_error_naming_it(tmp_path, iam_small, suffix, cuts):
    archive = tmp_path / f"lineStrokes{suffix}"
    with tarfile.open(archive, "w:xz" if suffix == ".tar.xz" else "w") as tar:
        tar.add(iam_small["strokes"], arcname="lineStrokes")
    for cut in cuts(archive):
        archive.write_bytes(cut)
        with pytest.raises(ValueError, match=f"{archive}: (archive is damaged or ends early|not a readable tar)"):
            run_prepare(dict(iam_small, strokes=archive), tmp_path / "out.npz", min_points=0)


def test_ascii_archive_cut_in_half_is_an_error_and_allow_partial_keeps_lines_untranscribed(tmp_path, iam_small, capsys):
    rng = np.random.default_rng(0)
    for k in range(40):  # forms without lines, archived between a01's and b02's: the cut lands in them
        filler = iam_small["ascii"] / "a50" / f"a50-{k:03d}" / f"a50-{k:03d}u.txt"
        filler.parent.mkdir(parents=True)
        filler.write_text(transcription(["".join(rng.choice(list("abcdefghij klmnop"), 2000))]))
    archive = pack(iam_small["ascii"], tmp_path / "ascii.tar.xz")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    command = ["prepare", "--strokes", str(iam_small["strokes"]), "--ascii", str(archive), "--splits",
               str(iam_small["splits"]), "--out", str(tmp_path / "out.npz"), "--no-progress", "--workers", "1"]
    assert main(command) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{archive}: archive is damaged or ends early" in error
    assert not (tmp_path / "out.npz").exists()
    assert main(command + ["--allow-partial"]) == 0
    printed = capsys.readouterr()
    assert printed.err.count("\n") == 1 and printed.err.startswith("handwriting-hm prepare: warning: incomplete input")
    arrays, metadata = load_prepared(tmp_path / "out.npz")
    assert arrays["texts"].tolist() == ["first line", "second, line", "third", "", "", ""]
    assert metadata["report"]["warnings"] and ["testset_v.txt: b02-010x", "listed form has line files but no "
                                               "transcription file"] in metadata["report"]["incomplete"]


@pytest.mark.parametrize("missing", ["transcription", "line files"])
def test_a_listed_form_missing_its_transcription_or_lines_is_an_error(tmp_path, iam_small, missing):
    if missing == "transcription":
        (iam_small["ascii"] / "b02" / "b02-010" / "b02-010x.txt").unlink()
    else:
        for line in (iam_small["strokes"] / "b02" / "b02-010").iterdir():
            line.unlink()
    with pytest.raises(ValueError, match=f"testset_v.txt: b02-010x: listed form has .*{missing}.*--allow-partial"):
        run_prepare(iam_small, tmp_path / "out.npz", min_points=0)
    report = run_prepare(iam_small, tmp_path / "out.npz", min_points=0, allow_partial=True)
    assert report.lines == (6 if missing == "transcription" else 3)
    assert len(report.warnings) == 1 and "b02-010x" in report.warnings[0]


def test_lines_with_non_finite_or_absurd_coordinates_are_dropped_listed_and_warned(tmp_path, iam_small, capsys):
    folder = iam_small["strokes"] / "a01" / "a01-000"
    for name, value in [("a01-000u-01.xml", "nan"), ("a01-000u-02.xml", "1e300")]:
        xml = (folder / name).read_text()
        (folder / name).write_text(xml.replace('<Point x="', f'<Point x="{value}" y="5" time="1.00"/><Point x="', 1))
    out = tmp_path / "out.npz"
    code = main(["prepare", "--strokes", str(iam_small["strokes"]), "--ascii", str(iam_small["ascii"]),
                 "--splits", str(iam_small["splits"]), "--out", str(out), "--no-progress", "--workers", "1",
                 "--min-points", "0"])
    printed = capsys.readouterr()
    assert code == 0
    assert printed.err.count("\n") == 1 and printed.err.startswith(
        "handwriting-hm prepare: warning: dropped 2 line file(s) with a non-finite or absurd coordinate")
    assert "a01-000u-01.xml: sample 1: x = nan" in printed.err and "a01-000u-02.xml: sample 1: x = 1e+300" in printed.err
    assert "a01/a01-000/a01-000u-01.xml: sample 1: x = nan is non-finite" in printed.out  # the summary lists them
    arrays, metadata = load_prepared(out)
    assert arrays["line_ids"].tolist() == ["a01-000u-03", "b02-010x-01", "b02-010x-02", "b02-010x-03"]
    assert np.isfinite(arrays["offsets"]).all()
    assert all(np.isfinite(stats["mean"] + stats["std"]).all() for stats in metadata["stats"].values())
    assert "warning at preparation: dropped 2 line file(s) with a non-finite or absurd coordinate" in summarise(out)


@pytest.mark.parametrize("problem", ["garbage archive", "no lines", "missing source", "missing split lists"])
def test_fatal_problems_raise_and_leave_the_old_file_alone(tmp_path, iam_small, problem):
    out = tmp_path / "out.npz"
    run_prepare(iam_small, out)
    good = out.read_bytes()
    if problem == "garbage archive":
        (tmp_path / "bad.tar.xz").write_bytes(b"this is not an archive" * 10)
        paths = dict(iam_small, strokes=tmp_path / "bad.tar.xz")
    elif problem == "no lines":
        (tmp_path / "empty").mkdir()
        paths = dict(iam_small, strokes=tmp_path / "empty")
    elif problem == "missing source":
        paths = dict(iam_small, strokes=tmp_path / "nowhere")
    else:
        paths = dict(iam_small, splits=tmp_path / "no_splits")
    with pytest.raises((ValueError, OSError)):
        run_prepare(paths, out)
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("target", ["strokes archive", "link to the ascii archive", "split list", "file in a source folder"])
def test_output_onto_an_input_is_refused_and_the_input_kept(tmp_path, iam_small, capsys, target):
    packed = dict(iam_small, strokes=pack(iam_small["strokes"], tmp_path / "lineStrokes.tar.xz"),
                  ascii=pack(iam_small["ascii"], tmp_path / "ascii.tar.xz"))
    if target == "strokes archive":
        out = packed["strokes"]
    elif target == "link to the ascii archive":
        out = tmp_path / "link.npz"
        out.symlink_to(packed["ascii"])
    elif target == "split list":
        out = packed["splits"] / "trainset.txt"
    else:
        packed["ascii"] = iam_small["ascii"]
        out = iam_small["ascii"] / "a01" / "a01-000" / "a01-000u.txt"
    before = out.read_bytes()
    code = main(["prepare", "--strokes", str(packed["strokes"]), "--ascii", str(packed["ascii"]),
                 "--splits", str(packed["splits"]), "--out", str(out), "--no-progress", "--workers", "1"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and f"{out}: is the input" in error
    assert out.read_bytes() == before


def test_an_extended_header_over_the_size_limit_is_an_error(tmp_path, iam_small):
    strokes = tmp_path / "lineStrokes.tar.xz"
    pax = tarfile.TarInfo("PaxHeader/a01-000u-04.xml")
    pax.type, pax.size = tarfile.XHDTYPE, 400 << 20  # tarfile would read all of it into memory
    with tarfile.open(strokes, "w:xz", preset=0) as tar:
        tar.add(iam_small["strokes"], arcname="lineStrokes")
        tar.fileobj.write(pax.tobuf())
    with pytest.raises(ValueError, match=re.escape(f"{strokes}: archive is damaged or ends early after 6 .xml files "
                                                   "(an extended header of 419,430,400 bytes, over the 16,777,216")):
        run_prepare(dict(iam_small, strokes=strokes), tmp_path / "out.npz", min_points=0)


@pytest.mark.parametrize("where", ["archive", "header only", "folder"])
def test_a_file_over_the_size_limit_is_an_error_naming_it(tmp_path, iam_small, where):
    """A few KB of xz can hold hundreds of MB of zeros: the size is checked before reading."""
    size = (400 << 20) if where == "header only" else (17 << 20)
    if where == "folder":
        strokes, name = iam_small["strokes"], "a01/a01-000/a01-000u-04.xml"
        (strokes / name).write_bytes(bytes(size))
    else:
        strokes, name = tmp_path / "lineStrokes.tar.xz", "lineStrokes/a01/a01-000/a01-000u-04.xml"
        header = tarfile.TarInfo(name)
        header.size = size
        with tarfile.open(strokes, "w:xz", preset=0) as tar:
            tar.add(iam_small["strokes"], arcname="lineStrokes")
            if where == "archive":
                tar.addfile(header, io.BytesIO(bytes(size)))
            else:  # the header alone, then the archive's end: none of the 400 MiB is there to read
                tar.fileobj.write(header.tobuf())
    with pytest.raises(ValueError, match=re.escape(f"{strokes}: {name} is {size:,} bytes, over the 16,777,216-byte limit")):
        run_prepare(dict(iam_small, strokes=strokes), tmp_path / "out.npz", min_points=0)


def test_interrupted_write_leaves_no_partial_file(tmp_path, iam_small, monkeypatch):
    out = tmp_path / "out.npz"
    run_prepare(iam_small, out)
    good = out.read_bytes()

    def interrupted(file, **arrays):
        file.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr("data_prep.prepared_file.np.savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_prepare(iam_small, out)
    assert out.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iam", "out.npz"]  # no temporary left


def test_worker_pool_gives_the_same_file(tmp_path, iam_small):
    prepare(iam_small["strokes"], iam_small["ascii"], tmp_path / "one.npz", iam_small["splits"], workers=1, progress=False)
    prepare(iam_small["strokes"], iam_small["ascii"], tmp_path / "two.npz", iam_small["splits"], workers=2, progress=False)
    one, _ = load_prepared(tmp_path / "one.npz")
    two, _ = load_prepared(tmp_path / "two.npz")
    for name, array in one.items():
        np.testing.assert_array_equal(array, two[name])


# A child process runs `handwriting-hm prepare` with parse_strokes replaced by `PARSE_HOOK`, in
# its own process group, so that a hang is a test failure (the group is killed) and not a hung test.
CHILD_PREPARE = """
import os, signal, sys, time
import data_prep.line_parsing as line_parsing
from handwriting_hm.cli import main
real_parse = line_parsing.parse_strokes
def hooked_parse(data):
{hook}
    return real_parse(data)
line_parsing.parse_strokes = hooked_parse
sys.exit(main(["prepare", "--strokes", {strokes!r}, "--ascii", {ascii!r}, "--out", {out!r},
               "--no-progress", "--workers", "2"]))
"""


def start_child_prepare(paths: dict[str, Path], out: Path, hook: str) -> subprocess.Popen:
    script = CHILD_PREPARE.format(hook=textwrap.indent(textwrap.dedent(hook), "    "), strokes=str(paths["strokes"]),
                                  ascii=str(paths["ascii"]), out=str(out))
    # Ctrl-C's default disposition in the child, as in a terminal: a shell's background job (CI under
    # nohup, say) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(child: subprocess.Popen, timeout: float = 60.0) -> tuple[int, str]:
    """(exit code, stderr) of the child; kills its whole group and fails if it does not end in time."""
    try:
        _, error = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        pytest.fail(f"prepare still running after {timeout} s: it hangs")
    return child.returncode, error


def no_process_left(group: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(group, signal.SIGKILL)
    return False


def test_a_killed_worker_ends_the_run_with_one_line(tmp_path, iam_small):
    victim = iam_small["strokes"] / "a01" / "a01-000" / "a01-000u-02.xml"
    victim.write_text(victim.read_text().replace("<StrokeSet>", "<!-- kill the worker --><StrokeSet>"))
    hook = """
    if b"kill the worker" in data:
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
    """
    child = start_child_prepare(iam_small, tmp_path / "out.npz", hook)
    code, error = finish(child)
    assert code == 2 and error.count("\n") == 1, error
    assert error.startswith("handwriting-hm: error: a parsing process died")
    assert not (tmp_path / "out.npz").exists()
    assert no_process_left(child.pid)


def test_ctrl_c_ends_the_run_with_one_line_and_leaves_no_worker(tmp_path, iam_small):
    started = tmp_path / "parsing-started"
    hook = f"""
    open({str(started)!r}, "a").close()
    time.sleep(1.0)  # slow enough that Ctrl-C lands while the workers are busy
    """
    child = start_child_prepare(iam_small, tmp_path / "out.npz", hook)
    deadline = time.monotonic() + 60
    while not started.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), child.communicate()
    os.killpg(child.pid, signal.SIGINT)  # a terminal sends Ctrl-C to the whole foreground group
    code, error = finish(child)
    assert (code, error) == (130, "handwriting-hm: interrupted\n")
    assert not (tmp_path / "out.npz").exists()
    assert no_process_left(child.pid)


# --- command line --------------------------------------------------------------------------------


def test_cli_prepares_and_reports(tmp_path, iam_small, capsys):
    out = tmp_path / "out.npz"
    code = main(["prepare", "--strokes", str(iam_small["strokes"]), "--ascii", str(iam_small["ascii"]),
                 "--splits", str(iam_small["splits"]), "--out", str(out), "--no-progress", "--workers", "1",
                 "--drop-duplicates", "--min-points", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}: 6 lines" in printed and "official: train 3, validation 3" in printed
    _, metadata = load_prepared(out)
    assert metadata["settings"]["cleaning"]["drop_duplicates"] is True
    assert json.loads(json.dumps(metadata["report"]))["lines"] == 6


def test_cli_fatal_error_is_one_line_and_exit_2(tmp_path, iam_small, capsys):
    code = main(["prepare", "--strokes", str(tmp_path / "nowhere.tar.gz"), "--ascii", str(iam_small["ascii"]),
                 "--out", str(tmp_path / "out.npz"), "--no-progress"])
    error = capsys.readouterr().err
    assert code == 2
    assert error.count("\n") == 1 and "nowhere.tar.gz: no such file or folder" in error
    assert not (tmp_path / "out.npz").exists()


# --- dataset, sampler, summary -------------------------------------------------------------------


@pytest.fixture
def iam_prepared(tmp_path: Path) -> Path:
    """40 lines of 20 to 99 samples over 4 forms (one per official list), prepared."""
    rng = np.random.default_rng(0)
    forms = ["a01-000u", "b01-000u", "c01-000u", "d01-000u"]
    lines = {f"{form}-{k:02d}": stroke_xml(random_strokes(rng, int(rng.integers(20, 100))))
             for form in forms for k in range(1, 11)}
    texts = {form: [f"{form} line {k}" for k in range(1, 11)] for form in forms}
    lists = {"trainset": ["a01-000u"], "testset_v": ["b01-000u"], "testset_t": ["c01-000u"], "testset_f": ["d01-000u"]}
    paths = write_iam(tmp_path / "iam", lines, texts, lists)
    out = tmp_path / "iam.npz"
    prepare(paths["strokes"], paths["ascii"], out, paths["splits"], min_points=0, workers=1, progress=False)
    return out


def test_items_are_normalised_with_the_schemes_training_statistics(iam_prepared):
    arrays, metadata = load_prepared(iam_prepared)
    for scheme, split in [("paper", "train"), ("official", "testset_t"), ("graves", "validation")]:
        ds = HandwritingDataset(iam_prepared, split=split, scheme=scheme)
        mean, std = np.array(metadata["stats"][scheme]["mean"]), np.array(metadata["stats"][scheme]["std"])
        assert ds.stats == {"mean": tuple(mean), "std": tuple(std)}
        offsets, text = ds[0]
        row = arrays["line_ids"].tolist().index(ds.line_ids[0])
        raw = arrays["offsets"][arrays["starts"][row] : arrays["starts"][row + 1]]
        assert offsets.dtype == torch.float32 and offsets.shape == (ds.lengths[0], 3)
        np.testing.assert_allclose(offsets[:, :2].numpy(), (raw[:, :2] - mean) / std, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(offsets[:, 2].numpy(), raw[:, 2])
        assert text == arrays["texts"][row]
        np.testing.assert_allclose(ds.denormalise(offsets).numpy(), raw, atol=1e-3)


def test_splits_select_the_right_lines(iam_prepared):
    assert len(HandwritingDataset(iam_prepared, "train", "official")) == 10
    assert len(HandwritingDataset(iam_prepared, "train", "graves")) == 30  # trainset + testset_t + testset_f
    paper = [HandwritingDataset(iam_prepared, split, "paper") for split in ("train", "validation", "test")]
    assert [len(ds) for ds in paper] == [36, 2, 2]
    assert not set(paper[0].line_ids) & set(paper[2].line_ids)
    train = HandwritingDataset(iam_prepared, "train", "graves")
    all_train_rows = torch.cat([train[i][0] for i in range(len(train))])[:, :2]
    assert abs(float(all_train_rows.mean())) < 0.1  # normalised on its own training lines


@pytest.mark.parametrize("scheme, split, message", [("nope", "train", "unknown split scheme"),
                                                    ("graves", "test", "has no split 'test'"),
                                                    ("paper", "testset_v", "has no split")])
def test_bad_scheme_or_split_is_a_clear_error(iam_prepared, scheme, split, message):
    with pytest.raises(ValueError, match=message):
        HandwritingDataset(iam_prepared, split, scheme)


def test_not_a_prepared_file_is_a_clear_error(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a prepared IAM-OnDB file"):
        HandwritingDataset(tmp_path / "junk.npz")


def test_collate_pads_with_zeros_and_masks_real_steps():
    items = [(torch.ones(3, 3), "abc"), (torch.full((5, 3), 2.0), "de")]
    batch = collate_strokes(items)
    assert isinstance(batch, StrokeBatch)
    assert batch.offsets.shape == (2, 5, 3) and batch.offsets.dtype == torch.float32
    assert batch.lengths.tolist() == [3, 5] and batch.lengths.dtype == torch.int64
    assert batch.mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch.offsets[0, 3:].abs().sum() == 0 and batch.offsets[1].eq(2).all()
    assert batch.texts == ["abc", "de"]


def test_bucket_sampler_covers_every_index_once_and_wastes_little_padding():
    lengths = np.random.default_rng(0).integers(50, 1500, size=1000)
    sampler = BucketBatchSampler(lengths, batch_size=32, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 32
    assert sorted(i for batch in batches for i in batch) == list(range(1000))
    padded = sum(len(batch) * lengths[batch].max() for batch in batches)
    assert lengths.sum() / padded > 0.9  # random batches of 32 would be near 0.55


def test_bucket_sampler_epochs_are_reproducible_and_differ():
    lengths = np.arange(100)
    sampler = BucketBatchSampler(lengths, batch_size=8, seed=1)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    again = BucketBatchSampler(lengths, batch_size=8, seed=1)
    again.set_epoch(1)
    assert list(again) == second != first


def test_bucket_sampler_drop_last_and_no_shuffle():
    lengths = [5, 1, 4, 2, 3]
    assert list(BucketBatchSampler(lengths, 2, shuffle=False)) == [[1, 3], [4, 2], [0]]
    dropped = BucketBatchSampler(lengths, 2, drop_last=True)
    assert len(dropped) == 2 and all(len(batch) == 2 for batch in dropped)


def test_dataloader_with_sampler_and_collate(iam_prepared):
    ds = HandwritingDataset(iam_prepared, "train", "graves")
    loader = DataLoader(ds, batch_sampler=BucketBatchSampler(ds.lengths, 8), collate_fn=collate_strokes)
    batches = list(loader)
    assert sum(len(batch.texts) for batch in batches) == len(ds)
    assert all(batch.mask.sum(1).tolist() == batch.lengths.tolist() for batch in batches)


def test_summary_names_counts_lengths_and_alphabet(iam_prepared, tmp_path, capsys):
    text = summarise(iam_prepared)
    assert "graves: train" in text and "  train          30 lines" in text
    arrays, _ = load_prepared(iam_prepared)
    alphabet = "".join(sorted(set("".join(arrays["texts"].tolist()))))
    assert f"alphabet ({len(alphabet)} symbols): {alphabet!r}" in text
    code = main(["summary", str(iam_prepared), "--png", str(tmp_path / "lines.png"), "--lines", "3"])
    assert code == 0
    png = (tmp_path / "lines.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out.count("drew ") == 1


def test_drawing_returns_the_drawn_line_ids(iam_prepared, tmp_path):
    drawn = draw_lines(iam_prepared, tmp_path / "x.png", count=2, seed=5)
    arrays, _ = load_prepared(iam_prepared)
    assert len(drawn) == 2 and set(drawn) <= set(arrays["line_ids"].tolist())
