"""The plan of a perturbation study around a transect's border: the uncertainty exponent and the precision floor.

- Uncertainty exponent (McDonald, Grebogi, Ott and Yorke, 1985): `points` random points in a square window of
  half-width `window` decades around the transect's centre (both learning rates, log10-uniform), each run as
  is and moved by eps decades on both axes (a random sign per axis and point) for every eps of `epsilons`.
  The fraction f(eps) whose verdict flips goes as eps^alpha; the border's dimension is D = 2 - alpha.
- Precision floor: every k-th point of the transect (`rounding_sample` of them) run as is and with both
  learning rates moved by one part in 10^7 (ROUNDING, float32's resolution). How far that moves
  the loss ratio, against the transect's structure function, is the scale below which structure is
  precision noise. The same line points run once more in float64 (DIR/float64/, a sweep of its own).
Every run is one point of a point-list sweep (DIR/sweep.yaml, `grid_point`), so the local runner runs it with
claims and resumes it; DIR/perturb.yaml holds this plan. The analysis is fractal_llm/report/uncertainty.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from fractal_llm.paths import atomic_write_text
from fractal_llm.plans.transect import TransectError, read_transect
from fractal_llm.sweep import POINT_KEY, SweepError, check_sweep, dump_sweep_yaml, load_sweep

PLAN_FILE = "perturb.yaml"
EPSILONS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2)  # decades: from float32's resolution to a coarse pixel
ROUNDING = 1e-7  # relative change of a learning rate at the level of float32 rounding (2^-23 = 1.2e-7)


@dataclass(frozen=True)
class PerturbPlan:
    transect: str  # the transect's directory (its plan and records)
    points: int  # random base points for the uncertainty exponent
    window: float  # half-width of the square window, decades on both axes
    epsilons: tuple[float, ...]
    rounding_sample: int  # transect points run again with the rounding-level change
    seed: int

    def to_dict(self) -> dict:
        out = asdict(self)
        out["epsilons"] = list(self.epsilons)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "PerturbPlan":
        return cls(transect=d["transect"], points=int(d["points"]), window=float(d["window"]),
                   epsilons=tuple(float(e) for e in d["epsilons"]), rounding_sample=int(d["rounding_sample"]),
                   seed=int(d["seed"]))


@dataclass(frozen=True)
class Run:
    """One run of the study: what it is for, and its point."""
    kind: str  # "base", "eps", "line", "rounding"
    index: int  # the base point (or line point) it belongs to
    eps: float  # eps in decades ("eps"), the relative change ("rounding"), else 0
    point: dict  # {axis name: value}


def parse_epsilons(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise TransectError(f"--eps={text!r}: expected comma-separated numbers (decades), e.g. 1e-7,1e-5,1e-3") from None
    if len(values) < 2 or any(not (0 < v < 1) for v in values) or len(set(values)) != len(values):
        raise TransectError(f"--eps={text!r}: need at least two different values in (0, 1) decades")
    return tuple(sorted(values))


def check_plan(plan: PerturbPlan) -> None:
    if plan.points < 8:
        raise TransectError(f"--points={plan.points}: must be >= 8 (the issue's study uses 128 per budget)")
    if not (math.isfinite(plan.window) and plan.window > 0):
        raise TransectError(f"--window={plan.window!r}: must be > 0 decades")
    if plan.rounding_sample < 0:
        raise TransectError(f"--rounding-sample={plan.rounding_sample}: must be >= 0")


def plan_runs(plan: PerturbPlan) -> list[Run]:
    """Every run, in a fixed order (the seed fixes the base points and the signs)."""
    t = read_transect(Path(plan.transect))
    if not (t.along.log and t.held.log):
        raise TransectError(f"{plan.transect}: perturbations are in decades; both axes must be log axes")
    rng = np.random.default_rng(plan.seed)
    centre = np.log10([t.through[0], t.through[1]])
    names = (t.along.name, t.held.name)
    runs = []
    for i in range(plan.points):
        base = centre + rng.uniform(-plan.window, plan.window, size=2)
        signs = rng.choice([-1.0, 1.0], size=2)
        runs.append(Run("base", i, 0.0, dict(zip(names, (10.0 ** base).tolist()))))
        for eps in plan.epsilons:
            runs.append(Run("eps", i, eps, dict(zip(names, (10.0 ** (base + signs * eps)).tolist()))))
    if plan.rounding_sample:
        values = t.values()
        stride = max(1, len(values) // plan.rounding_sample)
        for j in range(0, len(values), stride)[:plan.rounding_sample]:
            point = {t.along.name: float(values[j]), t.held.name: t.through[1]}
            runs.append(Run("line", j, 0.0, point))
            runs.append(Run("rounding", j, ROUNDING, {name: value * (1 + ROUNDING) for name, value in point.items()}))
    return runs


def study_config(plan: PerturbPlan, runs: list[Run]) -> dict:
    """The runs as one point-list sweep over the transect's two axes, every other field the line's."""
    line = load_sweep(Path(plan.transect) / "sweep.yaml")
    t = read_transect(Path(plan.transect))
    cfg = {key: value for key, value in line.raw.items() if key != "parameters"}
    params = {name: {"value": value} for name, value in line.fixed.items() if name != t.held.name}
    params[POINT_KEY] = {"values": [run.point for run in runs]}
    cfg["parameters"] = params
    cfg["name"] = f"{line.name}-perturb"
    cfg["description"] = (f"Perturbation study of {line.name}: {plan.points} points in +-{plan.window:g} decades, "
                          f"eps {', '.join(f'{e:g}' for e in plan.epsilons)}; {plan.rounding_sample} line points "
                          f"moved by {ROUNDING:g}")
    try:
        check_sweep(cfg)
    except SweepError as e:
        raise TransectError(f"the perturbation sweep: {e}") from None
    return cfg


FLOAT64_DIR = "float64"  # the line sample again in float64: a sweep of its own (dtype is fixed per sweep)


def float64_config(cfg: dict, runs: list[Run]) -> dict | None:
    """The study's line points (kind "line") as a sweep of their own in float64, trained eagerly; None when the
    study samples no line points."""
    points = [run.point for run in runs if run.kind == "line"]
    if not points:
        return None
    out = {key: value for key, value in cfg.items() if key != "parameters"}
    params = {name: spec for name, spec in cfg["parameters"].items() if name != POINT_KEY}
    params.update(dtype={"value": "float64"}, compile={"value": "eager"})
    params[POINT_KEY] = {"values": points}
    out.update(parameters=params, name=f"{cfg['name']}-float64",
               description=f"The line points of {cfg['name']} again in float64")
    check_sweep(out)
    return out


def write_plan(out: Path, plan: PerturbPlan, cfg: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / PLAN_FILE
    if path.exists() and read_plan(out) != plan:
        raise TransectError(f"--out {out}: holds another perturbation study ({read_plan(out)}); use another --out")
    atomic_write_text(path, yaml.safe_dump(plan.to_dict(), sort_keys=False))
    atomic_write_text(out / "sweep.yaml", dump_sweep_yaml(cfg))
    double = float64_config(cfg, plan_runs(plan))
    if double is not None:
        (out / FLOAT64_DIR).mkdir(exist_ok=True)
        atomic_write_text(out / FLOAT64_DIR / "sweep.yaml", dump_sweep_yaml(double))


def read_plan(out: Path) -> PerturbPlan:
    path = Path(out) / PLAN_FILE
    if not path.exists():
        raise TransectError(f"{out}: no {PLAN_FILE} (write one with `fractal-llm perturb`)")
    return PerturbPlan.from_dict(yaml.safe_load(path.read_text()))
