"""Tests for handwriting_hm.drawing: SVG / PNG / JSON pictures of pen sequences and boundaries."""
from __future__ import annotations

import io
import json
import os
import re
import xml.etree.ElementTree as ET

import matplotlib.image
import numpy as np
import pytest

from handwriting_hm.drawing import geometry, png, records, style, svg
from handwriting_hm.unconditional.sample import Sample

SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Made-up strokes, y upward: an "A" (two strokes), a zig-zag, a lone dot, and a trailing
# stroke without an end_of_stroke. All points are distinct so screen coordinates identify them.
STROKES = [
    [(0, 0), (10, 20), (20, 0)],
    [(5, 10), (15, 10)],
    [(30, 0), (32, 8), (34, 16), (36, 24), (38, 16), (40, 8)],
    [(50, 5)],
    [(60, 0), (65, 10), (70, 0)],
]
STROKE_LENGTHS = [len(stroke) for stroke in STROKES]
T = sum(STROKE_LENGTHS)  # 15


def make_offsets(strokes=STROKES, close_last: bool = False) -> np.ndarray:
    points = [(x, y, 1.0 if i == len(s) - 1 else 0.0) for s in strokes for i, (x, y) in enumerate(s)]
    points = np.array(points, dtype=float)
    if not close_last:
        points[-1, 2] = 0.0
    offsets = points.copy()
    offsets[1:, :2] = points[1:, :2] - points[:-1, :2]
    return offsets


def make_boundaries() -> np.ndarray:
    """Two layers over the strokes t=0-2, 3-4, 5-10, 11 (the dot), 12-14.

    Layer 1 fires mid-stroke (t=1, 7, 8), on a stroke's last point (t=4, and t=11, the dot)
    and on a stroke's first point (t=12); layer 2 fires at t=5 and t=13.
    """
    boundaries = np.zeros((T, 2))
    boundaries[[1, 4, 7, 8, 11, 12], 0] = 1
    boundaries[[5, 13], 1] = 1
    return boundaries


# --- helpers reading an SVG back --------------------------------------------------------


def parse_svg(text: str) -> ET.Element:
    return ET.fromstring(text)


def svg_paths(root: ET.Element) -> list[tuple[str, list[tuple[str, str]]]]:
    """(colour, [(x, y) as strings]) for every <path>, in document order."""
    paths = []
    for path in root.iter(f"{SVG}path"):
        coordinates = re.findall(r"(-?[\d.]+),(-?[\d.]+)", path.get("d"))
        paths.append((path.get("stroke"), coordinates))
    return paths


def screen_of_points(offsets: np.ndarray, **kwargs) -> list[tuple[str, str]]:
    """Screen coordinates of every point, in time order, read from the ink-mode SVG."""
    screen = []
    for _, coordinates in svg_paths(parse_svg(svg.render_svg(offsets, **kwargs))):
        if len(coordinates) == 2 and coordinates[0] == coordinates[1]:
            coordinates = coordinates[:1]  # a single point drawn as a zero-length line
        screen.extend(coordinates)
    return screen


def path_indices(text: str, offsets: np.ndarray) -> list[tuple[str, list[int]]]:
    """(colour, time steps covered) for every path of an SVG of `offsets`."""
    index_of = {xy: t for t, xy in enumerate(screen_of_points(offsets))}
    result = []
    for colour, coordinates in svg_paths(parse_svg(text)):
        indices = [index_of[xy] for xy in coordinates]
        if len(indices) == 2 and indices[0] == indices[1]:
            indices = indices[:1]
        result.append((colour, indices))
    return result


def view_box(root: ET.Element) -> tuple[float, float, float, float]:
    return tuple(float(v) for v in root.get("viewBox").split())


# --- geometry ---------------------------------------------------------------------------


def test_offsets_to_points_cumulates_and_keeps_end_of_stroke():
    offsets = make_offsets(close_last=True)
    points = geometry.offsets_to_points(offsets)
    expected = [xy for stroke in STROKES for xy in stroke]
    np.testing.assert_allclose(points[:, :2], expected)
    np.testing.assert_array_equal(points[:, 2], offsets[:, 2])


def test_split_strokes_keeps_trailing_stroke_without_end_of_stroke():
    for close_last in (True, False):
        strokes = geometry.split_strokes(geometry.offsets_to_points(make_offsets(close_last=close_last)))
        assert [len(s) for s in strokes] == STROKE_LENGTHS
        for got, want in zip(strokes, STROKES):
            np.testing.assert_allclose(got, want)


# --- SVG --------------------------------------------------------------------------------


@pytest.mark.parametrize("colour_by", ["ink", "strokes"])
def test_svg_has_one_round_capped_unfilled_path_per_stroke(colour_by):
    root = parse_svg(svg.render_svg(make_offsets(), colour_by=colour_by))
    paths = svg_paths(root)
    assert [len(set(coordinates)) for _, coordinates in paths] == STROKE_LENGTHS
    group = root.find(f"{SVG}g")
    assert group.get("fill") == "none"
    assert group.get("stroke-linecap") == "round" and group.get("stroke-linejoin") == "round"


def test_single_point_stroke_is_a_zero_length_path():
    _, coordinates = svg_paths(parse_svg(svg.render_svg(make_offsets())))[3]
    assert len(coordinates) == 2 and coordinates[0] == coordinates[1]


def test_viewbox_contains_every_point_with_room_for_the_pen():
    stroke_width = 3.0
    root = parse_svg(svg.render_svg(make_offsets(), stroke_width=stroke_width))
    x0, y0, width, height = view_box(root)
    screen = np.array(screen_of_points(make_offsets(), stroke_width=stroke_width), dtype=float)
    assert len(screen) == T
    assert (screen[:, 0] - stroke_width / 2 >= x0).all() and (screen[:, 0] + stroke_width / 2 <= x0 + width).all()
    assert (screen[:, 1] - stroke_width / 2 >= y0).all() and (screen[:, 1] + stroke_width / 2 <= y0 + height).all()
    # the displayed size keeps the drawing's aspect ratio
    shown = float(root.get("width").removesuffix("px")) / float(root.get("height").removesuffix("px"))
    assert shown == pytest.approx(width / height, rel=0.02)


def test_y_is_flipped_so_writing_is_upright():
    screen = np.array(screen_of_points(make_offsets()), dtype=float)
    zigzag = screen[5:11]  # data y: 0, 8, 16, 24, 16, 8 while x grows
    assert (np.diff(zigzag[:4, 1]) < 0).all(), "going up in data must go up on screen (smaller SVG y)"
    assert (np.diff(zigzag[3:, 1]) > 0).all()
    assert (np.diff(zigzag[:, 0]) > 0).all(), "x must not be mirrored"


def test_ink_mode_uses_one_dark_colour_or_the_first_given():
    colours = {colour for colour, _ in svg_paths(parse_svg(svg.render_svg(make_offsets())))}
    assert colours == {style.INK_COLOUR}
    chosen = svg.render_svg(make_offsets(), colours=np.array(["#000000", "#ff0000"]))
    assert {colour for colour, _ in svg_paths(parse_svg(chosen))} == {"#000000"}


def test_strokes_mode_gives_consecutive_strokes_different_colours():
    colours = [colour for colour, _ in svg_paths(parse_svg(svg.render_svg(make_offsets(), colour_by="strokes")))]
    assert len(colours) == len(STROKES)
    assert all(a != b for a, b in zip(colours, colours[1:]))
    assert all(c in style.PALETTE for c in colours)


@pytest.mark.parametrize("layer", [1, 2])
def test_layer_mode_changes_colour_exactly_after_each_boundary(layer):
    offsets, boundaries = make_offsets(), make_boundaries()
    pieces = path_indices(svg.render_svg(offsets, boundaries, colour_by=f"layer{layer}"), offsets)
    fired = boundaries[:, layer - 1]
    segment = np.concatenate([[0], np.cumsum(fired[:-1])]).astype(int)  # segment of each point
    stroke = np.repeat(np.arange(len(STROKES)), STROKE_LENGTHS)

    own_points, colour_of_segment = [], {}
    previous_last = None
    for colour, indices in pieces:
        # a piece continuing a stroke starts on the previous piece's last point (the point
        # where the boundary fired) so the line stays continuous; the rest are its own points
        shared = indices[0] == previous_last
        own = indices[1:] if shared else indices
        if shared:
            assert fired[indices[0]] == 1, f"stroke cut at t={indices[0]} where layer {layer} did not fire"
        assert len({segment[t] for t in own}) == 1, f"a piece spans a boundary: {own}"
        assert len({stroke[t] for t in indices}) == 1, f"a piece spans a pen lift: {indices}"
        assert colour_of_segment.setdefault(segment[own[0]], colour) == colour
        own_points.extend(own)
        previous_last = indices[-1]

    assert own_points == list(range(T)), "every point drawn exactly once, in order"
    # one piece per non-empty (stroke, segment) pair: no cut where nothing fired
    assert len(pieces) == len(set(zip(stroke, segment)))
    for a, b in zip(sorted(colour_of_segment), sorted(colour_of_segment)[1:]):
        assert colour_of_segment[a] != colour_of_segment[b], "consecutive segments share a colour"


def test_layer1_pieces_for_the_fixture():
    """The exact cut for layer 1, spelled out (fires at t = 1, 4, 7, 8, 11, 12)."""
    offsets, boundaries = make_offsets(), make_boundaries()
    pieces = path_indices(svg.render_svg(offsets, boundaries, colour_by="layer1"), offsets)
    assert [indices for _, indices in pieces] == [
        [0, 1], [1, 2],       # "A" left stroke, cut after t=1
        [3, 4],               # crossbar; fires on its last point: next stroke gets a new colour
        [5, 6, 7], [7, 8], [8, 9, 10],  # zig-zag cut after t=7 and t=8
        [11],                 # the dot fires on itself
        [12], [12, 13, 14],   # trailing stroke fires on its first point
    ]
    # segments (one per firing) of each piece's own points: the crossbar and the dot carry on
    # the segment their stroke's predecessor ended in
    segments = [0, 1, 1, 2, 3, 4, 4, 5, 6]
    assert [colour for colour, _ in pieces] == [style.PALETTE[s] for s in segments]


def test_boolean_and_float_boundaries_draw_the_same():
    offsets, boundaries = make_offsets(), make_boundaries()
    assert svg.render_svg(offsets, boundaries, "layer1") == svg.render_svg(offsets, boundaries.astype(bool), "layer1")


@pytest.mark.parametrize("layer", [1, 2])
def test_markers_sit_exactly_on_firing_points(layer):
    offsets, boundaries = make_offsets(), make_boundaries()
    screen = np.array(screen_of_points(offsets), dtype=float)
    for colour_by in style.COLOUR_MODES:
        root = parse_svg(svg.render_svg(offsets, boundaries, colour_by=colour_by, marker_layer=layer))
        centres = np.array([(float(c.get("cx")), float(c.get("cy"))) for c in root.iter(f"{SVG}circle")])
        expected = screen[np.flatnonzero(boundaries[:, layer - 1])]
        np.testing.assert_allclose(centres, expected, atol=0.011)


def test_no_markers_without_marker_layer():
    root = parse_svg(svg.render_svg(make_offsets(), make_boundaries(), colour_by="layer1"))
    assert list(root.iter(f"{SVG}circle")) == []


def test_layer_modes_need_the_layer_to_exist():
    offsets = make_offsets()
    with pytest.raises(ValueError, match="needs boundaries"):
        svg.render_svg(offsets, colour_by="layer1")
    with pytest.raises(ValueError, match="layer 2.*1 layer column"):
        svg.render_svg(offsets, make_boundaries()[:, :1], colour_by="layer2")
    with pytest.raises(ValueError, match="layer 3"):
        svg.render_svg(offsets, make_boundaries(), marker_layer=3)
    with pytest.raises(ValueError, match="needs boundaries"):
        png.render_png(offsets, marker_layer=1)
    with pytest.raises(ValueError, match="colour_by must be one of"):
        svg.render_svg(offsets, colour_by="rainbow")


def test_bad_inputs_are_rejected_with_a_clear_message():
    offsets = make_offsets()
    bad = offsets.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        svg.render_svg(bad)
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        records.to_json(bad)
    with pytest.raises(ValueError, match=r"\(15, 2\)"):
        svg.render_svg(offsets[:, :2])
    with pytest.raises(ValueError, match=r"boundaries.*\(14, 2\)"):
        svg.render_svg(offsets, make_boundaries()[:-1], colour_by="layer1")
    with pytest.raises(ValueError, match="only 0 and 1"):
        svg.render_svg(offsets, make_boundaries() * 0.5, colour_by="layer1")
    with pytest.raises(ValueError, match=r"operations.*\(15,\)"):
        records.to_json(offsets, operations=np.zeros(T, dtype=int))


def test_empty_input_gives_valid_empty_pictures():
    empty = np.zeros((0, 3))
    root = parse_svg(svg.render_svg(empty))
    assert list(root.iter(f"{SVG}path")) == [] and len(view_box(root)) == 4
    assert png.render_png(empty).startswith(PNG_SIGNATURE)
    assert json.loads(records.to_json(empty))["points"] == []
    assert geometry.split_strokes(empty) == []


# --- PNG --------------------------------------------------------------------------------


def decode_png(data: bytes) -> np.ndarray:
    assert data.startswith(PNG_SIGNATURE)
    return matplotlib.image.imread(io.BytesIO(data), format="png")[..., :3]


def red_pixels(image: np.ndarray) -> int:
    """Pixels close to the marker red (#d62728), which the palette leaves out."""
    return int((np.abs(image - np.array([0xD6, 0x27, 0x28]) / 255).max(axis=-1) < 0.1).sum())


def test_png_decodes_to_a_picture_with_ink():
    image = decode_png(png.render_png(make_offsets()))
    ink = image.min(axis=-1) < 0.5
    assert 0.002 < ink.mean() < 0.5, "expected some dark ink on a white page"


def test_png_shows_a_single_point_stroke_as_a_dot():
    image = decode_png(png.render_png(np.array([[3.0, 4.0, 1.0]]), stroke_width=4.0))
    assert (image.min(axis=-1) < 0.5).sum() >= 4


def test_png_colour_modes_use_the_palette_and_markers_are_red():
    offsets, boundaries = make_offsets(), make_boundaries()
    ink = decode_png(png.render_png(offsets))
    strokes = decode_png(png.render_png(offsets, colour_by="strokes"))
    # colourful pixels: channels far apart (dark ink and white page are nearly grey)
    assert ((ink.max(-1) - ink.min(-1)) > 0.3).mean() < ((strokes.max(-1) - strokes.min(-1)) > 0.3).mean()
    plain = decode_png(png.render_png(offsets, boundaries, colour_by="layer1"))
    marked = decode_png(png.render_png(offsets, boundaries, colour_by="layer1", marker_layer=1))
    assert red_pixels(plain) == 0 and red_pixels(marked) > 20


def test_png_is_written_to_path(tmp_path):
    path = tmp_path / "line.png"
    data = png.render_png(make_offsets(), path=path)
    assert path.read_bytes() == data


def test_grid_png_stacks_lines(tmp_path):
    offsets = make_offsets()
    single = decode_png(png.render_png(offsets))
    grid_bytes = png.render_grid_png([offsets, offsets[:5], offsets], titles=["a", "b", "c"], path=tmp_path / "g.png")
    grid = decode_png(grid_bytes)
    assert grid.shape[0] > 2 * single.shape[0]
    assert (tmp_path / "g.png").read_bytes() == grid_bytes
    with pytest.raises(ValueError, match="2 titles for 3"):
        png.render_grid_png([offsets] * 3, titles=["a", "b"])


def test_grid_png_rows_take_their_own_colouring():
    offsets = make_offsets()
    boundaries = np.zeros((len(offsets), 2), dtype=np.int64)
    boundaries[len(offsets) // 2, 0] = 1
    rows = png.render_grid_png([offsets, offsets], boundaries=[boundaries, boundaries], colour_by=["ink", "layer1"])
    each = [decode_png(png.render_png(offsets, boundaries, colour_by=mode)) for mode in ("ink", "layer1")]
    grid = decode_png(rows)
    assert np.array_equal(grid[:each[0].shape[0]], each[0])  # the first row as drawn alone, the second coloured
    assert not np.array_equal(grid[each[0].shape[0]:], each[0][:grid.shape[0] - each[0].shape[0]])
    with pytest.raises(ValueError, match="1 colourings and 2 marker layers for 2"):
        png.render_grid_png([offsets, offsets], colour_by=["ink"])


# --- JSON and files ---------------------------------------------------------------------


def test_json_round_trips_everything():
    offsets, boundaries = make_offsets(), make_boundaries()
    operations = np.random.default_rng(0).integers(0, 3, size=(T, 3))
    document = json.loads(records.to_json(offsets, boundaries, operations, text="A to", bias=np.float32(0.5)))
    np.testing.assert_allclose(document["points"], geometry.offsets_to_points(offsets))
    np.testing.assert_allclose(document["offsets"], offsets)
    assert document["boundaries"] == boundaries.astype(int).tolist()
    assert document["operations"] == operations.tolist()
    assert document["operation_names"] == ["COPY", "UPDATE", "FLUSH"]
    assert document["text"] == "A to" and document["bias"] == 0.5
    bare = json.loads(records.to_json(offsets))
    assert bare["boundaries"] is None and bare["operations"] is None


def test_json_refuses_extra_fields_that_clash():
    with pytest.raises(ValueError, match="points"):
        records.to_json(make_offsets(), points=[])


def make_sample(offsets=None, boundaries=None) -> Sample:
    offsets = make_offsets() if offsets is None else offsets
    boundaries = make_boundaries().astype(np.int64) if boundaries is None else boundaries
    operations = np.ones((len(offsets), 3), dtype=np.int64)
    counts = np.stack([np.bincount(operations[:, layer], minlength=3) for layer in range(3)])
    return Sample(offsets=offsets, boundaries=boundaries, operations=operations, counts=counts)


def test_save_samples_picks_the_format_from_the_extension(tmp_path):
    samples, parameters = [make_sample()], {"seed": 3}
    records.save_samples(tmp_path / "a.svg", samples, parameters, colour_by="layer2", marker_layer=1)
    records.save_samples(tmp_path / "a.PNG", samples, parameters, colour_by="layer1")
    records.save_samples(tmp_path / "a.json", samples, parameters, straighten=True)
    assert len(list(parse_svg((tmp_path / "a.svg").read_text()).iter(f"{SVG}circle"))) == make_boundaries()[:, 0].sum()
    assert (tmp_path / "a.PNG").read_bytes().startswith(PNG_SIGNATURE)
    document = json.loads((tmp_path / "a.json").read_text())
    assert document["parameters"] == parameters
    assert document["drawing"] == {"colour_by": "ink", "marker_layer": None, "straighten": True}
    assert document["samples"][0]["operations"][0] == [1, 1, 1]
    np.testing.assert_allclose(document["samples"][0]["offsets"], make_offsets())  # raw, never straightened
    assert document["samples"][0]["operation_counts"]["layer1"] == {"COPY": 0, "UPDATE": T, "FLUSH": 0}
    with pytest.raises(ValueError, match=r"\.svg, \.png, \.json"):
        records.save_samples(tmp_path / "a.pdf", samples, parameters)
    assert sorted(os.listdir(tmp_path)) == ["a.PNG", "a.json", "a.svg"], "no temp files, nothing for .pdf"


def test_several_samples_go_into_one_file_of_each_format(tmp_path):
    samples = [make_sample(), make_sample(make_offsets()[:5], make_boundaries()[:5].astype(np.int64))]
    stacked = parse_svg(records.render_samples(".svg", samples, {}).decode())
    assert len(stacked.findall(f"{SVG}svg")) == 2
    one_row = decode_png(records.render_samples(".png", samples[:1], {}))
    two_rows = decode_png(records.render_samples(".png", samples, {}))
    assert two_rows.shape[0] > one_row.shape[0]
    assert len(json.loads(records.render_samples(".json", samples, {}))["samples"]) == 2


def test_stack_svgs_makes_one_valid_document():
    one = '<svg xmlns="http://www.w3.org/2000/svg" width="30px" height="10px" viewBox="0 0 30 10"><path d="M0,0 L1,1"/></svg>'
    two = one.replace('width="30px"', 'width="50px"').replace('height="10px"', 'height="20px"')
    assert svg.stack_svgs([one]) == one
    root = ET.fromstring(svg.stack_svgs([one, two]))
    assert (root.get("width"), root.get("height")) == ("50px", "30px")
    assert [inner.get("y") for inner in root.findall(f"{SVG}svg")] == ["0.00", "10.00"]


def test_failed_save_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "line.svg"
    path.write_text("old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        records.save_samples(path, [make_sample()], {})
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["line.svg"]


# --- straightening ----------------------------------------------------------------------


def slanted_writing(degrees: float) -> np.ndarray:
    """Offsets of a level 'handwriting' line (loops along y = 0, strokes of 20 points) turned by `degrees`."""
    x = np.linspace(0, 400, 200)
    points = np.stack([x + 8 * np.cos(x), 10 * np.sin(x), np.zeros_like(x)], axis=1)
    points[19::20, 2] = 1.0
    turn = np.radians(degrees)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    points[:, :2] = points[:, :2] @ rotation.T
    offsets = points.copy()
    offsets[1:, :2] = np.diff(points[:, :2], axis=0)
    return offsets


def test_a_slanted_straight_line_comes_out_level():
    x = np.arange(50.0)
    points = np.stack([x, 0.4 * x + 3, (x % 10 == 9).astype(float)], axis=1)
    level = geometry.straighten_baseline(points)
    assert np.ptp(level[:, 1]) == pytest.approx(0, abs=1e-9)
    np.testing.assert_array_equal(level[:, 2], points[:, 2])  # pen lifts kept
    # a rotation: the line keeps its length
    assert np.hypot(*(level[-1, :2] - level[0, :2])) == pytest.approx(np.hypot(*(points[-1, :2] - points[0, :2])))


@pytest.mark.parametrize("degrees", [-20.0, 15.0, 35.0])
def test_slanted_writing_comes_out_as_the_level_original(degrees):
    original = geometry.offsets_to_points(slanted_writing(0.0))
    level = geometry.straighten_baseline(geometry.offsets_to_points(slanted_writing(degrees)))
    level_original = geometry.straighten_baseline(original)  # the fit is rotation-equivariant
    np.testing.assert_allclose(level[:, :2] - level[:, :2].mean(axis=0),
                               level_original[:, :2] - level_original[:, :2].mean(axis=0), atol=1e-6)
    assert np.ptp(level[:, 1]) < 0.5 * np.ptp(geometry.offsets_to_points(slanted_writing(degrees))[:, 1])


def test_straighten_changes_the_drawing_not_the_data():
    offsets = slanted_writing(25.0)
    before = offsets.copy()
    slanted, level = (parse_svg(svg.render_svg(offsets, straighten=flag)) for flag in (False, True))
    width_of = lambda root: float(root.get("width").removesuffix("px"))  # noqa: E731
    # the same ink height: a level line is a longer, flatter picture
    assert width_of(level) > width_of(slanted)
    png_slanted, png_level = (decode_png(png.render_png(offsets, straighten=flag)) for flag in (False, True))
    assert png_level.shape[1] > png_slanted.shape[1]
    np.testing.assert_array_equal(offsets, before)
