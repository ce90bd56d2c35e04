"""`hm-lm boundaries`' picture: the heading inside the figure, the heat map across the whole panel."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import AxesImage

from lm.boundary_figure import BoundaryAnalysis, boundary_figure

TITLE = "ptb-default.pt, slope 1.24"


def analysis(steps: int) -> BoundaryAnalysis:
    rng = np.random.default_rng(0)
    boundaries = (rng.random((steps, 2)) < 0.3).astype(np.float32)
    return BoundaryAnalysis(labels=list("the stock market fell sharply on news"[:steps].ljust(steps, "x")),
                            boundaries=boundaries, operations=np.ones((steps, 3), dtype=np.int64),
                            norms=rng.random((steps, 3)), update_fraction=np.array([1.0, 0.66, 0.31]))


@pytest.mark.parametrize("steps, width", [(29, 60), (5, 60), (130, 60)])
def test_the_heading_fits_and_the_heat_map_fills_its_panel(steps, width):
    figure = boundary_figure(analysis(steps), width=width, show_norms=True, title=TITLE)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    page = figure.bbox
    heading = figure._suptitle.get_window_extent(renderer)
    assert page.x0 <= heading.x0 and heading.x1 <= page.x1 and heading.y1 <= page.y1  # not cut off
    first = figure.axes[0]
    [image] = [artist for artist in first.get_children() if isinstance(artist, AxesImage)]
    left, right, _, _ = image.get_extent()
    assert (left, right) == first.get_xlim()  # the first panel's heat map spans the whole axes
    assert first.get_window_extent(renderer).width > 0.8 * page.width  # and the axes most of the figure
