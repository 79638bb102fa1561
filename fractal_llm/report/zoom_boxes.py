"""Where to look closer: rank square sub-boxes of the map by boundary density and turn the best into sweeps.

Density = boundary (edge) pixels inside the box / the box's edge-pixel area. The top k boxes that do
not overlap each become a child sweep YAML: the parent's config with both axes restricted to the box's
value range at a chosen resolution (log-spaced, from sweep.axis_values), checked by sweep.check_sweep.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fractal_llm.config import field_types
from fractal_llm.report.fractal import edge_mask
from fractal_llm.report.grid import Grid
from fractal_llm.sweep import POINT_KEY, axis_is_log, axis_values, check_sweep, dump_sweep_yaml


@dataclass
class ZoomBox:
    rank: int  # 1 = densest
    rows: tuple[int, int]  # cell rows [start, stop) along y
    cols: tuple[int, int]  # cell columns [start, stop) along x
    density: float  # edge pixels / edge-pixel area of the box
    n_edges: int
    x_range: tuple[float, float]  # axis values of the box's first and last column
    y_range: tuple[float, float]
    name: str = ""
    yaml_path: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _starts(n: int, size: int, stride: int) -> list[int]:
    """Box start positions along one side; the last box always touches the far edge."""
    starts = list(range(0, n - size + 1, stride))
    if starts[-1] != n - size:
        starts.append(n - size)
    return starts


def find_zoom_boxes(grid: Grid, k: int = 3, size: int | None = None, stride: int | None = None) -> list[ZoomBox]:
    """Top-k non-overlapping square boxes (size cells a side, default n/4; stride default n/8) by density."""
    ny, nx = grid.shape
    n = min(ny, nx)
    size = size or max(2, n // 4)
    stride = stride or max(1, n // 8)
    if k < 0 or size < 2 or size > n or stride < 1:
        raise ValueError(f"zoom: k={k}, size={size}, stride={stride} on a {ny}x{nx} grid: need k >= 0, "
                         f"2 <= size <= {n}, stride >= 1")
    if k == 0:
        return []
    edges = edge_mask(grid.labels)
    # Integral image: the edge count of any sub-rectangle in O(1).
    table = np.zeros((edges.shape[0] + 1, edges.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = np.cumsum(np.cumsum(edges, axis=0), axis=1)
    span = size - 1  # a box of `size` cells holds (size-1)^2 edge pixels
    candidates = []
    for i0 in _starts(ny, size, stride):
        for j0 in _starts(nx, size, stride):
            count = int(table[i0 + span, j0 + span] - table[i0, j0 + span] - table[i0 + span, j0] + table[i0, j0])
            if count:
                candidates.append((count / span**2, count, i0, j0))
    candidates.sort(key=lambda c: (-c[0], c[2], c[3]))
    chosen: list[ZoomBox] = []
    for density, count, i0, j0 in candidates:
        if len(chosen) == k:
            break
        if any(_overlap((i0, i0 + size), box.rows) and _overlap((j0, j0 + size), box.cols) for box in chosen):
            continue
        chosen.append(ZoomBox(rank=len(chosen) + 1, rows=(i0, i0 + size), cols=(j0, j0 + size), density=density,
                              n_edges=count, x_range=(grid.x_values[j0], grid.x_values[j0 + size - 1]),
                              y_range=(grid.y_values[i0], grid.y_values[i0 + size - 1])))
    return chosen


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# ---------------------------------------------------------------- child sweeps


def child_sweep_config(sweep_config: dict, grid: Grid, box: ZoomBox, resolution: int, parent_name: str) -> dict:
    """The parent sweep with both axes replaced by `resolution` values spanning the box."""
    child = copy.deepcopy(sweep_config)
    child.pop("run_cap", None)  # the parent's cap says nothing about the child's grid
    child["parameters"].pop(POINT_KEY, None)  # a point-list parent: the child is a full grid over the box
    for name, (lo, hi) in ((grid.x_name, box.x_range), (grid.y_name, box.y_range)):
        values = axis_values(lo, hi, resolution, "log" if axis_is_log([lo, hi]) else "lin")
        if field_types()[name] is int:
            values = sorted({int(round(v)) for v in values})  # an integer field stays integer
        child["parameters"][name] = {"values": list(values)}
    child["name"] = f"{parent_name}-zoom{box.rank}"
    return child


def write_zoom_sweeps(grid: Grid, boxes: list[ZoomBox], sweep_config: dict, out_dir: str | Path,
                      resolution: int = 16) -> list[Path]:
    """Write each box as a ready-to-run sweep YAML (checked by sweep.check_sweep); fills box.name/yaml_path."""
    if resolution < 2:
        raise ValueError(f"zoom resolution={resolution}: need at least 2 values per axis")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parent_name = str(sweep_config.get("name") or grid.name or "sweep")
    paths = []
    for box in boxes:
        child = child_sweep_config(sweep_config, grid, box, resolution, parent_name)
        check_sweep(child)  # raises SweepError: a child sweep that would not run is never written
        path = out_dir / f"{child['name']}.yaml"
        path.write_text(dump_sweep_yaml(child))
        box.name, box.yaml_path = child["name"], str(path)
        paths.append(path)
    return paths
