"""data_prep on the real IAM-OnDB copy in $HANDWRITING_HM_DATA/iam_ondb (skipped, saying where it looked, when it
is absent; the folder defaults to shared/data beside the repository).

One full preparation (about 30 s on 2 cores) is shared by the tests of this module.
"""
from __future__ import annotations

import csv
import tarfile

import numpy as np
import pytest

from data_prep.dataset import HandwritingDataset
from data_prep.iam_xml import _parse_fast, _parse_strict
from data_prep.prepare import prepare
from data_prep.prepared_file import load_prepared
from data_prep.splits import select
from tests.real_data import DATA, not_found

IAM = DATA / "iam_ondb"
STROKES, ASCII, SPLITS = IAM / "lineStrokes-all.tar.xz", IAM / "ascii-all.tar.xz", IAM / "splits"

pytestmark = [pytest.mark.slow, pytest.mark.skipif(  # slow: one full preparation of the release
    not (STROKES.exists() and ASCII.exists() and SPLITS.is_dir()),
    reason=not_found("real IAM-OnDB data", "iam_ondb"),
)]


@pytest.fixture(scope="module")
def iam_real_prepared(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("iam_real") / "iam_ondb.npz"
    report = prepare(STROKES, ASCII, out, SPLITS, progress=False)
    arrays, metadata = load_prepared(out)
    return out, report, arrays, metadata


def test_paper_split_has_the_papers_counts_and_mean_length(iam_real_prepared):
    _, report, arrays, _ = iam_real_prepared
    assert report.lines == 12195 and report.skipped == []
    assert report.split_counts["paper"] == {"train": 10465, "validation": 581, "test": 582}
    in_paper = arrays["paper_split"] >= 0
    assert in_paper.sum() == 11628
    assert arrays["raw_points"][in_paper].mean() == pytest.approx(648.4, abs=0.05)
    assert arrays["raw_points"][in_paper].min() == 300


def test_official_and_graves_splits_have_the_published_counts(iam_real_prepared):
    _, report, _, _ = iam_real_prepared
    official = report.split_counts["official"]
    assert [official[name] for name in ("trainset", "testset_v", "testset_t", "testset_f")] == [5364, 1438, 1518, 3859]
    assert report.split_counts["graves"] == {"train": 5364 + 1518 + 3859, "validation": 1438}


def test_every_line_matches_the_reference_table(iam_real_prepared):
    _, report, arrays, _ = iam_real_prepared
    with open(IAM / "lines.tsv", encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    assert arrays["line_ids"].tolist() == sorted(row[0] for row in rows)
    by_id = {row[0]: row for row in rows}
    for line_id, n_points, text in zip(arrays["line_ids"].tolist(), arrays["raw_points"].tolist(), arrays["texts"].tolist()):
        assert (n_points, text) == (int(by_id[line_id][4]), by_id[line_id][5])
    assert sorted(line_id for line_id, _ in report.untranscribed) == ["a08-551z-09"] + [f"z01-000z-0{k}" for k in range(2, 9)]
    assert len(set("".join(arrays["texts"].tolist()))) == 82


def test_metadata_holds_checksums_and_training_statistics(iam_real_prepared):
    _, _, arrays, metadata = iam_real_prepared
    assert metadata["sources"]["strokes"]["sha256"] == "65864e5357e9b410886a80a317cd2ad9ced410511f56b196a50e0a970eb53ee0"
    assert metadata["sources"]["transcriptions"]["sha256"] == "c90beaa6ff57e41f662eac089b4c5b2ac865647b5047013919ba1d41dced17a2"
    train = np.flatnonzero(select("paper", "train", arrays["paper_split"], arrays["official_list"]))
    starts = arrays["starts"]
    rows = np.concatenate([np.arange(starts[i] + 1, starts[i + 1]) for i in train])
    np.testing.assert_allclose(metadata["stats"]["paper"]["mean"], arrays["offsets"][rows, :2].astype(np.float64).mean(0), rtol=1e-9)


def test_dataset_gives_the_first_line_with_its_text(iam_real_prepared):
    out, _, _, _ = iam_real_prepared
    ds = HandwritingDataset(out, "train", "graves")
    index = ds.line_ids.index("a01-000u-01")
    offsets, text = ds[index]
    assert text == "A MOVE to stop Mr . Gaitskell"
    assert offsets.shape == (ds.lengths[index], 3) and int(offsets[:, 2].sum()) > 10


def test_fast_parser_agrees_with_the_strict_parser_on_real_files():
    checked = 0
    with tarfile.open(STROKES, "r|*") as archive:
        for member in archive:
            if member.isfile() and member.name.endswith(".xml"):
                data = archive.extractfile(member).read()
                fast = _parse_fast(data)
                assert fast is not None, member.name
                np.testing.assert_array_equal(fast, _parse_strict(data)[0])
                checked += 1
                if checked == 200:
                    break
    assert checked == 200


@pytest.mark.parametrize("which, cut", [("strokes", 1 << 20), ("ascii", ASCII.stat().st_size // 2 if ASCII.exists() else 0)])
def test_a_cut_real_archive_is_an_error_naming_it(tmp_path, which, cut):
    """The probe's cases: the strokes archive cut early, and the ascii archive cut in half."""
    source = STROKES if which == "strokes" else ASCII
    cut_archive = tmp_path / source.name
    with open(source, "rb") as file:
        cut_archive.write_bytes(file.read(cut))
    strokes, ascii_ = (cut_archive, ASCII) if which == "strokes" else (STROKES, cut_archive)
    with pytest.raises(ValueError, match=f"{cut_archive}: archive is damaged or ends early"):
        prepare(strokes, ascii_, tmp_path / "out.npz", SPLITS, progress=False)
    assert not (tmp_path / "out.npz").exists()
