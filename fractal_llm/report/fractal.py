"""Fractal dimension of a trainability boundary, by box counting.

Input is a label image: 1.0 = trainable, 0.0 = not trainable, NaN = missing (a bool array also works).
The boundary is Sohl-Dickstein's edge set: the 2x2 pixel blocks that hold both a 1.0 and a 0.0.
A missing point never makes an edge, so holes in a sweep do not invent boundary.

Two estimators:
- `estimate_dimension`: slope of log N(s) against log s over the widest straight window of box sizes,
  with an uncertainty, fit quality, and an explicit `too_coarse` verdict for grids too small to say much.
- `paper_dimension`: the paper's recipe (median of local slopes over ~10 log-spaced sizes, counting the
  boxes that hold some but not only edge pixels), for comparing our numbers with Sohl-Dickstein 2024;
  `pooled_paper_dimension` is the paper's statistic over a zoom sequence (one median over all frames' slopes).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from fractal_llm.records import json_safe

# Fit-window rules (see estimate_dimension's docstring).
MIN_FIT_POINTS = 4          # a fit window holds at least this many box sizes ...
MIN_FIT_SPAN = 8.0          # ... and spans at least this factor in box size (3 octaves)
STRAIGHT_RMS = 0.05         # a window is "straight" when its log-count residual RMS is at most this
MIN_EDGE_PIXELS = 32        # fewer boundary pixels than this: too coarse
MIN_BOXES_PER_SIDE = 4      # largest default box: the edge image holds >= 4 of them along its short side


@dataclass
class DimensionEstimate:
    """Result of a box-counting dimension estimate.

    dimension: D = -slope of ln N(s) vs ln s (NaN when there is no boundary).
    uncertainty: one-sigma-like error bar on D (see `_slope_uncertainty`).
    too_coarse: True when the estimate must not be read as a measurement; `reason` says why.
    box_sizes / counts: every box size tried and its number of boxes holding an edge pixel.
    local_slopes: -d ln N / d ln s between consecutive box sizes (len(box_sizes) - 1 values).
    fit_range: (smallest, largest) box size used in the fit, inclusive; (0, 0) when no fit was made.
    r_squared: R^2 of the fit in log-log space.
    n_edge_pixels: number of boundary (2x2 edge) pixels.
    intercept: ln N at s = 1 of the fitted line (for drawing it).
    method: "window-fit" or "paper-median".
    """

    dimension: float
    uncertainty: float
    too_coarse: bool
    box_sizes: list[int]
    counts: list[int]
    local_slopes: list[float]
    fit_range: tuple[int, int]
    r_squared: float
    n_edge_pixels: int
    reason: str
    intercept: float = math.nan
    method: str = "window-fit"

    def to_dict(self) -> dict:
        """Plain, JSON-safe dict: non-finite floats become None, tuples become lists."""
        return json_safe(asdict(self))


def dimension_sentence(fractal: dict) -> str:
    """One line for a person: `D = 1.234 ± 0.05`, or why there is none (from DimensionEstimate.to_dict())."""
    d, u = fractal.get("dimension"), fractal.get("uncertainty")
    if fractal.get("too_coarse"):
        hint = f" (rough hint: {d:.2f})" if d is not None else ""
        return f"too coarse to estimate a dimension{hint}: {fractal.get('reason', '')}"
    unc = f" ± {u:.3f}" if u is not None else ""
    return f"D = {d:.3f}{unc}"


# ----------------------------------------------------------------------------------------------
# Input checking and edges

def _check_labels(labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate a label image; return (is_trainable, is_not_trainable) bool masks."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels: expected a 2-D array, got {arr.ndim}-D with shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError(f"labels: shape {arr.shape} is too small; need at least 2x2 to form an edge")
    if arr.dtype == np.bool_:
        return arr, ~arr
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"labels: dtype {arr.dtype} not allowed; use float (1.0/0.0/NaN) or bool")
    ones = arr == 1
    zeros = arr == 0
    if np.issubdtype(arr.dtype, np.floating):
        bad = ~(ones | zeros | np.isnan(arr))
    else:
        bad = ~(ones | zeros)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"labels{list(index)}={arr[index].item()!r}: allowed values are 1.0 (trainable), "
            f"0.0 (not trainable) and NaN (missing); {int(bad.sum())} value(s) are outside that set"
        )
    return ones, zeros


def edge_mask(labels) -> np.ndarray:
    """Boundary pixels, shape (H-1, W-1): True where the 2x2 block holds both a 1.0 and a 0.0.

    NaN (missing) is neither class, so it never completes an edge.
    """
    ones, zeros = _check_labels(labels)
    return _any_2x2(ones) & _any_2x2(zeros)


def _any_2x2(mask: np.ndarray) -> np.ndarray:
    rows = mask[:-1] | mask[1:]
    return rows[:, :-1] | rows[:, 1:]


# ----------------------------------------------------------------------------------------------
# Box counting

def box_counts(edges, box_sizes) -> np.ndarray:
    """Number of grid-aligned s x s boxes holding at least one edge pixel, for each s in box_sizes.

    Boxes start at pixel (0, 0); the last row/column of boxes may be partial (as if the image were
    padded with non-edge pixels up to a multiple of s).
    """
    return _box_sums(edges, box_sizes)[0]


def _box_sums(edges, box_sizes, with_full: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """(boxes with >= 1 edge pixel, boxes with only edge pixels or None) per box size.

    Sizes are processed in increasing order; when a size is a multiple of an earlier one, its
    occupancy grid is reduced from that smaller grid instead of from the full image (a box of size
    k*s is exactly k x k boxes of size s, padding included), so powers of 2 cost ~1.3 image passes.
    """
    edges = np.asarray(edges)
    if edges.ndim != 2 or edges.dtype != np.bool_:
        raise ValueError(f"edges: expected a 2-D bool array, got {edges.ndim}-D {edges.dtype}")
    sizes = [int(s) for s in np.asarray(box_sizes).ravel()]
    if not sizes or min(sizes) < 1 or np.asarray(box_sizes).ndim != 1:
        raise ValueError(f"box_sizes={list(box_sizes)!r}: need a non-empty 1-D list of integers >= 1")
    occupied = np.empty(len(sizes), dtype=np.int64)
    full = np.empty(len(sizes), dtype=np.int64) if with_full else None
    done: dict[int, tuple[np.ndarray, np.ndarray | None]] = {1: (edges, edges if with_full else None)}
    for s in sorted(set(sizes)):
        base = max(b for b in done if s % b == 0)   # 1 always divides
        any_grid = _block_reduce(done[base][0], s // base, np.logical_or, False)
        all_grid = _block_reduce(done[base][1], s // base, np.logical_and, True) if with_full else None
        done[s] = (any_grid, all_grid)
    for k, s in enumerate(sizes):
        occupied[k] = np.count_nonzero(done[s][0])
        if with_full:
            full[k] = np.count_nonzero(done[s][1])
    return occupied, full


def _block_reduce(mask: np.ndarray, r: int, op: np.ufunc, pad_value: bool) -> np.ndarray:
    """Combine r x r blocks of a bool grid with op (or / and), padding the far sides with pad_value.

    Strided slices keep it O(pixels) for any r: r passes over rows, then r over the shrunk columns.
    """
    if r == 1:
        return mask
    h, w = mask.shape
    ph, pw = -h % r, -w % r
    if ph or pw:
        mask = np.pad(mask, ((0, ph), (0, pw)), constant_values=pad_value)
    rows = mask[0::r].copy()
    for i in range(1, r):
        op(rows, mask[i::r], out=rows)
    out = rows[:, 0::r].copy()
    for j in range(1, r):
        op(out, rows[:, j::r], out=out)
    return out


def default_box_sizes(shape: tuple[int, int], min_box: int = 1, max_box: int | None = None,
                      per_octave: int = 1) -> list[int]:
    """Log-spaced integer box sizes from min_box to max_box: powers of 2 times min_box by default.

    per_octave=2 adds the rounded sqrt(2) steps in between. Powers of 2 are the default because
    intermediate sizes tile a dyadic grid unevenly and add alternating noise to the local slopes.
    max_box defaults to short side // MIN_BOXES_PER_SIDE, so the largest boxes still tile the image
    at least 4 times along each side (fewer boxes make N(s) a small-number count).
    """
    if max_box is None:
        max_box = max(1, min(shape) // MIN_BOXES_PER_SIDE)
    if min_box < 1 or max_box < min_box:
        raise ValueError(f"min_box={min_box}, max_box={max_box}: need 1 <= min_box <= max_box")
    if per_octave < 1:
        raise ValueError(f"per_octave={per_octave}: need an integer >= 1")
    n = int(math.floor(per_octave * math.log2(max_box / min_box) + 1e-9)) + 1
    sizes = sorted({int(round(min_box * 2 ** (k / per_octave))) for k in range(n)})
    return [s for s in sizes if s <= max_box]


# ----------------------------------------------------------------------------------------------
# Estimators

@dataclass
class _Fit:
    first: int          # index of the first box size in the window
    last: int           # index of the last box size (inclusive)
    slope: float
    intercept: float
    rms: float          # residual RMS of ln N around the line (ddof = 2)
    slope_se: float     # OLS standard error of the slope
    r_squared: float


def _fit_window(log_s: np.ndarray, log_n: np.ndarray, first: int, last: int) -> _Fit:
    x, y = log_s[first : last + 1], log_n[first : last + 1]
    xc = x - x.mean()
    sxx = float(xc @ xc)
    slope = float(xc @ (y - y.mean())) / sxx
    intercept = float(y.mean() - slope * x.mean())
    resid = y - (intercept + slope * x)
    ss_res = float(resid @ resid)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    rms = math.sqrt(ss_res / (len(x) - 2)) if len(x) > 2 else 0.0
    r_squared = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return _Fit(first, last, slope, intercept, rms, rms / math.sqrt(sxx), r_squared)


def _choose_window(box_sizes: list[int], log_s: np.ndarray, log_n: np.ndarray) -> tuple[_Fit, bool]:
    """Widest straight window (see estimate_dimension); returns (fit, found_a_straight_one)."""
    candidates = [
        _fit_window(log_s, log_n, first, last)
        for first in range(len(box_sizes))
        for last in range(first + MIN_FIT_POINTS - 1, len(box_sizes))
        if box_sizes[last] / box_sizes[first] >= MIN_FIT_SPAN
    ]
    straight = [f for f in candidates if f.rms <= STRAIGHT_RMS]
    if straight:
        return max(straight, key=lambda f: (f.last - f.first, -f.rms)), True
    return min(candidates, key=lambda f: f.rms), False


def _local_slopes(box_sizes, counts) -> np.ndarray:
    """-d ln N / d ln s between consecutive sizes (NaN where a count is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_n = np.log(np.asarray(counts, dtype=float))
        slopes = -np.diff(log_n) / np.diff(np.log(np.asarray(box_sizes, dtype=float)))
    return np.where(np.isfinite(slopes), slopes, np.nan)


def _slope_uncertainty(fit: _Fit, local_slopes: np.ndarray) -> float:
    """Error bar on D from a window fit.

    Two parts, added in quadrature:
    - the OLS standard error of the slope: scatter of the points about the line;
    - the standard deviation of the local slopes inside the window: how much D itself changes with
      scale there. Neighbouring points are correlated (they share structure) and a real boundary's
      D drifts with scale, so the OLS error alone is far too small; a single D cannot be sharper
      than the scale-to-scale variation it averages. Conservative for pure lacunarity wiggles.
    """
    inside = local_slopes[fit.first : fit.last]
    spread = float(np.std(inside, ddof=1)) if len(inside) > 1 else 0.0
    return math.hypot(fit.slope_se, spread)


def _result(box_sizes, counts, n_edges, reason, too_coarse, fit: _Fit | None = None,
            uncertainty: float = math.nan, dimension: float = math.nan, method="window-fit") -> DimensionEstimate:
    slopes = _local_slopes(box_sizes, counts)
    return DimensionEstimate(
        dimension=float(-fit.slope) if fit is not None else float(dimension),
        uncertainty=float(uncertainty),
        too_coarse=bool(too_coarse),
        box_sizes=[int(s) for s in box_sizes],
        counts=[int(c) for c in counts],
        local_slopes=[float(v) for v in slopes],
        fit_range=(int(box_sizes[fit.first]), int(box_sizes[fit.last])) if fit is not None else (0, 0),
        r_squared=float(fit.r_squared) if fit is not None else math.nan,
        n_edge_pixels=int(n_edges),
        reason=reason,
        intercept=float(fit.intercept) if fit is not None else math.nan,
        method=method,
    )


def estimate_dimension(labels, min_box: int = 1, max_box: int | None = None) -> DimensionEstimate:
    """Box-counting dimension of the trainable/not-trainable boundary of a label image.

    labels: 2-D array, 1.0 trainable, 0.0 not trainable, NaN missing (or bool). Edges per `edge_mask`.
    Box sizes: powers of 2 times min_box up to max_box (default: short side of the edge image // 4).

    Fit-window rule. Every contiguous window of box sizes with >= MIN_FIT_POINTS (4) sizes spanning
    >= MIN_FIT_SPAN (8x, three octaves) gets an OLS line of ln N against ln s. A window is straight
    when the residual RMS of ln N about its line is <= STRAIGHT_RMS (0.05, i.e. counts within ~5% of
    a power law). The widest straight window wins (most octaves = least sensitive to lacunarity
    wiggles); among equally wide ones the straightest. D = -slope of that window. If no window is
    straight, the straightest 4-size window is used and `reason` says the plot is curved.

    too_coarse (with `reason`), checked in this order:
    - no edge at all: dimension NaN, reason starts with "no boundary";
    - fewer than MIN_EDGE_PIXELS (32) edge pixels, or too few box sizes for one fit window (a grid
      under ~33x33; a 16x16 grid always lands here): dimension is then the plain least-squares slope
      over all sizes (a rough hint only, NaN with < 2 sizes) and uncertainty is NaN, never a
      confident number.
    """
    edges = edge_mask(labels)
    n_edges = int(np.count_nonzero(edges))
    box_sizes = default_box_sizes(edges.shape, min_box, max_box)
    if n_edges == 0:
        return _result(box_sizes, [0] * len(box_sizes), 0, "no boundary: no 2x2 block holds both classes", True)
    counts = box_counts(edges, box_sizes)
    log_s, log_n = np.log(np.asarray(box_sizes, dtype=float)), np.log(counts.astype(float))
    enough_sizes = len(box_sizes) >= MIN_FIT_POINTS and box_sizes[-1] / box_sizes[0] >= MIN_FIT_SPAN
    if not enough_sizes or n_edges < MIN_EDGE_PIXELS:
        why = (f"grid too small: edge image {edges.shape[0]}x{edges.shape[1]} allows box sizes {box_sizes}, "
               f"need >= {MIN_FIT_POINTS} sizes spanning >= {MIN_FIT_SPAN:g}x"
               if not enough_sizes else
               f"too few boundary pixels: {n_edges} < {MIN_EDGE_PIXELS}")
        rough = _fit_window(log_s, log_n, 0, len(box_sizes) - 1) if len(box_sizes) >= 2 else None
        return _result(box_sizes, counts, n_edges, why + "; dimension is a rough hint only", True,
                       dimension=-rough.slope if rough is not None else math.nan)
    fit, straight = _choose_window(box_sizes, log_s, log_n)
    uncertainty = _slope_uncertainty(fit, _local_slopes(box_sizes, counts))
    span = f"box sizes {box_sizes[fit.first]}..{box_sizes[fit.last]}"
    reason = (f"fit over {span} (widest window with residual RMS {fit.rms:.3f} <= {STRAIGHT_RMS})" if straight
              else f"log-log plot is curved: no window has residual RMS <= {STRAIGHT_RMS}; "
                   f"straightest 4-size window used ({span}, RMS {fit.rms:.3f}); D depends on scale")
    return _result(box_sizes, counts, n_edges, reason, False, fit=fit, uncertainty=uncertainty)


def paper_dimension(labels, n_sizes: int = 10) -> DimensionEstimate:
    """D the way Sohl-Dickstein 2024 measures it (via porespy's boxcount), for comparisons.

    Box sizes: n_sizes log-spaced integers from 10 up to the short side of the edge image (truncated,
    unique). A box counts when it holds some edge pixels but is not entirely edge. Local slopes are
    -d ln N / d ln s by numpy.gradient (central differences, one-sided at the ends) and D is their
    median; `local_slopes` holds those gradient values (one per size, unlike estimate_dimension).
    Uncertainty: half the interquartile range of the local slopes. Over a zoom sequence the paper pools
    the local slopes of all frames into one median: pooled_paper_dimension.
    """
    edges = edge_mask(labels)
    n_edges = int(np.count_nonzero(edges))
    short = min(edges.shape)
    if short < 20:
        raise ValueError(f"labels: shape {np.shape(labels)} too small for the paper's box sizes (10 .. short side)")
    box_sizes = sorted({int(s) for s in np.logspace(1, math.log10(short), n_sizes)})
    if n_edges == 0:
        estimate = _result(box_sizes, [0] * len(box_sizes), 0, "no boundary: no 2x2 block holds both classes",
                           True, method="paper-median")
        estimate.local_slopes = [math.nan] * len(box_sizes)  # one per size, as with a boundary
        return estimate
    occupied, full = _box_sums(edges, box_sizes, with_full=True)
    counts = occupied - full
    with np.errstate(divide="ignore", invalid="ignore"):
        gradient = -np.gradient(np.log(counts.astype(float)), np.log(np.asarray(box_sizes, dtype=float)))
    finite = gradient[np.isfinite(gradient)]
    if len(finite) == 0:
        return _result(box_sizes, counts, n_edges, "no box holds part of the boundary", True, method="paper-median")
    q25, q50, q75 = np.percentile(finite, [25, 50, 75])
    estimate = _result(box_sizes, counts, n_edges, f"median of {len(finite)} local slopes (paper's method)",
                       len(box_sizes) < 4, dimension=q50, uncertainty=(q75 - q25) / 2, method="paper-median")
    estimate.local_slopes = [float(v) if math.isfinite(v) else math.nan for v in gradient]
    estimate.fit_range = (box_sizes[0], box_sizes[-1])
    return estimate


@dataclass
class PooledDimension:
    """The paper's dimension of a zoom sequence: one median over the local slopes of all its frames."""
    dimension: float  # NaN when no frame has a finite slope
    n_slopes: int  # finite slopes pooled
    n_dropped: int  # non-finite slopes left out (a box size with no partly-edge box gives log 0)
    n_frames: int


def pooled_paper_dimension(estimates: list[DimensionEstimate]) -> PooledDimension:
    """The notebook's statistic: concatenate every frame's paper_dimension local slopes, take one median.

    This is not the median of the per-frame medians (frames with more box sizes weigh more, and the pooled
    median can fall between frames' values). The notebook's median would be NaN if any slope were not
    finite; here those slopes are left out and counted in n_dropped.
    """
    slopes = np.array([v for e in estimates for v in e.local_slopes], dtype=float)
    finite = slopes[np.isfinite(slopes)]
    dimension = float(np.median(finite)) if finite.size else math.nan
    return PooledDimension(dimension=dimension, n_slopes=int(finite.size), n_dropped=int(slopes.size - finite.size),
                           n_frames=len(estimates))
