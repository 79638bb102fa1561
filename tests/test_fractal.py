"""Box-counting dimension: edges, counts, and D on shapes whose dimension is known."""

import json
import math

import numpy as np
import pytest

from fractal_llm.report.fractal import (
    DimensionEstimate,
    box_counts,
    default_box_sizes,
    edge_mask,
    estimate_dimension,
    paper_dimension,
)
from fractal_llm.report.calibration import KOCH_D, fill_polygon, koch_snowflake  # the calibration's snowflake

SIERPINSKI_D = math.log(3) / math.log(2)


# ---------------------------------------------------------------------------------------------
# Shapes, rendered here as label images (1.0 inside, 0.0 outside)

def render_disk(n: int, radius_frac: float = 0.4) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] + 0.5
    return (((x - n / 2) ** 2 + (y - n / 2) ** 2) < (radius_frac * n) ** 2).astype(float)


def render_half_plane(n: int, angle: float = 0.3) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] + 0.5
    return (np.cos(angle) * (x - n / 2) + np.sin(angle) * (y - n / 2) > 0).astype(float)


def render_koch(n: int, level: int = 7) -> np.ndarray:
    pts = koch_snowflake(level)
    pts = pts - (pts.max(0) + pts.min(0)) / 2
    pts = pts * (0.9 * n / (pts.max(0) - pts.min(0)).max()) + n / 2 + 0.123   # off-grid: no ties
    return fill_polygon(pts, n)


def render_sierpinski(n: int) -> np.ndarray:
    """Pascal's triangle mod 2: (i & j) == 0 is the Sierpinski gasket (3^k of 4^k cells at side 2^k).

    Every dyadic box of side 2^m at the coarse cell (a, b) holds gasket points iff (a & b) == 0, and
    then it holds a whole smaller gasket, so points of both classes: the boxes meeting the edge set
    number ~3^(k-m), giving D = log 3 / log 2 (plus a shrinking 2^(k-m) correction from the
    one-pixel overlap of 2x2 edge blocks with the neighbouring box).
    """
    i, j = np.mgrid[0:n, 0:n]
    return ((i & j) == 0).astype(float)


def assert_close_to(estimate: DimensionEstimate, true_d: float, max_uncertainty: float) -> None:
    assert not estimate.too_coarse, estimate.reason
    # The uncertainty must be small enough to mean something, and honest enough to cover the error.
    assert 0 < estimate.uncertainty < max_uncertainty, estimate
    assert abs(estimate.dimension - true_d) < 3 * estimate.uncertainty + 0.05, estimate


# ---------------------------------------------------------------------------------------------
# Known shapes

@pytest.mark.parametrize("render", [render_disk, render_half_plane])
def test_smooth_boundary_has_dimension_one(render):
    estimate = estimate_dimension(render(2048))
    assert_close_to(estimate, 1.0, max_uncertainty=0.06)
    assert abs(estimate.dimension - 1.0) < 0.03
    assert estimate.r_squared > 0.99


def test_koch_snowflake_boundary():
    estimate = estimate_dimension(render_koch(2048))
    assert_close_to(estimate, KOCH_D, max_uncertainty=0.12)


def test_sierpinski_triangle():
    estimate = estimate_dimension(render_sierpinski(2048))
    assert_close_to(estimate, SIERPINSKI_D, max_uncertainty=0.1)


def test_shapes_are_told_apart():
    d_line = estimate_dimension(render_half_plane(1024)).dimension
    d_koch = estimate_dimension(render_koch(1024)).dimension
    d_sier = estimate_dimension(render_sierpinski(1024)).dimension
    assert d_line < d_koch < d_sier


def test_paper_method_on_known_shapes():
    line = paper_dimension(render_half_plane(2048))
    sier = paper_dimension(render_sierpinski(2048))
    assert line.method == sier.method == "paper-median"
    assert abs(line.dimension - 1.0) < 3 * line.uncertainty + 0.05
    assert abs(sier.dimension - SIERPINSKI_D) < 3 * sier.uncertainty + 0.05
    assert len(sier.local_slopes) == len(sier.box_sizes) and sier.box_sizes[0] == 10


def test_paper_counts_match_a_direct_loop():
    rng = np.random.default_rng(3)
    labels = (rng.random((90, 70)) < 0.1).astype(float)
    edges = edge_mask(labels)
    estimate = paper_dimension(labels, n_sizes=5)
    for s, count in zip(estimate.box_sizes, estimate.counts):
        expected = 0
        for i in range(0, edges.shape[0], s):
            for j in range(0, edges.shape[1], s):
                box = edges[i : i + s, j : j + s]
                expected += bool(box.any()) and not bool(box.all())
        assert count == expected, s


# ---------------------------------------------------------------------------------------------
# Edges and counts

def test_edge_mask_marks_mixed_2x2_blocks():
    labels = np.array([[1.0, 1.0, 0.0],
                       [1.0, 1.0, 1.0],
                       [1.0, 1.0, 1.0]])
    expected = np.array([[False, True],
                         [False, False]])
    assert np.array_equal(edge_mask(labels), expected)
    assert edge_mask(labels).shape == (2, 2)


def test_nan_never_forms_an_edge():
    rng = np.random.default_rng(0)
    labels = np.where(rng.random((64, 64)) < 0.5, 1.0, np.nan)
    assert not edge_mask(labels).any()
    estimate = estimate_dimension(labels)
    assert estimate.too_coarse and math.isnan(estimate.dimension)
    assert estimate.reason.startswith("no boundary")
    # NaN between the classes separates them: no edge either.
    assert not edge_mask(np.array([[1.0, np.nan, 0.0], [1.0, np.nan, 0.0]])).any()


def test_bool_and_float_inputs_agree():
    labels = render_disk(256)
    assert np.array_equal(edge_mask(labels > 0.5), edge_mask(labels))
    assert estimate_dimension(labels > 0.5).dimension == estimate_dimension(labels).dimension


@pytest.mark.parametrize("shape,sizes", [((64, 64), [1, 2, 4, 8, 16]), ((61, 47), [1, 3, 5, 6, 7, 12, 50])])
def test_box_counts_match_a_direct_loop(shape, sizes):
    edges = np.random.default_rng(1).random(shape) < 0.03
    counts = box_counts(edges, sizes)
    for s, count in zip(sizes, counts):
        expected = sum(
            bool(edges[i : i + s, j : j + s].any())
            for i in range(0, shape[0], s)
            for j in range(0, shape[1], s)
        )
        assert count == expected, s


def test_default_box_sizes():
    assert default_box_sizes((1023, 1023)) == [1, 2, 4, 8, 16, 32, 64, 128]   # 1023 // 4 = 255
    assert default_box_sizes((1024, 2000)) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert default_box_sizes((1024, 1024), min_box=3, max_box=40) == [3, 6, 12, 24]
    assert default_box_sizes((100, 100), per_octave=2) == [1, 2, 3, 4, 6, 8, 11, 16, 23]


# ---------------------------------------------------------------------------------------------
# Too coarse, bad input, serialisation

def test_small_grid_is_too_coarse():
    labels = (np.random.default_rng(2).random((16, 16)) < 0.5).astype(float)
    estimate = estimate_dimension(labels)
    assert estimate.n_edge_pixels > 0
    assert estimate.too_coarse
    assert math.isnan(estimate.uncertainty)
    assert "too small" in estimate.reason


def test_too_few_edge_pixels_is_too_coarse():
    labels = np.ones((256, 256))
    labels[100:103, 100:103] = 0.0
    estimate = estimate_dimension(labels)
    assert estimate.too_coarse and "too few boundary pixels" in estimate.reason


@pytest.mark.parametrize("bad,words", [
    (np.zeros((4, 4, 4)), "2-D"),
    (np.full((4, 4), 0.5), "0.5"),
    (np.array([[1.0, 0.0], [np.inf, 1.0]]), "inf"),
    (np.array([["a", "b"], ["c", "d"]]), "dtype"),
    (np.zeros((1, 5)), "too small"),
])
def test_bad_labels_raise_named_errors(bad, words):
    with pytest.raises(ValueError, match="labels") as info:
        estimate_dimension(bad)
    assert words in str(info.value)


def test_bad_box_arguments_raise():
    with pytest.raises(ValueError, match="min_box"):
        estimate_dimension(render_disk(64), min_box=0)
    with pytest.raises(ValueError, match="box_sizes"):
        box_counts(np.zeros((8, 8), dtype=bool), [0, 2])


def test_to_dict_is_json_safe():
    for labels in (render_disk(512), np.ones((20, 20)), np.random.default_rng(4).random((16, 16)) < 0.5):
        d = estimate_dimension(labels).to_dict()
        text = json.dumps(d, allow_nan=False)
        back = json.loads(text)
        assert set(back) >= {"dimension", "uncertainty", "too_coarse", "box_sizes", "counts", "local_slopes",
                             "fit_range", "r_squared", "n_edge_pixels", "reason"}
        assert all(type(v) in (int, float, bool, str, list, type(None)) for v in d.values())


def test_fit_range_and_line_reproduce_counts():
    estimate = estimate_dimension(render_disk(1024))
    lo, hi = estimate.fit_range
    assert lo in estimate.box_sizes and hi in estimate.box_sizes and hi / lo >= 8
    assert len(estimate.local_slopes) == len(estimate.box_sizes) - 1
    for s, count in zip(estimate.box_sizes, estimate.counts):
        if lo <= s <= hi:
            predicted = estimate.intercept - estimate.dimension * math.log(s)
            assert abs(predicted - math.log(count)) < 0.1
