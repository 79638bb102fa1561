"""Zoom boxes: ranked by boundary density, non-overlapping, drawn, and written as sweeps that pass sweep check."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from fractal_llm.report.grid import grid_from_arrays  # noqa: E402
from fractal_llm.verdict import from_trainable  # noqa: E402
from fractal_llm.sweep import MODULE_COMMAND, axis_values, load_sweep  # noqa: E402
from fractal_llm.report.plots import draw_boxes  # noqa: E402
from fractal_llm.report.zoom_boxes import find_zoom_boxes, write_zoom_sweeps  # noqa: E402

N = 32
XS = axis_values(1e-4, 1.0, N)
YS = axis_values(1e-5, 0.1, N)


def parent_config() -> dict:
    return {"name": "parent", "method": "grid", "command": list(MODULE_COMMAND), "run_cap": 1024,
            "metric": {"name": "score", "goal": "minimize"},
            "parameters": {"matrix_lr": {"values": XS}, "unembedding_lr": {"values": YS},
                           "num_tokens": {"value": 12345}, "lr_schedule": {"value": "constant"}}}


def checkerboard_corner_grid():
    """Trainable below a straight diagonal, plus a fine checkerboard (dense boundary) in the top-right corner."""
    i, j = np.mgrid[0:N, 0:N]
    trainable = i + j < N
    corner = (i >= 24) & (j >= 24)
    trainable = np.where(corner, (i + j) % 2 == 0, trainable)
    return grid_from_arrays("matrix_lr", "unembedding_lr", XS, YS, from_trainable(trainable), np.zeros((N, N)), name="parent")


def test_densest_box_is_the_checkerboard_and_boxes_do_not_overlap():
    grid = checkerboard_corner_grid()
    boxes = find_zoom_boxes(grid, k=3)
    assert len(boxes) == 3 and [b.rank for b in boxes] == [1, 2, 3]
    top = boxes[0]
    assert top.rows[0] >= 20 and top.cols[0] >= 20 and top.density > 0.5  # size 8, inside the corner
    assert top.rows[1] - top.rows[0] == 8 and top.cols[1] - top.cols[0] == 8
    densities = [b.density for b in boxes]
    assert densities == sorted(densities, reverse=True)
    for a in boxes:
        for b in boxes:
            if a is not b:
                rows_overlap = a.rows[0] < b.rows[1] and b.rows[0] < a.rows[1]
                cols_overlap = a.cols[0] < b.cols[1] and b.cols[0] < a.cols[1]
                assert not (rows_overlap and cols_overlap)
    assert top.x_range == (XS[top.cols[0]], XS[top.cols[1] - 1])


def test_no_boundary_no_boxes_and_bad_sizes_refused():
    flat = grid_from_arrays("a", "b", XS, YS, from_trainable(np.ones((N, N), dtype=bool)), np.zeros((N, N)))
    assert find_zoom_boxes(flat, k=3) == []
    with pytest.raises(ValueError, match="size"):
        find_zoom_boxes(flat, k=1, size=N + 1)


def test_child_sweeps_pass_sweep_check(tmp_path):
    grid = checkerboard_corner_grid()
    boxes = find_zoom_boxes(grid, k=2)
    paths = write_zoom_sweeps(grid, boxes, parent_config(), tmp_path, resolution=12)
    assert [p.name for p in paths] == ["parent-zoom1.yaml", "parent-zoom2.yaml"]
    for box, path in zip(boxes, paths):
        spec = load_sweep(path)  # the same check `fractal-llm sweep check` runs
        assert spec.name == box.name == path.stem and box.yaml_path == str(path)
        assert spec.fixed == {"num_tokens": 12345, "lr_schedule": "constant"}
        axes = dict(spec.axes)
        for name, (lo, hi) in (("matrix_lr", box.x_range), ("unembedding_lr", box.y_range)):
            values = axes[name]
            assert len(values) == 12 and values[0] == lo and values[-1] == hi
            ratios = np.diff(np.log(values))
            assert np.allclose(ratios, ratios[0])  # log-spaced
        assert "run_cap" not in spec.raw
    parent = parent_config()
    assert parent["parameters"]["matrix_lr"]["values"] == XS  # the parent config is not modified


def test_draw_boxes_outlines_each_box():
    grid = checkerboard_corner_grid()
    boxes = find_zoom_boxes(grid, k=2)
    fig, ax = plt.subplots()
    draw_boxes(ax, grid, boxes)
    rectangles = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(rectangles) == 2
    x0 = rectangles[0].get_x()
    # Plot coordinates are log10; the box's left edge is half a cell left of its first column's value.
    assert math.log10(XS[boxes[0].cols[0] - 1]) < x0 < math.log10(XS[boxes[0].cols[0]])
    plt.close(fig)


def test_a_point_list_parent_zooms_into_a_full_grid(tmp_path):
    """A refill (point-list) sweep reported alone: its zoom sweeps are ordinary grids over the box."""
    parent = parent_config()
    points = [{"matrix_lr": x, "unembedding_lr": y} for x in XS for y in YS]
    parent["parameters"] = {"grid_point": {"values": points}, "num_tokens": {"value": 12345}}
    grid = checkerboard_corner_grid()
    boxes = find_zoom_boxes(grid, 1)
    (path,) = write_zoom_sweeps(grid, boxes, parent, tmp_path, resolution=4)
    spec = load_sweep(path)
    assert spec.points is None and spec.n_points == 16 and spec.fixed == {"num_tokens": 12345}
