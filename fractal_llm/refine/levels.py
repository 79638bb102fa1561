"""Adaptive boundary refinement: map a trainability boundary with runs spent only near the boundary.

Index space only: the lattice is the sweep's full-resolution grid of shape (ny, nx), a point is (iy, ix),
and nothing here knows about learning rates.

Levels. With L levels, level k uses every s_k-th index on each axis, s_k = 2^(L-k), plus the last index
when n-1 is not a multiple of s_k; level L is the full lattice. Level 0 runs every one of its points. Level
k >= 1 looks at the cells of level k-1 (rectangles between neighbouring level-(k-1) points): a cell is
*uniform* when all four corners carry one class (trainable vs not). Every cell that is not uniform is
marked, the marks are widened by `margin` cells on every side (a square), and level k runs the points that
are new at level k (not on the level-(k-1) lattice) lying in or on the border of a marked cell.

Corner classes. A corner's class is its verdict when it was run; a point never run takes the class of the
uniform cell of the coarser level that holds it, and is *inferred*. A corner with no class at all (an
`error`, or a point not run yet) makes its cells not uniform: they are refined rather than guessed, and an
error point is retried by the next call (it is simply not known). `diverged` counts as not trainable.

One step: next_level(plan, known) is the lowest level that still has points to run, and those points. The
plan is a pure function of the known verdicts, so a rerun recomputes the same selections and runs only what
is not known yet (a resume), starting at that level. Every driver of levels calls it: refine() here, the
local runner (`fractal-llm local --adaptive`) and the W&B level sweeps (`fractal-llm refine`).

Settings: RefineSettings is the one stored form of a refinement's levels and margin: the line in each W&B
level sweep's description, and the whole of ADAPTIVE_FILE beside a local adaptive run's records. The report
reads it back to infer the pixels never run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml
from scipy import ndimage

from fractal_llm.errors import FractalLLMError
from fractal_llm.paths import atomic_write_text
from fractal_llm.verdict import VERDICTS, labels_from_verdicts


Point = tuple[int, int]
# Beside an adaptive run's records: its RefineSettings line (the report reads it). Not .json: records are *.json.
ADAPTIVE_FILE = "refinement.txt"
LEGACY_ADAPTIVE_FILE = "refinement.yaml"  # {levels: L, margin: M}, what runs before the settings line wrote
SETTINGS_LINE = re.compile(r"fractal-llm refine: (?:level=(\d+) )?levels=(\d+) margin=(\d+) lattice=(.+?)\s*$",
                           re.MULTILINE)


# Defaults, measured by benchmarks/bench_refine.py (table in README.md).
# Levels: level 0 is a lattice of at least LEVEL0_POINTS points per axis (default_levels). A fixed L does not
# fit every lattice: L=4 leaves a 32x32 lattice a 3x3 level 0, blind to any feature between its corners,
# while on the 512x512 paper maps L=4 missed the |dD| <= 0.03 goal for tanh (-0.033) where L=5 (17) and L=6 (9
# points) met it for tanh, relu and tanh-one-point with the same runs (21.2%, 5.3%, 21.6%).
# Margin: M=0 missed ~800 specks of the 512x512 tanh map (1.1% of pixels wrong) that M=1 finds (0.17%).
LEVEL0_POINTS = 9
DEFAULT_MARGIN = 1


class RefineError(FractalLLMError):
    """A bad plan or a bad known verdict; raised before any run."""


@dataclass(frozen=True)
class RefinePlan:
    shape: tuple[int, int]  # (ny, nx) of the full-resolution lattice
    levels: int | None = None  # L: level 0 runs every 2^L-th index per axis (None: default_levels(shape))
    margin: int = DEFAULT_MARGIN  # M: cells added around every non-uniform cell before a level picks its points

    def __post_init__(self):
        if len(self.shape) != 2 or not all(_is_int(n) and n >= 2 for n in self.shape):
            raise RefineError(f"shape={self.shape!r}: need (ny, nx), integers >= 2")
        if self.levels is None:
            object.__setattr__(self, "levels", default_levels(self.shape))
        top = max_levels(self.shape)
        if not _is_int(self.levels) or not 0 <= self.levels <= top:
            raise RefineError(f"levels={self.levels!r}: allowed 0..{top} for shape {tuple(self.shape)} "
                              f"(at {top}, level 0 is already only the two ends of the longest axis)")
        if not _is_int(self.margin) or self.margin < 0:
            raise RefineError(f"margin={self.margin!r}: must be an integer >= 0 (cells)")


@dataclass(frozen=True)
class RefineSettings:
    """A refinement's settings in their one stored form, a line of text: each W&B level sweep's description
    holds it (with `level`), and ADAPTIVE_FILE beside a local adaptive run's records is it. A lattice name
    may hold spaces (it runs to the end of the line)."""
    levels: int
    margin: int
    lattice: str  # the full-resolution sweep's name
    level: int | None = None  # a W&B level sweep: the level it runs

    def to_text(self) -> str:
        level = "" if self.level is None else f"level={self.level} "
        return f"fractal-llm refine: {level}levels={self.levels} margin={self.margin} lattice={self.lattice}"

    @classmethod
    def from_text(cls, text: str | None) -> "RefineSettings | None":
        """The settings line found in `text` (a sweep description, the file), or None when it holds none."""
        match = SETTINGS_LINE.search(text or "")
        if match is None:
            return None
        level, levels, margin, lattice = match.groups()
        return cls(int(levels), int(margin), lattice, None if level is None else int(level))

    def plan(self, shape: tuple[int, int]) -> RefinePlan:
        return RefinePlan(shape, self.levels, self.margin)


def write_settings(directory: Path, settings: RefineSettings) -> None:
    atomic_write_text(Path(directory) / ADAPTIVE_FILE, settings.to_text() + "\n")


def read_settings(directory: str | Path) -> RefineSettings | None:
    """The settings a `fractal-llm local --adaptive` run wrote beside its records, or None (not adaptive)."""
    path, legacy = Path(directory) / ADAPTIVE_FILE, Path(directory) / LEGACY_ADAPTIVE_FILE
    if path.is_file():
        settings = RefineSettings.from_text(path.read_text())
        if settings is None:
            raise RefineError(f"{path}: holds no 'fractal-llm refine: levels=L margin=M lattice=NAME' line")
        return settings
    if legacy.is_file():
        old = yaml.safe_load(legacy.read_text())
        return RefineSettings(int(old["levels"]), int(old["margin"]), Path(directory).name)
    return None


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def default_levels(shape: tuple[int, int]) -> int:
    """The most levels that leave level 0 at least LEVEL0_POINTS points on each axis: 16x16 -> 1,
    32x32 -> 2, 64x64 -> 3, 256x256 -> 5, 512x512 -> 6 (under 16 points per axis: 0, run it all)."""
    # spacing s keeps ceil((n-1)/s) + 1 points (the last index is always kept): at least LEVEL0_POINTS while
    # s * (LEVEL0_POINTS - 2) < n - 1; the largest power of two below that bound.
    bound = (min(shape) - 2) // (LEVEL0_POINTS - 2)
    return max(0, int(bound).bit_length() - 1)


def max_levels(shape: tuple[int, int]) -> int:
    """Levels beyond this start from a coarse lattice that is only the corners, again and again."""
    return int(np.ceil(np.log2(max(shape) - 1)))


def axis_indices(n: int, level: int, levels: int) -> np.ndarray:
    """Level `level`'s indices along an axis of n points: multiples of 2^(levels-level), and n-1."""
    step = 2 ** (levels - level)
    idx = np.arange(0, n, step)
    return idx if idx[-1] == n - 1 else np.append(idx, n - 1)


# ----------------------------------------------------------------------------------------------
# Known verdicts -> class image

def class_image(plan: RefinePlan, known: Mapping[Point, str]) -> np.ndarray:
    """(ny, nx) float: 1.0 trainable, 0.0 not (diverged included), NaN never run or error."""
    ny, nx = plan.shape
    image = np.full((ny, nx), np.nan)
    for point, verdict in known.items():
        if (not isinstance(point, tuple) or len(point) != 2 or not all(isinstance(i, (int, np.integer)) for i in point)
                or not (0 <= point[0] < ny and 0 <= point[1] < nx)):
            raise RefineError(f"known point {point!r}: need an integer tuple (iy, ix) with 0 <= iy < {ny}, "
                              f"0 <= ix < {nx}")
        if verdict not in VERDICTS:
            raise RefineError(f"known[{point!r}]={verdict!r}: allowed verdicts are {', '.join(VERDICTS)}")
        image[point] = labels_from_verdicts(np.array([verdict], dtype=object))[0]  # error: NaN, unknown
    return image


# ----------------------------------------------------------------------------------------------
# The walk over levels

@dataclass
class _Level:
    ys: np.ndarray  # lattice indices of this level along y
    xs: np.ndarray
    selected: np.ndarray  # (len(ys), len(xs)) bool: the points this level runs
    label: np.ndarray  # (len(ys), len(xs)) float: known or inferred class, NaN undecided


def _walk(plan: RefinePlan, image: np.ndarray, last: int) -> list[_Level]:
    """Levels 0..last, each with its selection and the classes of its lattice."""
    (ny, nx), top = plan.shape, plan.levels
    ys, xs = axis_indices(ny, 0, top), axis_indices(nx, 0, top)
    label = image[np.ix_(ys, xs)]
    out = [_Level(ys, xs, np.ones(label.shape, dtype=bool), label)]
    for level in range(1, last + 1):
        prev = out[-1]
        ys, xs = axis_indices(ny, level, top), axis_indices(nx, level, top)
        corners = prev.label
        first = corners[:-1, :-1]
        uniform = (first == corners[:-1, 1:]) & (first == corners[1:, :-1]) & (first == corners[1:, 1:])  # NaN never ==
        marked = _dilate(~uniform, plan.margin)
        y_lo, y_hi, y_old = _cells_of(ys, prev.ys)
        x_lo, x_hi, x_old = _cells_of(xs, prev.xs)
        in_marked = np.zeros((len(ys), len(xs)), dtype=bool)
        inferred = np.full((len(ys), len(xs)), np.nan)
        cell_class = np.where(uniform, first, np.nan)
        for cy in (y_lo, y_hi):
            for cx in (x_lo, x_hi):
                in_marked |= marked[np.ix_(cy, cx)]
                inferred = np.fmax(inferred, cell_class[np.ix_(cy, cx)])  # two uniform neighbours share corners
        old = y_old[:, None] & x_old[None, :]
        selected = ~old & in_marked
        label = image[np.ix_(ys, xs)].copy()
        unknown = np.isnan(label)
        carried = np.full(label.shape, np.nan)
        carried[np.ix_(y_old, x_old)] = prev.label  # old points keep what the coarser level said
        label[unknown] = np.where(old, carried, inferred)[unknown]
        out.append(_Level(ys, xs, selected, label))
    return out


def _cells_of(idx: np.ndarray, coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each index: the lowest and highest coarse cell it touches, and whether it is a coarse point.
    A point strictly inside a cell touches that one; a coarse point touches the cells on both sides."""
    cells = len(coarse) - 1
    pos = np.searchsorted(coarse, idx, side="right") - 1
    old = coarse[np.minimum(pos, cells)] == idx
    lo = np.clip(np.where(old, pos - 1, pos), 0, cells - 1)
    hi = np.clip(pos, 0, cells - 1)
    return lo, hi, old


def _dilate(mask: np.ndarray, margin: int) -> np.ndarray:
    """Grow True cells by `margin` cells in every direction (a square of side 2 margin + 1)."""
    if margin == 0 or not mask.any():
        return mask
    return ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool), iterations=margin)


# ----------------------------------------------------------------------------------------------
# Public API

class Step(NamedTuple):
    level: int
    points: list[Point]  # row by row


def next_level(plan: RefinePlan, known: Mapping[Point, str], start: int = 0) -> Step | None:
    """The one refinement step: the lowest level >= start with points to run, and those points (the points
    it selects that have no verdict yet; an error counts as none). None when no level from `start` on has
    any: refinement is done (start=0) or waits for the errors of the levels before `start` to be retried."""
    if not _is_int(start) or not 0 <= start <= plan.levels + 1:
        raise RefineError(f"start={start!r}: allowed 0..{plan.levels + 1}")
    image = class_image(plan, known)
    for level, lv in enumerate(_walk(plan, image, plan.levels)):
        todo = lv.selected & np.isnan(image[np.ix_(lv.ys, lv.xs)])
        if level >= start and todo.any():
            iy, ix = np.nonzero(todo)
            return Step(level, [(int(lv.ys[a]), int(lv.xs[b])) for a, b in zip(iy, ix)])
    return None


def known_verdicts(verdicts: np.ndarray) -> dict[Point, str]:
    """{(iy, ix): verdict} of a (ny, nx) array of verdict strings (grid.Grid.verdicts, or the runner's
    records by lattice point): what refinement knows. Anything else (missing, pending, None) is not known."""
    verdicts = np.asarray(verdicts, dtype=object)
    rows, cols = np.nonzero(np.isin(verdicts, VERDICTS))
    return {(int(i), int(j)): str(verdicts[i, j]) for i, j in zip(rows, cols)}


class RefinedMap(NamedTuple):
    labels: np.ndarray  # (ny, nx) bool: trainable (run or inferred)
    inferred: np.ndarray  # (ny, nx) bool: never run (or only errored), class taken from a uniform cell
    undecided: np.ndarray  # (ny, nx) bool: no class (still to run, or an error with no uniform cell around)

    def float_labels(self) -> np.ndarray:
        """1.0 / 0.0 / NaN (undecided): the label image fractal.py measures."""
        return np.where(self.undecided, np.nan, self.labels.astype(float))


def fill(plan: RefinePlan, known: Mapping[Point, str]) -> RefinedMap:
    """The full-resolution map the known verdicts give, inferred pixels marked."""
    image = class_image(plan, known)
    label = _walk(plan, image, plan.levels)[-1].label  # level L is the full lattice
    undecided = np.isnan(label)
    return RefinedMap(labels=label == 1.0, inferred=np.isnan(image) & ~undecided, undecided=undecided)


def refine(plan: RefinePlan, run_points: Callable[[list[Point]], Mapping[Point, str]],
           known: Mapping[Point, str] | None = None,
           on_level: Callable[[int, int], None] | None = None) -> dict[Point, str]:
    """Run every level from where `known` stands, one next_level step after another; returns known plus the
    new verdicts.

    run_points(points) -> {point: verdict}; a point it leaves out, or answers `error`, stays unknown and is
    run again by the next call (this call goes on to the finer levels). on_level(level, n_points) is told
    before each level runs."""
    known = dict(known or {})
    level = 0
    while (step := next_level(plan, known, start=level)) is not None:
        if on_level is not None:
            on_level(step.level, len(step.points))
        results = dict(run_points(step.points))
        class_image(plan, results)  # a bad verdict from run_points names its point
        known.update(results)
        level = step.level + 1
    return known


# ----------------------------------------------------------------------------------------------
# Accuracy against a known full map

@dataclass(frozen=True)
class Island:
    trainable: bool  # the true class of its pixels (the refined map says the other, or nothing)
    pixels: int
    bbox: tuple[int, int, int, int]  # iy0, ix0, iy1, ix1, inclusive


def missed_islands(truth, refined) -> list[Island]:
    """Connected sets (8-neighbour) of pixels of one true class that the refined map gets wrong, largest first.

    truth, refined: (ny, nx) labels, bool or 1.0/0.0; refined may hold NaN (undecided: counted wrong)."""
    truth, refined = np.asarray(truth), np.asarray(refined, dtype=float)
    if truth.ndim != 2 or truth.shape != refined.shape:
        raise ValueError(f"truth shape {truth.shape}, refined shape {refined.shape}: need two equal 2-D shapes")
    true_class = truth.astype(bool)
    wrong = ~(refined == true_class)  # NaN compares unequal: undecided is wrong
    out = []
    for cls in (True, False):
        parts, count = ndimage.label(wrong & (true_class == cls), structure=np.ones((3, 3), dtype=bool))
        for k, box in enumerate(ndimage.find_objects(parts), start=1):
            pixels = int(np.count_nonzero(parts[box] == k))
            out.append(Island(cls, pixels, (box[0].start, box[1].start, box[0].stop - 1, box[1].stop - 1)))
    return sorted(out, key=lambda i: (-i.pixels, i.bbox))
