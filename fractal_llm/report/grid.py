"""Grid reconstruction: place run records on the 2-D grid a sweep config defines (rules: docs/design.md).

The axes are the sweep's two `values` parameters (sorted by name: x = first, y = second); every other
parameter is fixed. A run is placed by its config values at the nearest axis value, within a relative
tolerance and half the distance to that value's neighbours, never by its order. Several runs at one point: a
result (trainable, not_trainable, diverged) beats a run in flight (pending), which beats an error, which beats
a hole (a run that ended without a verdict); within one rank the latest run wins. A run whose fixed
parameters differ from the sweep's is refused, not silently mixed.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from fractal_llm.config import DERIVED_WHEN_NONPOSITIVE
from fractal_llm.errors import FractalLLMError
from fractal_llm.records import RunRecord, values_from_name
from fractal_llm.refine.levels import RefinePlan, fill, known_verdicts
from fractal_llm.sweep import SweepError, parse_parameters
from fractal_llm.verdict import VERDICTS, count_verdicts, labels_from_verdicts


class GridError(FractalLLMError):
    """A sweep config or run that cannot be placed on a grid; the message names what and why."""


@dataclass
class Grid:
    x_name: str
    y_name: str
    x_values: list[float]
    y_values: list[float]
    labels: np.ndarray  # (ny, nx): 1.0 trainable, 0.0 not_trainable/diverged, NaN error, pending or missing
    verdicts: np.ndarray  # (ny, nx) object: the cell's outcome (verdict.OUTCOMES)
    scores: np.ndarray  # (ny, nx): Sohl-Dickstein score, NaN where missing
    final_loss: np.ndarray  # (ny, nx): last finite training loss, NaN where missing
    record_index: np.ndarray  # (ny, nx) int index into records of the run that decided the cell; -1: no run
    records: list[RunRecord]
    fixed: dict
    counts: dict  # every one of OUTCOMES
    skipped: list[str] = field(default_factory=list)  # runs not placed (off the grid's values), with the reason
    name: str = ""  # sweep name, for titles and default paths
    inferred: np.ndarray | None = None  # (ny, nx) bool: never run, class taken from refinement (apply_refinement)
    refinement: dict | None = None  # {"levels", "margin"} apply_refinement filled with (robustness re-fills)

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape

    def trainable_fraction(self) -> float:
        """Trainable share of the map: the points with a class, i.e. a result or (adaptive map) an inferred
        pixel counted by the class it took; errors, pending and missing points excluded. An adaptive map's runs
        crowd the boundary: on a 64x64 paper frame they were 0.543 trainable, the full map 0.522."""
        decided = np.isfinite(self.labels)
        n = int(decided.sum())
        return float(np.count_nonzero(self.labels[decided] == 1.0)) / n if n else math.nan

    def run_trainable_fraction(self) -> float:
        """Trainable share of the points that ran and have a result (the map's, without inferred pixels)."""
        decided = self.counts["trainable"] + self.counts["not_trainable"] + self.counts["diverged"]
        return self.counts["trainable"] / decided if decided else math.nan


# ---------------------------------------------------------------- sweep config -> axes


def sweep_axes(sweep_config: dict) -> tuple[list[tuple[str, list[float]]], dict]:
    """((x_name, x_values), (y_name, y_values)) sorted by name, values ascending (plots and zoom boxes need
    ascending axes; W&B order never matters for placement); and the fixed params (sweep.parse_parameters)."""
    try:
        axes, fixed = parse_parameters(sweep_config.get("parameters"), numeric_strings=True)
    except SweepError as e:
        raise GridError(str(e)) from None
    return [(name, sorted(float(v) for v in values)) for name, values in axes], fixed


def _as_number(value) -> float | None:
    """A float for numbers and numeric strings (W&B may hand back '1e-4' from an unquoted YAML); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------- fixed-parameter check


def same_value(a, b, rtol: float) -> bool:
    """Numbers compare with a relative tolerance, everything else with ==."""
    na, nb = _as_number(a), _as_number(b)
    if na is not None and nb is not None:
        return math.isclose(na, nb, rel_tol=rtol) or na == nb
    return a == b


def check_fixed(record: RunRecord, fixed: dict, rtol: float) -> None:
    """Refuse a run whose config disagrees with one of the sweep's fixed parameters."""
    for key, expected in fixed.items():
        if key not in record.config:
            continue  # a run that never wrote this key (crashed early) cannot contradict it
        if key in DERIVED_WHEN_NONPOSITIVE and _as_number(expected) is not None and _as_number(expected) <= 0:
            continue  # the sweep asked for the derived value; the record holds it resolved
        actual = record.config[key]
        if not same_value(actual, expected, rtol):
            raise GridError(f"run {record.name!r} ({record.path or record.run_id}): config {key}={actual!r} but "
                            f"the sweep fixes {key}={expected!r}; a run from a different setup cannot share "
                            "this map (report it with its own sweep)")


# ---------------------------------------------------------------- placement


def axis_index(values: np.ndarray, value: float, rtol: float) -> int:
    """Index of the axis value (ascending axis) nearest to value, or -1 when it is farther than rtol
    (relative) or than half the distance to that axis value's nearest neighbour. The second bound is what a
    deep zoom frame needs: its neighbouring values can lie closer than rtol (a paper-mode tile frame's are
    1.4e-7 apart, relative, and a fixed 1e-6 put 127 of its 4,096 points in their neighbours' cells)."""
    k = int(np.searchsorted(values, value))
    candidates = [c for c in (k - 1, k) if 0 <= c < len(values)]
    if not candidates:
        return -1
    nearest = min(candidates, key=lambda c: abs(values[c] - value))
    gaps = [abs(values[c] - values[nearest]) for c in (nearest - 1, nearest + 1) if 0 <= c < len(values)]
    tolerance = min([rtol * abs(values[nearest]), *(gap / 2 for gap in gaps)])
    return nearest if abs(values[nearest] - value) <= tolerance else -1


def _axis_value(record: RunRecord, name: str, is_result: bool) -> float | None:
    """The run's value of an axis. A run without a result written without a config (a worker that died, an
    unreadable record file) is placed by its point name ('matrix_lr=0.001,unembedding_lr=1e-05'); a result
    without the key is refused."""
    if name in record.config:
        return _as_number(record.config[name])
    if not is_result:
        return _as_number(values_from_name(record.name).get(name))
    raise GridError(f"run {record.name!r} ({record.path}): config has no {name!r}, an axis of this sweep; "
                    "is it a run of another sweep?")


def _outcome_of(record: RunRecord) -> str:
    verdict = record.summary.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise GridError(f"run {record.name!r} ({record.path}): summary verdict={verdict!r}; allowed: {VERDICTS}")
    return record.outcome


# Which run decides a cell (lower first): a result, then a run in flight, then an error, then a hole.
RANK = {"trainable": 0, "not_trainable": 0, "diverged": 0, "pending": 1, "error": 2, "missing": 3}


ONE_PER_MAP = {"base_model": "base models", "dataset": "datasets",  # repro keys a map must not mix
               "training_step": "training steps (compiled and eager)"}


def repro_of(record: RunRecord, key: str) -> str | None:
    """A run's repro[key] (the base model or dataset it trained on; W&B runs carry the resolved config under
    `resolved`), or None for runs that do not say (errors, older records, the mlp family)."""
    for config in (record.config, record.config.get("resolved") or {}):
        value = (config.get("repro") or {}).get(key)
        if value:
            return str(value)
    return None


def check_one_setup(records: list[RunRecord]) -> None:
    """One map, one base model, one dataset and one training step: agents that resolved `latest` (or a hub
    dataset's branch) before and after a new version would otherwise mix two of them in one map without a
    word; compiled and eager steps round differently, which can flip a point near the border."""
    for key, what in ONE_PER_MAP.items():
        seen = Counter(value for record in records if (value := repro_of(record, key)) is not None)
        if len(seen) > 1:
            listed = ", ".join(f"{value} ({n} runs)" for value, n in sorted(seen.items()))
            raise GridError(f"runs of {len(seen)} {what} in one map (repro.{key}): {listed}; report each with "
                            "its own sweep, or pass --allow-mixed-base to draw them as one map anyway")


def build_grid(sweep_config: dict, records: list[RunRecord], rtol: float = 1e-6,
               allow_mixed_base: bool = False) -> Grid:
    """Place records on the sweep's grid; see the module docstring for the rules."""
    if not allow_mixed_base:
        check_one_setup(records)
    axes, fixed = sweep_axes(sweep_config)
    if len(axes) != 2:
        raise GridError(f"{sweep_config.get('name')}: a sweep with one axis is a transect, not a map "
                        "(`fractal-llm report` reads it as a line)")
    (x_name, x_values), (y_name, y_values) = axes
    best, skipped = place_records(records, [(y_name, y_values), (x_name, x_values)], fixed, rtol)
    return _assemble(x_name, y_name, x_values, y_values, records, best, fixed, skipped,
                     str(sweep_config.get("name") or ""))


def place_records(records: list[RunRecord], axes: list[tuple[str, list[float]]], fixed: dict,
                  rtol: float) -> tuple[dict[tuple, tuple[tuple, int]], list[str]]:
    """{cell: (rank key, record index)} of the run that decides each cell (cell: one index per axis, in the
    order of `axes`), and the runs that are no point of the axes, with why."""
    arrays = [np.asarray(values) for _, values in axes]
    best: dict[tuple, tuple[tuple, int]] = {}  # cell -> ((rank, -created_at, -index), record index)
    skipped = []
    for index, record in enumerate(records):
        check_fixed(record, fixed, rtol)
        outcome = _outcome_of(record)
        values = [_axis_value(record, name, RANK[outcome] == 0) for name, _ in axes]
        cell = tuple(axis_index(a, v, rtol) if v is not None else -1 for a, v in zip(arrays, values))
        if min(cell) < 0:
            where = ", ".join(f"{name}={v!r}" for (name, _), v in zip(axes, values))
            skipped.append(f"{record.name}: {where} is not a point of this grid")
            continue
        key = (RANK[outcome], -record.created_at, -index)  # same time: the later record in the list wins
        if cell not in best or key < best[cell][0]:
            best[cell] = (key, index)
    return best, skipped


def _assemble(x_name, y_name, x_values, y_values, records, best, fixed, skipped, name) -> Grid:
    shape = (len(y_values), len(x_values))
    verdicts = np.full(shape, "missing", dtype=object)
    scores = np.full(shape, np.nan)
    final_loss = np.full(shape, np.nan)
    record_index = np.full(shape, -1, dtype=np.int64)
    for (i, j), (_key, index) in best.items():
        record = records[index]
        verdicts[i, j] = record.outcome
        record_index[i, j] = index
        if RANK[record.outcome] == 0:  # a result: its score and loss colour the maps
            scores[i, j] = _float_or_nan(record.summary.get("score"))
            final_loss[i, j] = _float_or_nan(record.summary.get("loss_last"))
    return Grid(x_name=x_name, y_name=y_name, x_values=list(x_values), y_values=list(y_values),
                labels=labels_from_verdicts(verdicts), verdicts=verdicts, scores=scores, final_loss=final_loss,
                record_index=record_index, records=records, fixed=dict(fixed), counts=count_verdicts(verdicts),
                skipped=skipped, name=name)


@dataclass
class Line:
    """A transect's runs placed on its one axis (fractal_llm/plans/transect.py), in ascending axis order."""
    axis: str
    values: list[float]
    verdicts: np.ndarray  # (n,) object: each point's outcome (verdict.OUTCOMES)
    loss_ratio: np.ndarray  # (n,): the verdict's ratio, NaN where no result or undefined
    loss_first: np.ndarray  # (n,)
    final_loss: np.ndarray  # (n,): mean of the last K losses (the ratio's numerator), NaN where missing
    records: list[RunRecord]
    record_index: np.ndarray  # (n,) int, -1: no run
    fixed: dict
    counts: dict
    skipped: list[str] = field(default_factory=list)
    name: str = ""


def build_line(sweep_config: dict, records: list[RunRecord], rtol: float = 1e-6,
               allow_mixed_base: bool = False) -> Line:
    """Place records on a one-axis sweep (a transect), by the same rules as build_grid."""
    if not allow_mixed_base:
        check_one_setup(records)
    axes, fixed = sweep_axes(sweep_config)
    if len(axes) != 1:
        raise GridError(f"{sweep_config.get('name')}: {len(axes)} axes; a transect has one")
    (axis, values), = axes
    best, skipped = place_records(records, axes, fixed, rtol)
    n = len(values)
    verdicts = np.full(n, "missing", dtype=object)
    ratio, first, final = (np.full(n, np.nan) for _ in range(3))
    record_index = np.full(n, -1, dtype=np.int64)
    for (i,), (_key, index) in best.items():
        record = records[index]
        verdicts[i], record_index[i] = record.outcome, index
        if RANK[record.outcome] == 0:
            ratio[i] = _float_or_nan(record.summary.get("loss_ratio"))
            first[i] = _float_or_nan(record.summary.get("loss_first"))
            final[i] = _float_or_nan(record.summary.get("loss_mean_last_k"))
    return Line(axis=axis, values=list(values), verdicts=verdicts, loss_ratio=ratio, loss_first=first,
                final_loss=final, records=records, record_index=record_index, fixed=dict(fixed),
                counts=count_verdicts(verdicts), skipped=skipped, name=str(sweep_config.get("name") or ""))


def _float_or_nan(value) -> float:
    number = _as_number(value)
    return math.nan if number is None else number


# ---------------------------------------------------------------- paper mode


def grid_from_arrays(x_name: str, y_name: str, x_values, y_values, verdicts, scores, final_loss=None,
                     fixed: dict | None = None, name: str = "") -> Grid:
    """A Grid straight from arrays (paper mode: no run records). verdicts: (ny, nx) verdict strings."""
    x_values = [float(v) for v in x_values]
    y_values = [float(v) for v in y_values]
    shape = (len(y_values), len(x_values))
    verdicts = np.asarray(verdicts, dtype=object)
    try:
        counts = count_verdicts(verdicts)
    except ValueError as e:
        raise GridError(str(e)) from None
    scores = np.asarray(scores, dtype=np.float64)
    final_loss = np.full(shape, np.nan) if final_loss is None else np.asarray(final_loss, dtype=np.float64)
    for label, array in (("verdicts", verdicts), ("scores", scores), ("final_loss", final_loss)):
        if array.shape != shape:
            raise GridError(f"{label}.shape={array.shape}: must be (len(y_values), len(x_values)) = {shape}")
    for label, values in ((x_name, x_values), (y_name, y_values)):
        if any(b <= a for a, b in zip(values, values[1:])):
            raise GridError(f"{label} values must be strictly ascending")
    return Grid(x_name=x_name, y_name=y_name, x_values=x_values, y_values=y_values,
                labels=labels_from_verdicts(verdicts), verdicts=verdicts,
                scores=scores, final_loss=final_loss,
                record_index=np.full(shape, -1, dtype=np.int64), records=[], fixed=dict(fixed or {}),
                counts=counts, name=name)


# ---------------------------------------------------------------- adaptive refinement


def apply_refinement(grid: Grid, levels: int, margin: int) -> None:
    """Fill the pixels an adaptive run never ran from their uniform enclosing cells (fractal_llm.refine.levels), so
    the map and its dimension are of the full-resolution labels; those pixels are marked `inferred` and
    counted apart (counts["inferred"], taken out of "missing")."""
    refined = fill(RefinePlan(grid.shape, levels, margin), known_verdicts(grid.verdicts))
    grid.refinement = {"levels": levels, "margin": margin}
    grid.inferred = refined.inferred & (grid.verdicts == "missing")
    grid.labels = np.where(grid.inferred, refined.labels.astype(float), grid.labels)
    grid.counts["inferred"] = int(grid.inferred.sum())
    grid.counts["missing"] -= grid.counts["inferred"]


# ---------------------------------------------------------------- holes


def hole_list(grid: Grid) -> list[dict]:
    """Every point without a result and not in flight: an error, or missing (no run, a run that ended without
    a verdict, a record file that does not parse), with what is known about why."""
    rows, cols = np.nonzero(np.isin(grid.verdicts, ("error", "missing")))
    out = []
    for i, j in zip(rows.tolist(), cols.tolist()):
        record = grid.records[grid.record_index[i, j]] if grid.record_index[i, j] >= 0 else None
        if record is None:
            state = "no run"
        elif grid.verdicts[i, j] == "error":
            state = record.state or "error"  # a W&B run's own state (failed, crashed, ...) says more
        else:
            state = record.state or "no verdict"
        out.append({"x": grid.x_values[j], "y": grid.y_values[i], "outcome": str(grid.verdicts[i, j]),
                    "state": state, "run": record.path if record else "",
                    "error": str(record.summary.get("error") or "") if record else ""})
    return out
