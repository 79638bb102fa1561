"""The plan of a transect: N points evenly spaced along one axis of a sweep, through one point of its map.

The points are spaced in log10 on a log axis and linearly on a linear one, centred on the point the line
goes through (X, Y); the other axis is held at its value there, every other field at the parent's. The plan
is written as DIR/transect.yaml (what `fractal-llm report` and a re-run read) beside the line's own sweep,
DIR/sweep.yaml: a grid sweep with one axis, which `fractal-llm local` and `wandb sweep` run like any other.
The scale analysis of the finished line is fractal_llm/report/transect.py; the command, fractal_llm/runners/transect.py.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from fractal_llm.paths import atomic_write_text
from fractal_llm.plans.zoom import Axis, ZoomError, check_inside, derived_sweep, frame_values, parent_axes
from fractal_llm.sweep import dump_sweep_yaml, load_sweep

TRANSECT_FILE = "transect.yaml"
LINE_FILE = "sweep.yaml"  # the name a local runner gives its sweep: DIR is the line's record directory
MIN_POINTS = 32  # at least 5 octaves of spacing (m = 1..16) for the scale analysis (report/transect.py)


class TransectError(ZoomError):
    """A bad transect (a `fractal-llm transect` argument, a line float64 cannot place); raised before any run."""


@dataclass(frozen=True)
class Transect:
    """What DIR/transect.yaml holds: enough to rebuild the line's sweep."""
    parent: str  # the parent sweep's name
    along: Axis  # the axis the points move along (with the parent's window)
    held: Axis  # the other axis, held at through[1]
    through: tuple[float, float]  # (along value, held value), axis units
    span: float  # the line's length: decades on a log axis, axis units on a linear one
    points: int

    def coordinates(self) -> tuple[float, float]:
        """The line's ends where its points are evenly spaced (log10 of the value on a log axis)."""
        c = math.log10(self.through[0]) if self.along.log else self.through[0]
        return c - self.span / 2, c + self.span / 2

    @property
    def step(self) -> float:
        """Spacing of neighbouring points, in decades (log axis) or axis units."""
        return self.span / (self.points - 1)

    def values(self) -> list:
        lo, hi = self.coordinates()
        ends = (10.0 ** lo, 10.0 ** hi) if self.along.log else (lo, hi)
        return frame_values(self.along, *ends, self.points, "the transect")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["through"] = list(self.through)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Transect":
        return cls(parent=d["parent"], along=Axis(**d["along"]), held=Axis(**d["held"]),
                   through=tuple(d["through"]), span=float(d["span"]), points=int(d["points"]))


def axes_for(spec, along: str) -> tuple[Axis, Axis]:
    """(along, held) from a two-axis parent sweep; refused when `along` is not one of its axes."""
    x, y = parent_axes(spec)
    if along not in (x.name, y.name):
        raise TransectError(f"--along={along!r}: not an axis of {spec.name}; its axes are {x.name}, {y.name}")
    return (x, y) if along == x.name else (y, x)


def parse_through(text: str, along: Axis, held: Axis) -> dict[str, float]:
    """--through as {axis name: value}: `X,Y` (both axes, x first: the name that sorts first) or `NAME=VALUE`
    (one axis; the other is found by bisection). Every value must lie inside the parent sweep's window."""
    x, y = sorted((along, held), key=lambda a: a.name)
    if "=" in text:
        name, _, value_text = text.partition("=")
        axis = next((a for a in (x, y) if a.name == name.strip()), None)
        if axis is None:
            raise TransectError(f"--through={text!r}: {name.strip()!r} is not an axis of the parent "
                                f"({x.name}, {y.name})")
        values = {axis.name: _number(text, axis, value_text)}
    else:
        parts = text.split(",")
        if len(parts) != 2:
            raise TransectError(f"--through={text!r}: expected X,Y ({x.name},{y.name}) or NAME=VALUE")
        values = {x.name: _number(text, x, parts[0]), y.name: _number(text, y, parts[1])}
    for axis in (x, y):
        if axis.name in values:
            check_inside(axis, values[axis.name], f"--through={text!r}")
    return values


def _number(text: str, axis: Axis, value_text: str) -> float:
    try:
        value = float(value_text)
    except ValueError:
        raise TransectError(f"--through={text!r}: {value_text.strip()!r} is not a number ({axis.name})") from None
    if not math.isfinite(value) or (axis.log and value <= 0):
        raise TransectError(f"--through={text!r}: {axis.name}={value!r} must be finite"
                            f"{' and > 0 (a log axis)' if axis.log else ''}")
    return value


def check_span(span: float, points: int, along: Axis) -> None:
    if points < MIN_POINTS:
        raise TransectError(f"--points={points}: must be >= {MIN_POINTS} (the scale analysis needs two octaves "
                            "of at least 16 points)")
    if not (math.isfinite(span) and span > 0):
        raise TransectError(f"--span={span!r}: must be > 0 ({'decades' if along.log else 'axis units'})")


def line_config(parent: dict, t: Transect) -> dict:
    """The line as a sweep config: the parent with the held axis fixed and the along axis replaced."""
    unit = "decades" if t.along.log else "units"
    description = (f"Transect of {t.parent}: {t.points} points along {t.along.name} over {t.span:g} {unit}, "
                   f"through {t.along.name}={t.through[0]:.10g}, {t.held.name}={t.through[1]:.10g}")
    axes = {t.held.name: {"value": t.through[1]}, t.along.name: {"values": t.values()}}
    return derived_sweep(parent, axes, f"{t.parent}-transect-{t.along.name}", description, "the transect")


def plan_transect(parent_file: str, along: str, through: tuple[float, float], span: float,
                  points: int) -> tuple[Transect, dict]:
    """The transect and its line's sweep config, checked before any run. through = (along value, held value)."""
    spec = load_sweep(parent_file)
    along_axis, held = axes_for(spec, along)
    check_span(span, points, along_axis)
    t = Transect(parent=spec.name, along=along_axis, held=held, through=through, span=span, points=points)
    return t, line_config(spec.raw, t)


def write_transect(out: Path, t: Transect, cfg: dict) -> Path:
    """DIR/transect.yaml and DIR/sweep.yaml; refused when DIR already holds another transect."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / TRANSECT_FILE
    if path.exists():
        old = read_transect(out)
        if old != t:
            raise TransectError(f"--out {out}: holds another transect ({old.points} points along {old.along.name} "
                                f"over {old.span:g}, through {old.through}); use another --out")
    atomic_write_text(path, yaml.safe_dump(t.to_dict(), sort_keys=False))
    atomic_write_text(out / LINE_FILE, dump_sweep_yaml(cfg))
    return out / LINE_FILE


def read_transect(out: Path) -> Transect:
    path = Path(out) / TRANSECT_FILE
    if not path.exists():
        raise TransectError(f"{out}: no {TRANSECT_FILE} (write a transect with `fractal-llm transect`)")
    return Transect.from_dict(yaml.safe_load(path.read_text()))
