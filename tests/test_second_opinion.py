"""Where auto's second opinion compares a deconvolution with the network's output, and how far each moved."""

from __future__ import annotations

import math

import numpy as np
import pytest

from deblurcli.decide import against_network
from deblurcli.metrics import psnr
from deblurcli.second_opinion import windows


def test_a_photo_within_the_budget_is_compared_whole() -> None:
    assert windows((3000, 400), budget=1_500_000) is None
    assert windows((560, 900), budget=100_000, side=512, margin=32) is None  # no room for a window and its margins


def test_a_large_photo_is_compared_on_an_even_grid_of_windows_inside_it() -> None:
    h, w = 3000, 4000
    spots = windows((h, w), budget=1_500_000, side=512, margin=32)
    assert spots is not None and len(spots) == 4  # floor(1.5 MP / 512^2) = 5, as a 2 x 2 grid for 4:3
    tops = set()
    for (rows, cols), (inner_rows, inner_cols) in spots:
        assert 0 <= rows.start < rows.stop <= h and 0 <= cols.start < cols.stop <= w
        assert inner_rows.stop - inner_rows.start == 512 and inner_cols.stop - inner_cols.start == 512
        assert inner_rows.start == inner_cols.start == 32  # a full margin: no window is near the photo's edge
        assert inner_rows.stop <= rows.stop - rows.start and inner_cols.stop <= cols.stop - cols.start
        tops.add(rows.start + inner_rows.start)
    assert len(tops) == 2 and min(tops) > 0 and max(tops) + 512 < h  # spread out, off the photo's edges


def test_how_far_an_output_moved_is_its_psnr_against_the_photo() -> None:
    photo = np.full((8, 8, 3), 0.5, np.float32)
    assert psnr(photo, photo) == math.inf
    assert psnr(photo + 0.1, photo) == pytest.approx(20.0, abs=1e-4)


def test_the_deconvolution_is_kept_only_where_it_moved_the_photo_further() -> None:
    assert against_network(kernel_db=22.0, network_db=30.0) is None
    assert against_network(kernel_db=22.0, network_db=math.inf) is None
    for network_db in (22.0, 21.0):
        choice = against_network(kernel_db=22.0, network_db=network_db)
        assert choice is not None and choice.method == "network" and "as much as the deconvolution" in choice.reason
