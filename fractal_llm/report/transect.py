"""Scale analysis of a transect: a line of N evenly spaced points through a border (docs/results.md).

A line cuts a border of dimension D in a set of dimension D - 1 (Marstrand's slicing theorem), so counting
where the verdict changes along the line, at every spacing, measures the border with N points instead of the
N^2 a 2-D frame needs.
- Crossings N(m) at spacing m (in steps of the line): the verdict changes between points i and i + m, summed
  over i and divided by m. This is the mean, over the m offsets, of the crossings of the subsampled line
  (every m-th point from that offset). A smooth border gives a count flat in m; a border of dimension
  1 + D_line gives N ∝ m^-D_line, fitted where the subsampled line keeps FIT_MIN_SUBSAMPLED points.
- The structure function S(m): the mean |r(i + m) - r(i)| of the loss ratio r. Its local exponent
  log2(S(2m) / S(m)) is 1 for a smooth function and below 1 for a rough one.
- The crossover spacing: the largest spacing at and below which the exponent stays >= SMOOTH_EXPONENT, i.e.
  where the line turns smooth (the budget ladder's decision rule, docs/results.md).
Spacings are octaves m = 1, 2, 4, ... up to half the line (MIN_SUBSAMPLED).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MIN_SUBSAMPLED = 2  # points of a subsampled line at the coarsest spacing: m <= n/2, so each spacing still
# averages n - m >= n/2 pairs (a 512-point line spans m = 1..256, 2.4 decades of spacing)
FIT_MIN_SUBSAMPLED = 16  # D_line is fitted where a subsampled line keeps >= 16 points: coarser, a line sees
# fewer crossings than it holds (a sine with 5 crossings on 4096 points counts 5.0 up to m = 512, 1.7 at m = 2048)
SMOOTH_EXPONENT = 0.9  # a structure exponent at or above this is "smooth" (the decision rule's cut-off)
FINE_OCTAVES = 3  # the roughness exponent is fitted over the finest spacings m = 1 .. 2^FINE_OCTAVES
BOOTSTRAP_BLOCKS = 8  # contiguous blocks of the line resampled for the slope's interval
BOOTSTRAP_RESAMPLES = 2000
SMOOTH_REFERENCE_WIDTH = 1 / 16  # the smooth reference: r under a Gaussian of this share of the line (sigma)


@dataclass
class LineScaling:
    """One line's crossings and structure function at every octave spacing."""
    step: float  # spacing of neighbouring points (decades on a log axis)
    spacings: list[float]  # step * m for m = 1, 2, 4, ...
    crossings: list[float]  # N(m)
    structure: list[float]  # S(m), NaN where no finite pair
    local_dimensions: list[float]  # -log2(N(2m) / N(m)), one fewer than spacings
    local_exponents: list[float]  # log2(S(2m) / S(m)), one fewer than spacings
    line_dimension: float  # slope of log N against -log m over the spacings of FIT_MIN_SUBSAMPLED
    interval: tuple[float, float]  # 95% block-bootstrap interval of line_dimension
    roughness_exponent: float  # slope of log S against log m over the finest FINE_OCTAVES octaves
    crossover: float | None  # the crossover spacing; None: rough down to the finest spacing

    def to_dict(self) -> dict:
        return {"step": self.step, "crossings": [[s, c] for s, c in zip(self.spacings, self.crossings)],
                "structure": [[s, v] for s, v in zip(self.spacings, self.structure)],
                "local_dimensions": self.local_dimensions, "local_exponents": self.local_exponents,
                "line_dimension": self.line_dimension, "interval": list(self.interval),
                "roughness_exponent": self.roughness_exponent, "crossover": self.crossover}


def octaves(n: int) -> list[int]:
    """m = 1, 2, 4, ... while n / m >= MIN_SUBSAMPLED."""
    out, m = [], 1
    while n / m >= MIN_SUBSAMPLED:
        out.append(m)
        m *= 2
    return out


def change_indicators(labels: np.ndarray, m: int) -> np.ndarray:
    """1 where the label at i differs from the label at i + m (i = 0 .. n - m - 1)."""
    return (labels[:-m] != labels[m:]).astype(float)


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """Least-squares slope of y on x over the finite pairs; NaN with fewer than two."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def dimension_from_counts(ms: list[int], counts: np.ndarray) -> float:
    """Slope of log N against -log m, over the spacings with at least one crossing."""
    counts = np.asarray(counts, float)
    with np.errstate(divide="ignore"):
        return slope(-np.log(np.asarray(ms, float)), np.where(counts > 0, np.log(counts), np.nan))


def block_bootstrap_interval(labels: np.ndarray, ms: list[int], seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the line dimension: the line's pairs (i, i + m) are grouped by the block
    holding i, and BOOTSTRAP_BLOCKS contiguous blocks are resampled with replacement."""
    n = len(labels)
    edges = np.linspace(0, n, BOOTSTRAP_BLOCKS + 1).astype(int)
    per_block = np.zeros((BOOTSTRAP_BLOCKS, len(ms)))
    for j, m in enumerate(ms):
        changes = change_indicators(labels, m)
        for b in range(BOOTSTRAP_BLOCKS):
            per_block[b, j] = changes[edges[b]:min(edges[b + 1], len(changes))].sum() / m
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, BOOTSTRAP_BLOCKS, size=(BOOTSTRAP_RESAMPLES, BOOTSTRAP_BLOCKS))
    slopes = np.array([dimension_from_counts(ms, per_block[p].sum(axis=0)) for p in picks])
    slopes = slopes[np.isfinite(slopes)]
    if len(slopes) == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    return float(lo), float(hi)


def structure_function(values: np.ndarray, m: int) -> float:
    d = np.abs(values[m:] - values[:-m])
    d = d[np.isfinite(d)]
    return float(d.mean()) if len(d) else math.nan


def crossover_spacing(spacings: list[float], exponents: list[float]) -> float | None:
    """The largest spacing s with exponent >= SMOOTH_EXPONENT at s and at every spacing below it (the exponent
    at s is the one between s and 2s). None when the finest spacing is already rough."""
    found = None
    for s, z in zip(spacings, exponents):
        if not (z >= SMOOTH_EXPONENT):
            break
        found = s
    return found


def analyse_line(labels, values, step: float, seed: int = 0) -> LineScaling:
    """The scaling of one line: labels (True = trainable) and loss ratios at N evenly spaced points."""
    labels = np.asarray(labels, bool)
    values = np.asarray(values, float)
    ms = octaves(len(labels))
    if len(ms) < 2:
        raise ValueError(f"a line of {len(labels)} points: a transect needs at least {2 * MIN_SUBSAMPLED}")
    counts = np.array([change_indicators(labels, m).sum() / m for m in ms])
    fit = [j for j, m in enumerate(ms) if len(labels) / m >= FIT_MIN_SUBSAMPLED]
    structure = np.array([structure_function(values, m) for m in ms])
    with np.errstate(divide="ignore", invalid="ignore"):
        local_dims = [float(-np.log2(counts[j + 1] / counts[j])) if counts[j] > 0 and counts[j + 1] > 0
                      else math.nan for j in range(len(ms) - 1)]
        local_exps = [float(np.log2(structure[j + 1] / structure[j])) for j in range(len(ms) - 1)]
    fine = min(FINE_OCTAVES + 1, len(ms))
    with np.errstate(divide="ignore", invalid="ignore"):
        roughness = slope(np.log(np.asarray(ms[:fine], float)), np.log(structure[:fine]))
    spacings = [step * m for m in ms]
    return LineScaling(step=step, spacings=spacings, crossings=counts.tolist(), structure=structure.tolist(),
                       local_dimensions=local_dims, local_exponents=local_exps,
                       line_dimension=dimension_from_counts([ms[j] for j in fit], counts[fit]),
                       interval=block_bootstrap_interval(labels, [ms[j] for j in fit], seed),
                       roughness_exponent=roughness,
                       crossover=crossover_spacing(spacings[:-1], local_exps))


def smooth_reference(values, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """A smooth line with the same coarse shape: r under a Gaussian (sigma = SMOOTH_REFERENCE_WIDTH of the line,
    non-finite values left out, edges renormalised), and its labels r < threshold."""
    values = np.asarray(values, float)
    n = len(values)
    sigma = max(1.0, SMOOTH_REFERENCE_WIDTH * n)
    idx = np.arange(n)
    weights = np.exp(-0.5 * ((idx[:, None] - idx[None, :]) / sigma) ** 2)
    finite = np.isfinite(values)
    weights = weights * finite[None, :]
    smooth = weights @ np.where(finite, values, 0.0) / weights.sum(axis=1)
    return smooth < threshold, smooth


def shuffled(labels, values, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The same labels and ratios in a random order (one permutation for both): what noise gives."""
    order = np.random.default_rng(seed).permutation(len(labels))
    return np.asarray(labels)[order], np.asarray(values, float)[order]


@dataclass
class TransectAnalysis:
    measured: LineScaling
    smooth: LineScaling
    noise: LineScaling

    def to_dict(self) -> dict:
        """report.json's `transect`: the measured line's figures, with its references beside them."""
        out = self.measured.to_dict()
        out["border_dimension"] = 1 + self.measured.line_dimension
        out["smooth_reference"] = self.smooth.to_dict()
        out["shuffled_labels"] = self.noise.to_dict()
        return out


def analyse_transect(labels, values, step: float, threshold: float, seed: int = 0) -> TransectAnalysis:
    """The line, a smooth reference made from it and its shuffled labels, analysed alike."""
    smooth_labels, smooth_values = smooth_reference(values, threshold)
    noise_labels, noise_values = shuffled(labels, values, seed)
    return TransectAnalysis(measured=analyse_line(labels, values, step, seed),
                            smooth=analyse_line(smooth_labels, smooth_values, step, seed),
                            noise=analyse_line(noise_labels, noise_values, step, seed))
