"""Tile planner: pure geometry (windows, cores, alignment), checked against its invariants."""

from fractions import Fraction

import pytest

from fcnkit.errors import InputError
from fcnkit.inference.tiling import core_cells, origin_cell, plan_axis, plan_tiles


@pytest.mark.parametrize(
    "length, tile, halo, align",
    [
        (97, 32, 8, 4),
        (203, 32, 8, 2),
        (1000, 256, 64, 32),
        (64, 64, 16, 16),
        (65, 64, 16, 16),
        (300, 100, 0, 1),
    ],
)
def test_crop_spans_invariants(length, tile, halo, align):
    spans = plan_axis(length, tile, halo, align)
    assert spans[0].start == 0 and spans[-1].stop == length
    assert spans[0].core_start is None and spans[-1].core_stop is None
    for a, b in zip(spans, spans[1:]):
        assert a.core_stop == b.core_start  # cores partition the axis
    for s in spans:
        assert s.start % align == 0 and s.size <= tile
        if s.core_start is not None:
            assert s.core_start - s.start >= halo  # halo before the core ...
        if s.core_stop is not None:
            assert s.stop - s.core_stop >= halo  # ... and after it, except at image borders
            assert s.stop < length


def test_crop_spans_by_hand():
    # W = 32, h = 8: first window [0, 32) keeps [.., 24); then cores of 16 in windows of 32
    spans = plan_axis(97, 32, 8, 4)
    assert [(s.start, s.stop, s.core_start, s.core_stop) for s in spans] == [
        (0, 32, None, 24),
        (16, 48, 24, 40),
        (32, 64, 40, 56),
        (48, 80, 56, 72),
        (64, 96, 72, 88),
        (80, 97, 88, None),
    ]


def test_small_image_is_one_tile():
    assert [(s.start, s.stop) for s in plan_axis(30, 32, 8, 4)] == [(0, 30)]
    assert len(plan_tiles((30, 20), 32, 8, 4)) == 1


def test_tile_is_rounded_down_to_the_alignment_and_halo_up():
    plan = plan_tiles((500, 500), 100, 10, 32)
    assert plan.halo == (32, 32)
    assert all(t.rows.size <= 96 and t.rows.start % 32 == 0 for t in plan)


def test_too_small_tile_says_the_minimum():
    with pytest.raises(InputError, match="use tile >= 48"):
        plan_axis(200, 40, 16, 16)


@pytest.mark.parametrize("blend", ["average", "gaussian"])
def test_blend_spans_cover_with_overlap(blend):
    spans = plan_axis(203, 64, 0, 8, blend, overlap=0.25)
    assert spans[0].start == 0 and spans[-1].stop == 203
    for a, b in zip(spans, spans[1:]):
        assert b.start < a.stop and b.start % 8 == 0  # overlapping, aligned
    assert all(s.size <= 64 for s in spans)
    with pytest.raises(InputError, match="overlap"):
        plan_axis(203, 64, 0, 8, blend, overlap=1.5)


def test_plan_is_row_major_with_shapes():
    plan = plan_tiles((97, 203), 32, 8, (4, 2))
    tiles = list(plan)
    assert len(tiles) == len(plan) == plan.grid[0] * plan.grid[1]
    assert [(t.row, t.col) for t in tiles[:2]] == [(0, 0), (0, 1)]
    assert tiles[-1].rows.stop == 97 and tiles[-1].cols.stop == 203


def test_bad_arguments():
    with pytest.raises(InputError, match="blend"):
        plan_tiles((10, 10), 4, 0, 1, blend="median")
    with pytest.raises(InputError, match="tile"):
        plan_tiles((10, 10), 0, 0, 1)


@pytest.mark.parametrize("stride, offset", [(1, 0), (4, 1.5), (2, 0.5), (32, 15.5)])
def test_core_cells_partition_the_output(stride, offset):
    length = 203
    spans = plan_axis(length, 96, 32, 32)
    total = int((length - 1 - Fraction(offset)) // stride) + 1
    got = [core_cells(s, total, stride, offset) for s in spans]
    assert got[0][0] == 0 and got[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(got, got[1:]))  # every cell exactly once
    for s, (n0, n1) in zip(spans, got):  # each kept cell's centre lies in the core
        for n in (n0, n1 - 1):
            c = offset + n * stride
            assert (s.core_start is None or c >= s.core_start) and (s.core_stop is None or c < s.core_stop)
        assert origin_cell(s, stride) * stride == s.start
