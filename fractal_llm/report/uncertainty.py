"""The analysis of a perturbation study (fractal_llm/plans/perturb.py): uncertainty exponent and precision floor.

- f(eps): the share of base points (with results) whose class (trainable or not) differs from that of the
  point moved by eps decades. For a border of dimension D, f(eps) ∝ eps^alpha with alpha = 2 - D (McDonald,
  Grebogi, Ott and Yorke, 1985): alpha 1 for a smooth border, alpha near 0 for a riddled one, where no
  precision predicts a verdict. alpha is fitted over the eps with f > 0 (at least three of them), its
  interval a percentile bootstrap over the base points.
- The rounding probe: line points run again with both learning rates moved by one part in 10^7: how far the
  loss ratio moves (|dr|), how many verdicts flip, and the precision floor: the largest transect spacing s at
  which the mean |dr| is at least half the transect's S(s) (structure below it is precision noise).
"""

from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
RESULTS = ("trainable", "not_trainable", "diverged")


def flip_fractions(base: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """(n_eps,) share of flips; base: (n,) classes (NaN: no result), moved: (n, n_eps) classes."""
    ok = np.isfinite(base)[:, None] & np.isfinite(moved)
    flips = (moved != base[:, None]) & ok
    return flips.sum(axis=0) / np.maximum(ok.sum(axis=0), 1)


MIN_FIT_POINTS = 3  # eps values with a flip a slope needs: through two, any f(eps) fits a line


def fit_alpha(epsilons, fractions) -> float:
    """Slope of log f against log eps over the eps with f > 0; NaN with fewer than MIN_FIT_POINTS (no flips at
    the small eps is then the finding: f falls faster than any power the data can show)."""
    e, f = np.asarray(epsilons, float), np.asarray(fractions, float)
    keep = f > 0
    if keep.sum() < MIN_FIT_POINTS:
        return math.nan
    return float(np.polyfit(np.log(e[keep]), np.log(f[keep]), 1)[0])


def uncertainty_exponent(epsilons, base, moved, seed: int = 0) -> dict:
    """{epsilons, fractions, flips, alpha, interval, dimension}."""
    base, moved = np.asarray(base, float), np.asarray(moved, float)
    fractions = flip_fractions(base, moved)
    alpha = fit_alpha(epsilons, fractions)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(base), size=(BOOTSTRAP_RESAMPLES, len(base)))
    boots = np.array([fit_alpha(epsilons, flip_fractions(base[p], moved[p])) for p in picks])
    boots = boots[np.isfinite(boots)]
    interval = [float(v) for v in np.percentile(boots, [2.5, 97.5])] if len(boots) else [math.nan, math.nan]
    ok = np.isfinite(base)[:, None] & np.isfinite(moved)
    return {"epsilons": [float(e) for e in epsilons], "fractions": fractions.tolist(),
            "flips": ((moved != base[:, None]) & ok).sum(axis=0).tolist(), "points": int(np.isfinite(base).sum()),
            "alpha": alpha, "interval": interval, "dimension": 2 - alpha if math.isfinite(alpha) else math.nan}


def precision_floor(line_ratio, moved_ratio, line_class, moved_class, structure: list[list[float]]) -> dict:
    """The rounding probe against a transect's structure function ([[spacing, S], ...])."""
    a, b = np.asarray(line_ratio, float), np.asarray(moved_ratio, float)
    ok = np.isfinite(a) & np.isfinite(b)
    change = np.abs(a[ok] - b[ok])
    mean_change = float(change.mean()) if len(change) else math.nan
    floor = None
    for spacing, s in structure:
        if s is not None and math.isfinite(s) and mean_change >= s / 2:
            floor = spacing
    cls_ok = np.isfinite(np.asarray(line_class, float)) & np.isfinite(np.asarray(moved_class, float))
    flips = int((np.asarray(line_class)[cls_ok] != np.asarray(moved_class)[cls_ok]).sum())
    return {"points": int(ok.sum()), "mean_change": mean_change,
            "median_change": float(np.median(change)) if len(change) else math.nan,
            "max_change": float(change.max()) if len(change) else math.nan, "flips": flips,
            "floor": floor}


def class_of(verdict: str | None) -> float:
    """1 trainable, 0 not trainable (not_trainable or diverged), NaN without a result."""
    if verdict not in RESULTS:
        return math.nan
    return 1.0 if verdict == "trainable" else 0.0
