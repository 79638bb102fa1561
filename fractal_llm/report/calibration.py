"""How the dimension estimators read borders of known dimension, and the true D a measured one allows.

Box counting on a finite map reads low on rough borders: a rasterised border is smooth below one pixel and
the fit window is only a few octaves wide. So a raw D is not the border's D. This module measures both
estimators (fractal.estimate_dimension, ours, and fractal.paper_dimension) on synthetic borders whose
dimension is known, at the resolutions maps are made at (SHAPES x RESOLUTIONS x SEEDS), and inverts that
table: `calibrated_range(raw D, resolution)` gives the true D values whose measured D, within CALIBRATION_SDS
seed standard deviations, is the raw one.

Shapes (label images, 1.0 inside / 0.0 outside; the seed moves and turns each one):
- disc: a smooth closed curve, D = 1;
- koch: a filled Koch snowflake, whose boundary is the Koch curve, D = log 4 / log 3;
- fbm_H: the zero level set of a fractional Brownian surface of Hurst exponent H made by spectral
  synthesis, D = 2 - H (H = 0.9, 0.74, 0.5, 0.25, 0.1: D = 1.1, 1.26, 1.5, 1.75, 1.9);
- noise: independent coin-flip labels, a border that fills the plane, D = 2 (the shuffled-labels floor).

TABLE holds the numbers scripts/calibrate_estimator.py measured (docs/calibration.md shows them);
tests/test_calibration.py measures the 64² and 128² rows again and fails when the estimators drift from it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from fractal_llm.report.fractal import estimate_dimension, paper_dimension

RESOLUTIONS = (64, 128, 256)
SEEDS = tuple(range(16))  # 16 readings per row: the sd of one reading, the mean to about sd / 4
CALIBRATION_SDS = 2.0  # a raw D is consistent with a true D when it lies within 2 seed sds of its mean reading
MIN_SD = 0.01  # floor on a row's sd: 16 seeds of a nearly deterministic shape (the disc) can agree to 0.001
KOCH_D = math.log(4) / math.log(3)


# ---------------------------------------------------------------------------------------------- shapes


def koch_snowflake(level: int) -> np.ndarray:
    """Closed polygon (first point repeated last) of a Koch snowflake of side 1, bumps pointing outward."""
    pts = np.array([[0.0, 0.0], [0.5, math.sqrt(3) / 2], [1.0, 0.0], [0.0, 0.0]])
    turn = np.array([[0.5, -math.sqrt(3) / 2], [math.sqrt(3) / 2, 0.5]])   # +60 degrees
    for _ in range(level):
        start, step = pts[:-1], (pts[1:] - pts[:-1]) / 3
        third = start + step
        peak = third + step @ turn.T
        pts = np.vstack([np.stack([start, third, peak, start + 2 * step], axis=1).reshape(-1, 2), pts[-1:]])
    return pts


def fill_polygon(pts: np.ndarray, n: int) -> np.ndarray:
    """Even-odd scanline fill of a closed polygon given in pixel coordinates (pixel centres sampled)."""
    x0, y0, x1, y1 = pts[:-1, 0], pts[:-1, 1], pts[1:, 0], pts[1:, 1]
    first_row = np.ceil(np.minimum(y0, y1) - 0.5).astype(int)
    n_rows = np.clip(np.ceil(np.maximum(y0, y1) - 0.5).astype(int) - first_row, 0, None)
    edge = np.repeat(np.arange(len(x0)), n_rows)
    rows = np.repeat(first_row, n_rows) + np.arange(n_rows.sum()) - np.repeat(np.cumsum(n_rows) - n_rows, n_rows)
    t = (rows + 0.5 - y0[edge]) / (y1[edge] - y0[edge])
    xs = x0[edge] + t * (x1[edge] - x0[edge])
    order = np.lexsort((xs, rows))
    rows, cols = rows[order], np.clip(np.ceil(xs[order] - 0.5).astype(int), 0, n)
    toggles = np.zeros((n, n + 1), dtype=np.int32)
    np.add.at(toggles, (rows, cols), np.where(np.arange(len(rows)) % 2 == 0, 1, -1))   # enter, leave, ...
    return (np.cumsum(toggles, axis=1)[:, :n] > 0).astype(float)


def koch(n: int, seed: int) -> np.ndarray:
    """A filled Koch snowflake 0.9 n across, turned and moved off the pixel grid by the seed. Its polygon
    has segments under half a pixel, so the boundary is the curve down to the raster."""
    rng = np.random.default_rng(seed)
    level = max(1, math.ceil(math.log(2 * n) / math.log(3)))
    pts = koch_snowflake(level)
    pts = pts - (pts.max(0) + pts.min(0)) / 2
    angle = rng.uniform(0, 2 * math.pi / 3)  # the snowflake repeats every 120 degrees
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    pts = pts @ rotation.T
    radius = np.hypot(pts[:, 0], pts[:, 1]).max()
    return fill_polygon(pts * (0.45 * n / radius) + n / 2 + rng.uniform(-0.5, 0.5, 2), n)


def disc(n: int, seed: int) -> np.ndarray:
    """A disc of radius 0.3-0.4 n, its centre moved off the pixel grid by the seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n] + 0.5
    cx, cy = n / 2 + rng.uniform(-0.5, 0.5, 2)
    return (((x - cx) ** 2 + (y - cy) ** 2) < (rng.uniform(0.3, 0.4) * n) ** 2).astype(float)


def fbm_level_set(n: int, seed: int, hurst: float) -> np.ndarray:
    """The zero level set of a periodic fractional Brownian surface of Hurst exponent `hurst`, by spectral
    synthesis: Gaussian Fourier amplitudes with power |k|^-(2H+2), the mean set to 0. Its level sets have
    dimension 2 - H."""
    rng = np.random.default_rng(seed)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij"))
    k[0, 0] = 1.0
    amplitude = k ** -(hurst + 1)
    amplitude[0, 0] = 0.0
    noise = rng.standard_normal((n, n)) + 1j * rng.standard_normal((n, n))
    field = np.fft.ifft2(noise * amplitude).real
    return (field > 0).astype(float)


def noise(n: int, seed: int) -> np.ndarray:
    """Coin-flip labels: the border fills the plane (the report's shuffled-labels floor)."""
    return (np.random.default_rng(seed).random((n, n)) < 0.5).astype(float)


@dataclass(frozen=True)
class Shape:
    name: str
    true_d: float
    render: Callable[[int, int], np.ndarray]  # (n, seed) -> n x n labels


SHAPES = (
    Shape("disc", 1.0, disc),
    Shape("fbm_H0.9", 1.1, lambda n, seed: fbm_level_set(n, seed, 0.9)),
    Shape("koch", KOCH_D, koch),
    Shape("fbm_H0.74", 1.26, lambda n, seed: fbm_level_set(n, seed, 0.74)),
    Shape("fbm_H0.5", 1.5, lambda n, seed: fbm_level_set(n, seed, 0.5)),
    Shape("fbm_H0.25", 1.75, lambda n, seed: fbm_level_set(n, seed, 0.25)),
    Shape("fbm_H0.1", 1.9, lambda n, seed: fbm_level_set(n, seed, 0.1)),  # fills the gap from 1.75 to noise
    Shape("noise", 2.0, noise),
)


# ---------------------------------------------------------------------------------------------- measuring


def measure(shape: Shape, n: int, seeds=SEEDS) -> dict:
    """One table row: mean and sd over the seeds of our D, our smallest-box slope (box size 1 to 2) and the
    paper method's D."""
    ours, smallest, paper = [], [], []
    for seed in seeds:
        labels = shape.render(n, seed)
        estimate = estimate_dimension(labels)
        ours.append(estimate.dimension)
        smallest.append(estimate.local_slopes[0])
        paper.append(paper_dimension(labels).dimension)

    def stats(values):
        return round(float(np.mean(values)), 3), round(float(np.std(values, ddof=1)), 3)

    (ours_mean, ours_sd), (small_mean, small_sd), (paper_mean, paper_sd) = stats(ours), stats(smallest), stats(paper)
    return {"shape": shape.name, "true_d": round(shape.true_d, 3), "resolution": n, "seeds": len(seeds),
            "ours": ours_mean, "ours_sd": ours_sd, "smallest_box": small_mean, "smallest_box_sd": small_sd,
            "paper": paper_mean, "paper_sd": paper_sd}


def calibration_table(resolutions=RESOLUTIONS, seeds=SEEDS) -> list[dict]:
    return [measure(shape, n, seeds) for n in resolutions for shape in SHAPES]


# Measured by `python scripts/calibrate_estimator.py --write` (which rewrites the block between the markers and
# docs/calibration.md); tests/test_calibration.py measures the rows again and fails when one drifts.
# BEGIN TABLE
TABLE: list[dict] = [
    {'shape': 'disc', 'true_d': 1.0, 'resolution': 64, 'seeds': 16, 'ours': 1.01, 'ours_sd': 0.039, 'smallest_box': 1.002, 'smallest_box_sd': 0.02, 'paper': 1.299, 'paper_sd': 0.1},
    {'shape': 'fbm_H0.9', 'true_d': 1.1, 'resolution': 64, 'seeds': 16, 'ours': 1.121, 'ours_sd': 0.059, 'smallest_box': 1.049, 'smallest_box_sd': 0.031, 'paper': 1.444, 'paper_sd': 0.131},
    {'shape': 'koch', 'true_d': 1.262, 'resolution': 64, 'seeds': 16, 'ours': 1.177, 'ours_sd': 0.058, 'smallest_box': 1.138, 'smallest_box_sd': 0.036, 'paper': 1.398, 'paper_sd': 0.061},
    {'shape': 'fbm_H0.74', 'true_d': 1.26, 'resolution': 64, 'seeds': 16, 'ours': 1.179, 'ours_sd': 0.058, 'smallest_box': 1.092, 'smallest_box_sd': 0.05, 'paper': 1.515, 'paper_sd': 0.105},
    {'shape': 'fbm_H0.5', 'true_d': 1.5, 'resolution': 64, 'seeds': 16, 'ours': 1.282, 'ours_sd': 0.051, 'smallest_box': 1.158, 'smallest_box_sd': 0.035, 'paper': 1.616, 'paper_sd': 0.049},
    {'shape': 'fbm_H0.25', 'true_d': 1.75, 'resolution': 64, 'seeds': 16, 'ours': 1.437, 'ours_sd': 0.044, 'smallest_box': 1.243, 'smallest_box_sd': 0.031, 'paper': 1.64, 'paper_sd': 0.033},
    {'shape': 'fbm_H0.1', 'true_d': 1.9, 'resolution': 64, 'seeds': 16, 'ours': 1.54, 'ours_sd': 0.045, 'smallest_box': 1.298, 'smallest_box_sd': 0.03, 'paper': 1.655, 'paper_sd': 0.03},
    {'shape': 'noise', 'true_d': 2.0, 'resolution': 64, 'seeds': 16, 'ours': 1.926, 'ours_sd': 0.004, 'smallest_box': 1.765, 'smallest_box_sd': 0.01, 'paper': 1.678, 'paper_sd': 0.039},
    {'shape': 'disc', 'true_d': 1.0, 'resolution': 128, 'seeds': 16, 'ours': 1.0, 'ours_sd': 0.032, 'smallest_box': 0.997, 'smallest_box_sd': 0.007, 'paper': 1.142, 'paper_sd': 0.042},
    {'shape': 'fbm_H0.9', 'true_d': 1.1, 'resolution': 128, 'seeds': 16, 'ours': 1.111, 'ours_sd': 0.031, 'smallest_box': 1.059, 'smallest_box_sd': 0.028, 'paper': 1.165, 'paper_sd': 0.1},
    {'shape': 'koch', 'true_d': 1.262, 'resolution': 128, 'seeds': 16, 'ours': 1.194, 'ours_sd': 0.038, 'smallest_box': 1.133, 'smallest_box_sd': 0.034, 'paper': 1.296, 'paper_sd': 0.056},
    {'shape': 'fbm_H0.74', 'true_d': 1.26, 'resolution': 128, 'seeds': 16, 'ours': 1.167, 'ours_sd': 0.043, 'smallest_box': 1.096, 'smallest_box_sd': 0.03, 'paper': 1.243, 'paper_sd': 0.107},
    {'shape': 'fbm_H0.5', 'true_d': 1.5, 'resolution': 128, 'seeds': 16, 'ours': 1.298, 'ours_sd': 0.058, 'smallest_box': 1.17, 'smallest_box_sd': 0.018, 'paper': 1.4, 'paper_sd': 0.111},
    {'shape': 'fbm_H0.25', 'true_d': 1.75, 'resolution': 128, 'seeds': 16, 'ours': 1.428, 'ours_sd': 0.075, 'smallest_box': 1.252, 'smallest_box_sd': 0.024, 'paper': 1.603, 'paper_sd': 0.067},
    {'shape': 'fbm_H0.1', 'true_d': 1.9, 'resolution': 128, 'seeds': 16, 'ours': 1.628, 'ours_sd': 0.138, 'smallest_box': 1.304, 'smallest_box_sd': 0.015, 'paper': 1.681, 'paper_sd': 0.018},
    {'shape': 'noise', 'true_d': 2.0, 'resolution': 128, 'seeds': 16, 'ours': 1.998, 'ours_sd': 0.0, 'smallest_box': 1.792, 'smallest_box_sd': 0.006, 'paper': 1.696, 'paper_sd': 0.005},
    {'shape': 'disc', 'true_d': 1.0, 'resolution': 256, 'seeds': 16, 'ours': 0.997, 'ours_sd': 0.03, 'smallest_box': 0.999, 'smallest_box_sd': 0.005, 'paper': 1.063, 'paper_sd': 0.036},
    {'shape': 'fbm_H0.9', 'true_d': 1.1, 'resolution': 256, 'seeds': 16, 'ours': 1.11, 'ours_sd': 0.023, 'smallest_box': 1.057, 'smallest_box_sd': 0.017, 'paper': 1.168, 'paper_sd': 0.059},
    {'shape': 'koch', 'true_d': 1.262, 'resolution': 256, 'seeds': 16, 'ours': 1.207, 'ours_sd': 0.047, 'smallest_box': 1.123, 'smallest_box_sd': 0.028, 'paper': 1.347, 'paper_sd': 0.042},
    {'shape': 'fbm_H0.74', 'true_d': 1.26, 'resolution': 256, 'seeds': 16, 'ours': 1.181, 'ours_sd': 0.048, 'smallest_box': 1.106, 'smallest_box_sd': 0.014, 'paper': 1.235, 'paper_sd': 0.069},
    {'shape': 'fbm_H0.5', 'true_d': 1.5, 'resolution': 256, 'seeds': 16, 'ours': 1.312, 'ours_sd': 0.068, 'smallest_box': 1.179, 'smallest_box_sd': 0.011, 'paper': 1.412, 'paper_sd': 0.075},
    {'shape': 'fbm_H0.25', 'true_d': 1.75, 'resolution': 256, 'seeds': 16, 'ours': 1.49, 'ours_sd': 0.138, 'smallest_box': 1.258, 'smallest_box_sd': 0.011, 'paper': 1.582, 'paper_sd': 0.049},
    {'shape': 'fbm_H0.1', 'true_d': 1.9, 'resolution': 256, 'seeds': 16, 'ours': 1.732, 'ours_sd': 0.176, 'smallest_box': 1.311, 'smallest_box_sd': 0.012, 'paper': 1.647, 'paper_sd': 0.021},
    {'shape': 'noise', 'true_d': 2.0, 'resolution': 256, 'seeds': 16, 'ours': 1.97, 'ours_sd': 0.001, 'smallest_box': 1.801, 'smallest_box_sd': 0.003, 'paper': 1.655, 'paper_sd': 0.007},
]
# END TABLE


# ---------------------------------------------------------------------------------------------- inverting


def nearest_resolution(side: int) -> int:
    """The calibrated resolution nearest a map's short side (in log2: a 90² map is nearer 64² than 128²...)."""
    return min(RESOLUTIONS, key=lambda r: abs(math.log2(side / r)))


def calibration_band(resolution: int, method: str = "ours", table: list[dict] | None = None):
    """(true D, lowest and highest consistent reading) per calibrated true D at `resolution`: the mean reading
    -/+ CALIBRATION_SDS sds, and over shapes of one true D (koch and fbm_H0.74) the widest of them."""
    if method not in ("ours", "paper"):
        raise ValueError(f"method={method!r}: allowed 'ours' or 'paper'")
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution={resolution}: calibrated resolutions are {RESOLUTIONS}")
    band: dict[float, list[float]] = {}
    for row in table or TABLE:
        if row["resolution"] != resolution:
            continue
        half = CALIBRATION_SDS * max(row[f"{method}_sd"], MIN_SD)
        lo, hi = row[method] - half, row[method] + half
        true_d = round(row["true_d"], 2)  # koch's 1.262 and fbm_H0.74's 1.26 are one calibrated D
        old = band.get(true_d, [lo, hi])
        band[true_d] = [min(old[0], lo), max(old[1], hi)]
    true = np.array(sorted(band))
    return true, np.array([band[d][0] for d in true]), np.array([band[d][1] for d in true])


def calibrated_range(raw_d: float, side: int, method: str = "ours", table: list[dict] | None = None) -> dict:
    """The true D values consistent with a raw D measured on a map whose short side is `side` pixels.

    The table's band at the nearest calibrated resolution (calibration_band), drawn as straight lines between
    calibrated D values, is inverted on a fine grid of true D in [1, 2]: {lo, hi} are the smallest and largest
    true D whose band holds raw_d. A raw D below every band gives lo = hi = 1 (a border is at least a curve),
    above every band lo = hi = 2. Returns {lo, hi, raw, resolution, method}; lo/hi None for a NaN raw D.
    """
    resolution = nearest_resolution(side)
    out = {"lo": None, "hi": None, "raw": raw_d, "resolution": resolution, "method": method,
           "sds": CALIBRATION_SDS}
    if raw_d is None or not math.isfinite(raw_d):
        return out
    true, lo_band, hi_band = calibration_band(resolution, method, table)
    grid = np.linspace(true[0], true[-1], 1001)
    inside = (np.interp(grid, true, lo_band) <= raw_d) & (raw_d <= np.interp(grid, true, hi_band))
    if inside.any():
        lo, hi = grid[inside][0], grid[inside][-1]
    else:
        lo = hi = true[0] if raw_d < lo_band[0] else true[-1]
    return {**out, "lo": round(float(lo), 3), "hi": round(float(hi), 3)}


def calibrated_sentence(calibrated: dict) -> str:
    """'true D 1.42-1.58 (calibrated at 64²)' for report.md, or why there is none."""
    if calibrated is None or calibrated.get("lo") is None:
        return f"no calibrated range ({(calibrated or {}).get('note', 'no raw D')})"
    return (f"true D {calibrated['lo']:.2f}–{calibrated['hi']:.2f} (synthetic borders at "
            f"{calibrated['resolution']}², ±{calibrated['sds']:g} sd; docs/calibration.md)")
