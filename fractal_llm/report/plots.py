"""The report's images (matplotlib, Agg, PNG).

Maps are drawn in plot coordinates: log10(value) for positive axes, with tick labels showing the real
values. Small grids use pcolormesh (cell edges at geometric midpoints, so uneven axes are drawn right);
big arrays (paper mode, 1024^2 and more) use imshow over the same extent, which is fast.

(a) score map, coloured the Sohl-Dickstein way: each class rank-normalised onto its own half of a
    diverging colormap (trainable -> blue half, not trainable / diverged -> red half; pale = near the
    boundary: slow to converge or slow to diverge). Missing points light grey, runs in flight (pending) pale
    yellow, errors dark grey with an x.
(b) final loss of the trainable points, log colour scale.
(c) the binary map with the boundary (fractal.edge_mask) drawn on it.
(d) box counting: ln N against ln s with the fitted line, and the local slopes.
(e) loss curves of adjacent point pairs on both sides of the boundary.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colors import ListedColormap, LogNorm, Normalize  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from fractal_llm.report.fractal import DimensionEstimate, edge_mask  # noqa: E402
from fractal_llm.report.grid import Grid  # noqa: E402
from fractal_llm.report.zoom_boxes import ZoomBox  # noqa: E402
from fractal_llm.sweep import axis_is_log  # noqa: E402

MESH_MAX_SIDE = 256  # above this many cells a side, draw with imshow
DISPLAY_MAX_SIDE = 2048  # imshow gets at most this many pixels a side
DIVERGING = "RdBu"  # red (not trainable) .. white .. blue (trainable)
MISSING_RGBA = (0.85, 0.85, 0.85, 1.0)
PENDING_RGBA = (1.0, 0.95, 0.70, 1.0)  # pale yellow: apart from both classes and from the greys
ERROR_RGBA = (0.45, 0.45, 0.45, 1.0)
TRAINABLE_COLOR, NOT_TRAINABLE_COLOR = "#2166ac", "#b2182b"  # the ends of DIVERGING
TRAINABLE_LIGHT, NOT_TRAINABLE_LIGHT = "#92c5de", "#f4a582"  # the two classes under an overlay (boundary map)
ONLY_A_COLOR, ONLY_B_COLOR, BOTH_COLOR = "#1b7837", "#762a83", "#4393c3"  # compare's difference map
FIT_COLOR, SLOPE_COLOR = "tab:red", "tab:blue"  # box counting: the fitted line and window; local slopes
INK, MARK_COLOR, GUIDE_COLOR = "black", "white", "grey"  # data points and labels; error marks; guide lines
INFERRED_LIGHTEN = 0.55  # inferred pixels (adaptive refinement): the class colour this far towards white
DPI = 110
OVERVIEW_DPI = 100  # 2100 px wide; the single panels carry the detail

CurveFn = Callable[[int, int], Sequence[float]]  # the loss curve of grid cell (row i, column j)


# ---------------------------------------------------------------- coordinates


def plot_coordinates(values, log: bool) -> np.ndarray:
    """Maps are drawn in log10(value) for log axes, so pcolormesh and imshow share one coordinate system."""
    values = np.asarray(values, dtype=float)
    return np.log10(values) if log else values


def cell_edges(coords: np.ndarray) -> np.ndarray:
    """Cell edges at the midpoints of (plot) coordinates, i.e. geometric midpoints of log axes;
    the outer edges mirror the first and last half-steps."""
    coords = np.asarray(coords, dtype=float)
    middle = (coords[:-1] + coords[1:]) / 2
    return np.concatenate([[coords[0] - (middle[0] - coords[0])], middle, [coords[-1] + (coords[-1] - middle[-1])]])


def draw_boxes(ax, grid: Grid, boxes: list[ZoomBox], color: str = INK) -> None:
    """Outline each box (in the map's plot coordinates) with its rank."""
    from matplotlib.patches import Rectangle

    x_edges = cell_edges(plot_coordinates(grid.x_values, axis_is_log(grid.x_values)))
    y_edges = cell_edges(plot_coordinates(grid.y_values, axis_is_log(grid.y_values)))
    for box in boxes:
        x0, x1 = x_edges[box.cols[0]], x_edges[box.cols[1]]
        y0, y1 = y_edges[box.rows[0]], y_edges[box.rows[1]]
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, linewidth=1.6))
        ax.text(x0, y1, f" {box.rank}", color=color, fontsize=9, fontweight="bold", va="top", ha="left")



class MapFrame:
    """Plot coordinates of a grid: cell centres and edges along x and y, and how to label them."""

    def __init__(self, grid: Grid):
        self.x_log, self.y_log = axis_is_log(grid.x_values), axis_is_log(grid.y_values)
        self.x = plot_coordinates(grid.x_values, self.x_log)
        self.y = plot_coordinates(grid.y_values, self.y_log)
        self.x_edges, self.y_edges = cell_edges(self.x), cell_edges(self.y)
        self.x_name, self.y_name = grid.x_name, grid.y_name
        steps = np.concatenate([np.diff(self.x_edges) / np.diff(self.x_edges).mean(),
                                np.diff(self.y_edges) / np.diff(self.y_edges).mean()])
        self.uniform = bool(np.allclose(steps, 1.0, rtol=1e-3))
        self.big = max(len(self.x), len(self.y)) > MESH_MAX_SIDE

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return (self.x_edges[0], self.x_edges[-1], self.y_edges[0], self.y_edges[-1])

    def thin(self, grid: Grid) -> Grid:
        """The grid as displayed: every step-th point when imshow shrinks a huge array anyway, so colours
        (ranks, colormaps) are computed for the shown pixels only."""
        step = _display_step(grid.shape) if self.big and self.uniform else 1
        if step == 1:
            return grid
        cut = (slice(None, None, step), slice(None, None, step))
        return replace(grid, labels=grid.labels[cut], verdicts=grid.verdicts[cut], scores=grid.scores[cut],
                       final_loss=grid.final_loss[cut], record_index=grid.record_index[cut])

    def show(self, ax, image, **kwargs):
        """Draw a (ny, nx) scalar or (ny, nx, 4) RGBA image cell by cell."""
        if self.big and self.uniform:
            step = _display_step(image.shape)
            return ax.imshow(image[::step, ::step], origin="lower", extent=self.extent, aspect="auto",
                             interpolation="nearest", **kwargs)
        return ax.pcolormesh(self.x_edges, self.y_edges, image, shading="flat", rasterized=True, **kwargs)

    def decorate(self, ax, title: str) -> None:
        for axis, log, name in ((ax.xaxis, self.x_log, self.x_name), (ax.yaxis, self.y_log, self.y_name)):
            if log:
                axis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 5, 10]))
                axis.set_major_formatter(FuncFormatter(_log_tick))
        ax.set_xlabel(self.x_name + (" (log scale)" if self.x_log else ""))
        ax.set_ylabel(self.y_name + (" (log scale)" if self.y_log else ""))
        ax.set_xlim(self.x_edges[0], self.x_edges[-1])
        ax.set_ylim(self.y_edges[0], self.y_edges[-1])
        ax.set_title(title, fontsize=10)


SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _display_step(shape) -> int:
    """Stride that brings a huge image down to at most DISPLAY_MAX_SIDE pixels a side (a PNG panel shows
    fewer pixels than that anyway; resampling 16M cells is most of the time otherwise)."""
    return max(1, -(-max(shape[:2]) // DISPLAY_MAX_SIDE))


def _block_any(mask: np.ndarray, step: int) -> np.ndarray:
    """step x step blocks -> True if any pixel in the block is True."""
    if step == 1:
        return mask
    h, w = (-(-mask.shape[0] // step)) * step, (-(-mask.shape[1] // step)) * step
    padded = np.zeros((h, w), dtype=bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    return padded.reshape(h // step, step, w // step, step).any(axis=(1, 3))


def _log_tick(u: float, _pos=None) -> str:
    """Tick label for plot coordinate u = log10(value): 10^k on decades, the value otherwise.
    Unicode superscripts, not mathtext: mathtext layout was most of the plotting time."""
    if abs(u - round(u)) < 1e-6:
        return "10" + str(int(round(u))).translate(SUPERSCRIPT)
    return f"{10 ** u:.2g}"


def _plain_log_axis(axis, ticks=None) -> None:
    """Log axis with plain-number labels and no minor labels (cheap to lay out)."""
    axis.set_major_locator(FixedLocator(ticks) if ticks is not None else LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _pos=None: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------- colours


def rank_normalise(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to [0, 1] (ties broken by position); a single value maps to 0.5."""
    if values.size == 1:
        return np.array([0.5])
    ranks = np.empty(values.size)
    ranks[np.argsort(values, kind="stable")] = np.arange(values.size)
    return ranks / (values.size - 1)


def score_colour_values(grid: Grid) -> np.ndarray:
    """Colormap position per point: trainable in [0.55, 1] (fast convergence -> 1), not trainable and
    diverged in [0, 0.45] (fast divergence -> 0); NaN for missing and error points."""
    values = np.full(grid.shape, np.nan)
    trainable = grid.verdicts == "trainable"
    failed = (grid.verdicts == "not_trainable") | (grid.verdicts == "diverged")
    for mask, low, high in ((trainable, 0.55, 1.0), (failed, 0.0, 0.45)):
        scored = mask & np.isfinite(grid.scores)
        values[mask & ~scored] = (low + high) / 2  # no score (paper arrays without it): middle of the half
        if scored.any():
            # Trainable score = -sum(u): higher (nearer 0) = faster convergence -> deeper blue.
            # Not-trainable score = +sum(1/u): higher = held longer before failing -> paler red.
            values[scored] = low + (high - low) * rank_normalise(grid.scores[scored])
    return values


def score_rgba(grid: Grid) -> np.ndarray:
    values = score_colour_values(grid)
    rgba = plt.get_cmap(DIVERGING)(np.nan_to_num(values, nan=0.5))
    rgba[grid.verdicts == "missing"] = MISSING_RGBA
    rgba[grid.verdicts == "pending"] = PENDING_RGBA
    rgba[grid.verdicts == "error"] = ERROR_RGBA
    _shade_inferred(rgba, grid)
    return rgba


def binary_rgba(grid: Grid) -> np.ndarray:
    rgba = np.empty(grid.shape + (4,))
    rgba[:] = MISSING_RGBA
    rgba[grid.labels == 1.0] = matplotlib.colors.to_rgba(TRAINABLE_LIGHT)
    rgba[grid.labels == 0.0] = matplotlib.colors.to_rgba(NOT_TRAINABLE_LIGHT)
    rgba[grid.verdicts == "pending"] = PENDING_RGBA
    rgba[grid.verdicts == "error"] = ERROR_RGBA
    _shade_inferred(rgba, grid)
    return rgba


def inferred_rgba(trainable: bool) -> tuple:
    """An inferred pixel: its class's colour, halfway to white (run pixels keep the full colour)."""
    base = np.array(matplotlib.colors.to_rgba(TRAINABLE_COLOR if trainable else NOT_TRAINABLE_COLOR))
    return tuple(base + (1.0 - base) * INFERRED_LIGHTEN)


def _shade_inferred(rgba: np.ndarray, grid: Grid) -> None:
    if grid.inferred is None:
        return
    rgba[grid.inferred & (grid.labels == 1.0)] = inferred_rgba(True)
    rgba[grid.inferred & (grid.labels == 0.0)] = inferred_rgba(False)


def _mark_errors(ax, frame: MapFrame, grid: Grid) -> None:
    rows, cols = np.nonzero(grid.verdicts == "error")
    if len(rows) and not frame.big:
        ax.scatter(frame.x[cols], frame.y[rows], marker="x", s=12, color=MARK_COLOR, linewidths=0.8)


def _outcome_legend(ax, grid: Grid) -> None:
    handles = [Patch(color=TRAINABLE_COLOR, label=f"trainable ({grid.counts['trainable']})"),
               Patch(color=NOT_TRAINABLE_COLOR,
                     label=f"not trainable + diverged ({grid.counts['not_trainable'] + grid.counts['diverged']})")]
    if grid.counts.get("inferred"):
        handles.append(Patch(facecolor=inferred_rgba(True), edgecolor=inferred_rgba(False),
                             label=f"inferred, not run ({grid.counts['inferred']})"))
    if grid.counts["missing"]:
        handles.append(Patch(color=MISSING_RGBA, label=f"missing ({grid.counts['missing']})"))
    if grid.counts["pending"]:
        handles.append(Patch(color=PENDING_RGBA, label=f"pending ({grid.counts['pending']})"))
    if grid.counts["error"]:
        handles.append(Patch(color=ERROR_RGBA, label=f"error ({grid.counts['error']})"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=7, frameon=False)


# ---------------------------------------------------------------- panels


def plot_score_map(ax, grid: Grid, boxes: list[ZoomBox] | None = None) -> None:
    """(a) trainability map coloured by score, zoom boxes outlined."""
    frame = MapFrame(grid)
    frame.show(ax, score_rgba(frame.thin(grid)))
    _mark_errors(ax, frame, grid)
    if boxes:
        draw_boxes(ax, grid, boxes)
    frame.decorate(ax, "(a) trainability (colour: rank of convergence score within each class)")
    bar = ax.figure.colorbar(ScalarMappable(norm=Normalize(0, 1), cmap=DIVERGING), ax=ax, ticks=[0.1, 0.4, 0.6, 0.9])
    bar.ax.set_yticklabels(["diverged fast", "not trainable\n(held longer)", "trainable\n(slow)", "trainable\n(fast)"],
                           fontsize=7)
    _outcome_legend(ax, grid)


def plot_final_loss(ax, grid: Grid) -> None:
    """(b) last training loss of the trainable points, log colour scale."""
    frame = MapFrame(grid)
    shown = frame.thin(grid)
    loss = np.where((shown.verdicts == "trainable") & (shown.final_loss > 0), shown.final_loss, np.nan)
    cmap = plt.get_cmap("viridis").with_extremes(bad=MISSING_RGBA)
    finite = loss[np.isfinite(loss)]
    if finite.size:
        norm = LogNorm(vmin=finite.min(), vmax=max(finite.max(), finite.min() * (1 + 1e-9)))
        mesh = frame.show(ax, np.ma.masked_invalid(loss), cmap=cmap, norm=norm)
        bar = ax.figure.colorbar(mesh, ax=ax, label="final train loss (log)")
        _plain_log_axis(bar.ax.yaxis)
    else:
        frame.show(ax, np.ma.masked_invalid(loss), cmap=cmap)
        ax.text(0.5, 0.5, "no trainable point with a loss", transform=ax.transAxes, ha="center")
    frame.decorate(ax, "(b) final loss of trainable points (grey: not trainable / missing)")


def plot_boundary(ax, grid: Grid) -> None:
    """(c) binary map with the boundary edges (2x2 blocks holding both classes) in black."""
    frame = MapFrame(grid)
    frame.show(ax, binary_rgba(frame.thin(grid)))
    edges = edge_mask(grid.labels)
    if edges.size and edges.any():
        # Edge pixel (i, j) is the 2x2 block of cells i..i+1, j..j+1: it spans centre to centre.
        if frame.big and frame.uniform:
            edges = _block_any(edges, _display_step(edges.shape))  # thin lines survive the shrink
        overlay = np.zeros(edges.shape + (4,))
        overlay[edges] = (0, 0, 0, 0.6)  # see-through: the classes stay visible under the boundary
        if frame.big and frame.uniform:
            ax.imshow(overlay, origin="lower", extent=(frame.x[0], frame.x[-1], frame.y[0], frame.y[-1]),
                      aspect="auto", interpolation="nearest")
        else:
            ax.pcolormesh(frame.x, frame.y, overlay, shading="flat", rasterized=True)
    frame.decorate(ax, f"(c) boundary: {int(edges.sum())} edge pixels (black)")
    _outcome_legend(ax, grid)


def plot_box_counting(ax_counts, ax_slopes, estimate: DimensionEstimate) -> None:
    """(d) ln N(s) against ln s with the fitted line over the fit range; local slopes beside it."""
    sizes = np.asarray(estimate.box_sizes, dtype=float)
    counts = np.asarray(estimate.counts, dtype=float)
    has = counts > 0
    if not has.any():
        for ax in (ax_counts, ax_slopes):
            ax.text(0.5, 0.5, estimate.reason, transform=ax.transAxes, ha="center", wrap=True, fontsize=8)
        ax_counts.set_title("(d) box counting: no boundary", fontsize=10)
        return
    ax_counts.loglog(sizes[has], counts[has], "o", color=INK, label="N(s)")
    if estimate.fit_range != (0, 0) and math.isfinite(estimate.intercept):
        lo, hi = estimate.fit_range
        s = np.array([lo, hi], dtype=float)
        ax_counts.loglog(s, np.exp(estimate.intercept) * s ** (-estimate.dimension), "-", color=FIT_COLOR,
                         label=f"fit s={lo}..{hi}: D={estimate.dimension:.3f} ± {estimate.uncertainty:.3f}")
        ax_counts.axvspan(lo, hi, color=FIT_COLOR, alpha=0.08)
    ax_counts.set_xlabel("box size s (grid cells)")
    ax_counts.set_ylabel("boxes holding boundary N(s)")
    _plain_log_axis(ax_counts.xaxis, sizes)
    _plain_log_axis(ax_counts.yaxis)
    status = "too coarse: " if estimate.too_coarse else ""
    ax_counts.set_title(f"(d) box counting ({status}D = {_fmt(estimate.dimension)})", fontsize=10)
    ax_counts.legend(fontsize=7)
    slopes = np.asarray(estimate.local_slopes, dtype=float)
    if len(slopes) == len(sizes) - 1 and len(slopes):
        mids = np.sqrt(sizes[:-1] * sizes[1:])
    else:  # paper-median estimates give one gradient per size
        mids = sizes[: len(slopes)]
    ax_slopes.semilogx(mids, slopes, "s-", color=SLOPE_COLOR, label="local slope -dlnN/dlns")
    if math.isfinite(estimate.dimension):
        ax_slopes.axhline(estimate.dimension, color=FIT_COLOR, lw=1, label="D")
        if math.isfinite(estimate.uncertainty):
            ax_slopes.axhspan(estimate.dimension - estimate.uncertainty, estimate.dimension + estimate.uncertainty,
                              color=FIT_COLOR, alpha=0.12)
    for reference in (1.0, 2.0):
        ax_slopes.axhline(reference, color=GUIDE_COLOR, lw=0.6, ls=":")
    _plain_log_axis(ax_slopes.xaxis, sizes)
    ax_slopes.set_xlabel("box size s (grid cells)")
    ax_slopes.set_ylabel("local slope")
    ax_slopes.set_title("(d) local slopes (flat = scale-free)", fontsize=10)
    ax_slopes.legend(fontsize=7)


def _fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3f}"


# ---------------------------------------------------------------- loss curves


def boundary_pairs(grid: Grid, has_curve: np.ndarray, n: int = 3) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Up to n pairs of neighbouring points with different classes, spread along the boundary.
    Each pair is ((i, j) trainable, (i2, j2) not trainable or diverged); both must have a loss curve."""
    labels, has_record = grid.labels, has_curve
    pairs = []
    for di, dj in ((0, 1), (1, 0)):
        a, b = labels[: labels.shape[0] - di, : labels.shape[1] - dj], labels[di:, dj:]
        ok = has_record[: labels.shape[0] - di, : labels.shape[1] - dj] & has_record[di:, dj:]
        rows, cols = np.nonzero(ok & np.isfinite(a) & np.isfinite(b) & (a != b))
        for i, j in zip(rows.tolist(), cols.tolist()):
            first, second = (i, j), (i + di, j + dj)
            pairs.append((first, second) if labels[first] == 1.0 else (second, first))
    pairs.sort()
    if len(pairs) <= n:
        return pairs
    picks = np.linspace(0, len(pairs) - 1, n).round().astype(int)
    return [pairs[k] for k in picks]


def plot_loss_curves(axes, grid: Grid, pairs, curve_at: CurveFn | None) -> None:
    """(e) one panel per pair: the trainable point's loss (blue) and its failing neighbour's (red)."""
    axes = list(np.atleast_1d(axes))
    if not pairs or curve_at is None:
        why = "no loss curves (no run records)" if curve_at is None else "no pair of neighbours across the boundary"
        axes[0].text(0.5, 0.5, why, transform=axes[0].transAxes, ha="center")
        axes[0].set_xticks([])
        axes[0].set_yticks([])
        axes[0].set_title("(e) loss curves across the boundary", fontsize=10)
        for ax in axes[1:]:
            ax.set_visible(False)
        return
    for ax, (good, bad) in zip(axes, pairs):
        shown = []
        for (i, j), color in ((good, TRAINABLE_COLOR), (bad, NOT_TRAINABLE_COLOR)):
            losses = np.asarray(curve_at(i, j), dtype=float)
            shown.append(losses[np.isfinite(losses) & (losses > 0)])
            label = (f"{grid.verdicts[i, j]}: {grid.x_name}={grid.x_values[j]:.3g}, "
                     f"{grid.y_name}={grid.y_values[i]:.3g}")
            ax.plot(np.arange(len(losses)), np.where(np.isfinite(losses), losses, np.nan), color=color, lw=1,
                    label=label)
            if len(losses) and not np.isfinite(losses[-1]):
                ax.axvline(len(losses) - 1, color=color, ls=":", lw=1)  # where it diverged
        ax.set_yscale("log")
        _loss_axis(ax, np.concatenate(shown))
        ax.set_ylabel("train loss")
        ax.legend(fontsize=6)
    axes[0].set_title("(e) neighbours across the boundary (dotted: divergence)", fontsize=10)
    axes[len(pairs) - 1].set_xlabel("step")
    for ax in axes[len(pairs):]:
        ax.set_visible(False)


def _loss_axis(ax, values: np.ndarray) -> None:
    """LLM losses span a decade or two: plain tick labels. The paper's MLP can go from 1e-30 to 1e300 within
    one panel: a few powers of ten, limits at the finite values, clipped to 1e-100..1e100 (matplotlib's tick
    labels fail near the float64 limits; a loss beyond 1e100 has diverged for every purpose)."""
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    if hi / lo <= 1e3:
        _plain_log_axis(ax.yaxis)
        return
    ax.set_ylim(max(lo / 2, 1e-100), min(hi * 2, 1e100))
    ax.yaxis.set_major_locator(LogLocator(base=10, numticks=6))
    ax.yaxis.set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------- files


def _save(fig, path: Path, dpi: int = DPI) -> Path:
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def write_plots(grid: Grid, estimate: DimensionEstimate, out_dir: str | Path, boxes: list[ZoomBox] | None = None,
                curve_at: CurveFn | None = None, has_curve: np.ndarray | None = None, n_pairs: int = 3,
                title: str = "") -> dict[str, Path]:
    """Every PNG of the report; returns {name: path}. curve_at(i, j) gives the loss curves of the panel (e) for
    the cells where has_curve is True (default: every cell)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if has_curve is None:
        has_curve = np.ones(grid.shape, dtype=bool)
    pairs = boundary_pairs(grid, has_curve, n_pairs) if curve_at is not None else []
    paths = {}

    fig, ax = plt.subplots(figsize=(7, 6))
    plot_score_map(ax, grid, boxes)
    paths["score_map"] = _save(fig, out_dir / "score_map.png")

    fig, ax = plt.subplots(figsize=(7, 5.5))
    plot_final_loss(ax, grid)
    paths["final_loss"] = _save(fig, out_dir / "final_loss.png")

    fig, ax = plt.subplots(figsize=(6.5, 6))
    plot_boundary(ax, grid)
    paths["boundary"] = _save(fig, out_dir / "boundary.png")

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    plot_box_counting(ax1, ax2, estimate)
    paths["box_counting"] = _save(fig, out_dir / "box_counting.png")

    rows = max(1, len(pairs))  # stacked: a squarish image that tiles well into the overview
    fig, axes = plt.subplots(rows, 1, figsize=(7, 1.2 + 2.3 * rows), squeeze=False, sharex=True)
    plot_loss_curves(axes[:, 0], grid, pairs, curve_at)
    paths["loss_curves"] = _save(fig, out_dir / "loss_curves.png")

    paths["overview"] = compose_overview(paths, out_dir / "overview.png", title or grid.name or "trainability report")
    return paths


def compose_overview(paths: dict[str, Path], out_path: Path, title: str) -> Path:
    """One figure with every panel, tiled from the PNGs just written (re-drawing them costs twice as much)."""
    layout = [("score_map", 0, slice(0, 2)), ("final_loss", 0, slice(2, 4)), ("boundary", 0, slice(4, 6)),
              ("box_counting", 1, slice(0, 4)), ("loss_curves", 1, slice(4, 6))]
    fig = plt.figure(figsize=(21, 12))
    spec = fig.add_gridspec(2, 6, left=0.005, right=0.995, bottom=0.005, top=0.95, wspace=0.02, hspace=0.03)
    for name, row, cols in layout:
        ax = fig.add_subplot(spec[row, cols])
        ax.imshow(plt.imread(paths[name]), interpolation="antialiased")
        ax.set_axis_off()
    fig.suptitle(title, fontsize=15)
    fig.savefig(out_path, dpi=OVERVIEW_DPI)
    plt.close(fig)
    return out_path


def plot_difference(ax, grid_a: Grid, grid_b: Grid, labels: tuple[str, str]) -> dict:
    """Categorical map of where two sweeps agree; returns the count of each category."""
    a, b = grid_a.labels, grid_b.labels
    categories = [("both trainable", (a == 1) & (b == 1), BOTH_COLOR),
                  ("neither", (a == 0) & (b == 0), NOT_TRAINABLE_LIGHT),
                  (f"only {labels[0]}", (a == 1) & (b == 0), ONLY_A_COLOR),
                  (f"only {labels[1]}", (a == 0) & (b == 1), ONLY_B_COLOR),
                  ("missing in one", np.isnan(a) | np.isnan(b), MISSING_RGBA)]
    codes = np.zeros(a.shape, dtype=float)
    for code, (_, mask, _) in enumerate(categories):
        codes[mask] = code
    frame = MapFrame(grid_a)
    cmap = ListedColormap([c for _, _, c in categories])
    frame.show(ax, codes, cmap=cmap, norm=Normalize(-0.5, len(categories) - 0.5))
    counts = {name: int(mask.sum()) for name, mask, _ in categories}
    ax.legend(handles=[Patch(color=c, label=f"{name} ({counts[name]})") for name, _, c in categories],
              loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=7, frameon=False)
    frame.decorate(ax, f"trainable in {labels[0]} vs {labels[1]}")
    return counts


# ---------------------------------------------------------------- zoom animation


def write_zoom_gif(grids: Sequence[Grid], captions: Sequence[str], path: str | Path,
                   seconds_per_frame: float = 1.0) -> Path:
    """An animated GIF of the grids' score maps in the given order (paper mode: widest frame first), each
    frame titled with its caption (window, D). Pixels are drawn as they are (rows = ascending y), without
    axes: a frame's window is in its caption."""
    from PIL import Image

    if len(grids) != len(captions) or not grids:
        raise ValueError(f"grids/captions: need one caption per grid and >= 1 grid, got {len(grids)}/{len(captions)}")
    images = []
    for grid, caption in zip(grids, captions):
        fig, ax = plt.subplots(figsize=(5.0, 5.6), dpi=DPI)
        ax.imshow(score_rgba(grid), origin="lower", interpolation="nearest", aspect="auto")
        ax.set_axis_off()
        ax.set_title(caption, fontsize=8)
        fig.tight_layout()
        fig.canvas.draw()
        images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]).convert("P", palette=Image.ADAPTIVE))
        plt.close(fig)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(seconds_per_frame * 1000), loop=0)
    return path


# ---------------------------------------------------------------- local slopes across a zoom sequence


def write_scale_slopes(curves: Sequence[tuple], pooled: float, x_label: str, path: str | Path) -> Path:
    """Local slopes of several frames against the absolute box size, one colour per frame: each curve is
    (label, sizes, slopes of our estimator, sizes, slopes of the paper method), sizes in axis units. Ours
    (solid) reach down to 1-pixel boxes; the paper's (dotted) start at 10 pixels and are what the pooled
    value (dashed guide) pools. One flat band across frames means scale-free."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, max(len(curves), 1)))
    for (label, sizes, slopes, paper_sizes, paper_slopes), colour in zip(curves, colours):
        ax.plot(sizes, np.asarray(slopes, dtype=float), "o-", color=colour, label=label, markersize=3, linewidth=1)
        ax.plot(paper_sizes, np.asarray(paper_slopes, dtype=float), "x:", color=colour, markersize=3, linewidth=0.8)
    if np.isfinite(pooled):
        ax.axhline(pooled, color=GUIDE_COLOR, linestyle="--", linewidth=1, label=f"pooled D (paper) = {pooled:.3f}")
    for ref in (1.0, 2.0):
        ax.axhline(ref, color=GUIDE_COLOR, linestyle=":", linewidth=0.7)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(x_label)
    ax.set_ylabel("local slope −d ln N / d ln s")
    ax.set_ylim(-0.25, 3.0)
    ax.legend(fontsize=7, ncol=2, frameon=False)
    ax.set_title("Local box-count slopes against absolute scale (solid: ours, dotted: paper method)", fontsize=9)
    return _save(fig, Path(path))
