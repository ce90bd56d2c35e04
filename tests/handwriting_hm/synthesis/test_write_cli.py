"""`handwriting-hm write`: plotter SVG, PNG and JSON, multi-line layout, the letters picture, one-line errors."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from tests.factories import write_tiny_checkpoint

from handwriting_hm.cli import main
from handwriting_hm.hmlstm.detectors import alignment_line, event_alignment
from handwriting_hm.letter_boundaries import format_hits, word_boundary_hits, word_ends
from handwriting_hm.synthesis.write import write, write_each, write_lines
from tests.write_factory import write_quarter_character_checkpoint

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny synthesis model whose window moves a quarter character a point: it writes any text in ~4 points
    a character and stops."""
    return write_quarter_character_checkpoint(tmp_path_factory.mktemp("synthesis") / "synthesis.pt")


def test_the_svg_has_one_unfilled_path_per_pen_down_stroke(checkpoint, tmp_path, capsys):
    out = tmp_path / "line.svg"
    assert main(["write", "abc def", "--checkpoint", str(checkpoint), "--out", str(out), "--seed", "2"]) == 0
    svg = ElementTree.parse(out).getroot()
    paths = list(svg.iter(SVG + "path"))
    page = write_lines("abc def", checkpoint, seed=2)
    strokes = int(page.offsets[:, 2].sum())  # every stroke, the last included, ends with a pen-up
    assert len(paths) == strokes > 1
    assert all(path.get("fill") == "none" and path.get("stroke") for path in paths)
    assert [element.tag for element in svg if element.tag != SVG + "defs"] == [SVG + "path"] * strokes  # no background
    assert all(path.get("d").startswith("M") and "M" not in path.get("d")[1:] for path in paths)  # one pen-down each
    assert "line.svg: 1 line(s)" in capsys.readouterr().out


def test_multi_line_text_is_written_in_one_batch_wrapped_and_left_aligned(checkpoint, tmp_path):
    page = write_lines("abc def ghij\nhi", checkpoint, width=8, seed=1)
    assert [line.text for line in page.lines] == ["abc def", "ghij", "hi"]
    assert [points[:, 0].min() for points in page.points] == pytest.approx([0.0, 0.0, 0.0])
    tops = [np.median(points[:, 1]) for points in page.points]
    assert tops[0] > tops[1] > tops[2]
    # the batch writes each line as `write_each` does, and one text as `write` does
    assert all(np.array_equal(a.offsets, b.offsets)
               for a, b in zip(page.lines, write_each(["abc def", "ghij", "hi"], checkpoint, seed=1)))
    assert np.array_equal(write_each(["hi"], checkpoint, seed=4)[0].offsets, write("hi", checkpoint, seed=4).offsets)
    centred = write_lines("abc def ghij\nhi", checkpoint, width=8, seed=1, align="centre")
    assert [(p[:, 0].min() + p[:, 0].max()) / 2 for p in centred.points] == pytest.approx([0.0, 0.0, 0.0])

    out = tmp_path / "page.json"
    assert main(["write", "abc def ghij\\nhi", "--checkpoint", str(checkpoint), "--out", str(out), "--width", "8",
                 "--seed", "1", "--align", "centre", "--line-spacing", "2"]) == 0
    document = json.loads(out.read_text())
    assert document["text"] == "abc def ghij\nhi" and document["parameters"]["align"] == "centre"
    first = document["lines"][0]
    assert first["text"] == "abc def" and np.allclose(first["offsets"], page.lines[0].offsets)  # raw strokes
    assert len(first["attended_characters"]) == len(first["offsets"]) == len(first["page_points"])
    assert set(first["attended_characters"]) <= set("abc def") and first["attended_characters"][0] == "a"
    png = tmp_path / "page.png"
    assert main(["write", "abc\nhi", "--checkpoint", str(checkpoint), "--out", str(png), "--straighten"]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_the_boundaries_picture_labels_the_characters_and_marks_the_firings(checkpoint, tmp_path):
    out = tmp_path / "letters.svg"
    assert main(["write", "abc hij", "--checkpoint", str(checkpoint), "--out", str(out), "--boundaries",
                 "--bias", "1"]) == 0
    svg = ElementTree.parse(out).getroot()
    labels = [text.text for group in svg.iter(SVG + "g") if group.get("class") == "letters"
              for text in group.iter(SVG + "text")]
    written = write("abc hij", checkpoint, bias=1.0)
    assert labels == [c for c in np.array(list("abc hij"))[np.unique(written.attended)] if c != " "]
    assert set(labels) >= set("ahj")
    firings = {group.get("class"): len(list(group)) for group in svg.iter(SVG + "g")
               if "firings" in (group.get("class") or "")}
    assert firings == {"z1-firings": int(written.boundaries[:, 0].sum()),
                       "z2-firings": int(written.boundaries[:, 1].sum())}
    png = tmp_path / "letters.png"
    assert main(["write", "abc hij", "--checkpoint", str(checkpoint), "--out", str(png), "--boundaries"]) == 0
    assert png.read_bytes().startswith(b"\x89PNG")


def test_user_errors_are_one_line(checkpoint, tmp_path, capsys):
    def error(*arguments: str) -> str:
        assert main(["write", *arguments]) == 2
        message = capsys.readouterr().err
        assert message.count("\n") == 1, message
        return message

    out = str(tmp_path / "x.svg")
    assert "cannot write 'Q', 'Z'" in error("abQZ", "--checkpoint", str(checkpoint), "--out", out)
    unconditional = write_tiny_checkpoint(tmp_path / "unconditional.pt")
    message = error("abc", "--checkpoint", str(unconditional), "--out", out)
    assert "'handwriting' model" in message and "handwriting-hm sample" in message
    assert "needs --data" in error("abc", "--checkpoint", str(checkpoint), "--out", out, "--style", "a01-000u-01")
    assert "extension" in error("abc", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.gif"))
    assert "width" in error("abc", "--checkpoint", str(checkpoint), "--out", out, "--width", "0")
    assert "picture" in error("abc", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "x.json"), "--boundaries")
    assert not (tmp_path / "x.svg").exists()


def test_without_checkpoint_the_shipped_model_writes_or_one_line_says_it_is_missing(checkpoint, tmp_path, monkeypatch,
                                                                                    capsys):
    import handwriting_hm.synthesis.write as write_module

    out = tmp_path / "x.json"
    monkeypatch.setattr(write_module, "DEFAULT_SYNTHESIS_MODEL", checkpoint)
    assert main(["write", "abc", "--out", str(out), "--seed", "3"]) == 0
    written = json.loads(out.read_text())["lines"][0]["offsets"]
    assert np.allclose(written, write("abc", checkpoint, seed=3).offsets)
    monkeypatch.setattr(write_module, "DEFAULT_SYNTHESIS_MODEL", tmp_path / "absent.pt")
    capsys.readouterr()
    assert main(["write", "abc", "--out", str(out)]) == 2
    message = capsys.readouterr().err
    assert "is not installed" in message and "--checkpoint" in message and message.count("\n") == 1


def test_a_style_file_primes_the_writing(checkpoint, tmp_path):
    style = tmp_path / "style.json"
    style.write_text(json.dumps({"text": "ab", "strokes": [[[0, 0], [10, -20], [20, 0]], [[30, 0], [35, 5]]]}))
    out = tmp_path / "styled.json"
    assert main(["write", "hij", "--checkpoint", str(checkpoint), "--out", str(out), "--style-file", str(style),
                 "--bias", "50", "--temperature", "0.0001"]) == 0
    plain = write("hij", checkpoint, bias=50.0, temperature=1e-4)
    styled = json.loads(out.read_text())["lines"][0]
    assert not np.allclose(np.array(styled["offsets"])[:3], plain.offsets[:3])


def test_letters_reports_firings_at_character_and_word_ends_against_chance(checkpoint, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("abc def\n\nhij a\n")
    assert main(["letters", "b c d", "--texts-file", str(texts), "--checkpoint", str(checkpoint),
                 "--tolerance", "1"]) == 0
    report = capsys.readouterr().out.splitlines()
    assert report[0] == "3 texts written, 0 stopped at the step cap"
    written = write_each(["b c d", "abc def", "hij a"], checkpoint, bias=1.0)
    hits = word_boundary_hits([(line.boundaries[:, 1], line.attended, line.text) for line in written], 1)
    assert report[3] == format_hits("z2", hits, "word", 1) and "chance" in report[3]
    assert report[1].startswith("z1: ") and "character end" in report[1]
    # precision, recall and lift: the lines laid end to end, each word's last point an event
    fired = np.concatenate([line.boundaries[:, 1] > 0.5 for line in written])
    events = np.zeros(len(fired), dtype=bool)
    start = 0
    for line in written:
        events[start + word_ends(line.attended, line.text)] = True
        start += len(line.boundaries)
    figures = event_alignment(fired, events, before=1, after=1)
    assert report[4] == "  " + alignment_line("z2", figures, "points", "within 1 points of a word end")
    assert f"recall {figures['recall']:.2f}" in report[4] and "lift" in report[4]
    assert report[2].startswith("  z1: fires at") and "of a character end" in report[2]
    assert main(["letters", "--checkpoint", str(checkpoint)]) == 2
    assert "give texts" in capsys.readouterr().err
