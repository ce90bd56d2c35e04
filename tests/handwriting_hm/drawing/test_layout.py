"""Multi-line layout of written text: wrapping at word boundaries, left-aligned and centred lines, spacing."""
from __future__ import annotations

import numpy as np
import pytest

from handwriting_hm.drawing.geometry import offsets_to_points
from handwriting_hm.synthesis.write import WrittenPage, WrittenText, lay_out, wrap_text


def line(width: float, height: float, rise: float = 0.0, points: int = 20) -> np.ndarray:
    """Raw offsets of a zigzag line `width` wide and `height` tall, drifting up by `rise`, two strokes."""
    x = np.linspace(0.0, width, points)
    y = np.where(np.arange(points) % 2, height, 0.0) + np.linspace(0.0, rise, points)
    xy = np.stack([x, y], axis=1) + 100.0  # not at the origin: the layout must move it
    offsets = np.zeros((points, 3))
    offsets[0, :2] = xy[0]
    offsets[1:, :2] = np.diff(xy, axis=0)
    offsets[[points // 2, points - 1], 2] = 1.0
    return offsets


def test_text_is_split_at_newlines_and_wrapped_at_word_boundaries():
    assert wrap_text("the quick brown fox\njumps") == ["the quick brown fox", "jumps"]
    assert wrap_text("the quick brown fox\njumps", width=10) == ["the quick", "brown fox", "jumps"]
    assert all(len(line) <= 10 for line in wrap_text("aa bbb cccc dd eeeee f", width=10))
    assert wrap_text("a extraordinarily b", width=5) == ["a", "extraordinarily", "b"]  # a long word keeps its line
    assert wrap_text("one\n\ntwo", width=8) == ["one", "", "two"]  # a blank line stays
    with pytest.raises(ValueError, match="width"):
        wrap_text("abc", width=0)


def test_lines_are_left_aligned_and_spaced_by_the_tallest_line():
    placed = lay_out([line(300, 40), line(120, 20), line(500, 30)], line_spacing=1.5)
    assert [points[:, 0].min() for points in placed] == pytest.approx([0.0, 0.0, 0.0])
    middles = [np.median(points[:, 1]) for points in placed]
    assert np.diff(middles) == pytest.approx([-60.0, -60.0])  # 1.5 x the tallest ink, 40, downwards
    assert all(points[-1, 2] == 1.0 for points in placed)  # the pen is up between lines


def test_lines_can_be_centred():
    placed = lay_out([line(300, 40), line(120, 20)], align="centre")
    assert [(points[:, 0].min() + points[:, 0].max()) / 2 for points in placed] == pytest.approx([0.0, 0.0])
    assert placed[0][:, 0].min() != pytest.approx(placed[1][:, 0].min())
    with pytest.raises(ValueError, match="align"):
        lay_out([line(10, 10)], align="right")
    with pytest.raises(ValueError, match="line_spacing"):
        lay_out([line(10, 10)], line_spacing=0)


def test_straightening_levels_a_drifting_line_and_blank_lines_take_room():
    drifting = line(400, 20, rise=200, points=60)
    level = lay_out([drifting], straighten=True)[0]
    slope = abs(np.polyfit(*offsets_to_points(drifting)[:, :2].T, 1)[0])
    assert abs(np.polyfit(level[:, 0], level[:, 1], 1)[0]) < 0.1 < slope
    placed = lay_out([line(100, 10), np.zeros((0, 3)), line(100, 10)], line_spacing=2.0)
    assert len(placed[1]) == 0
    assert np.median(placed[2][:, 1]) - np.median(placed[0][:, 1]) == pytest.approx(-40.0)


def test_a_page_draws_as_one_pen_sequence_of_its_laid_out_lines():
    offsets = [line(300, 40), line(120, 20)]
    written = [WrittenText("ab", o, np.zeros((len(o), 2), dtype=np.int64), np.zeros(len(o), dtype=np.int64), True)
               for o in offsets]
    page = WrittenPage(written, lay_out(offsets))
    assert np.allclose(offsets_to_points(page.offsets), np.concatenate(page.points))
    assert page.boundaries.shape == (40, 2)
