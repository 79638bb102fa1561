"""`fractal-llm boundary FILE.yaml --along AXIS --at NAME=VALUE`: a point on the border, by bisection.

A map's pixels place the border only to within one pixel; a transect or a deep zoom frame needs its centre
on the border to within a small share of its width. Bisection between two values of one axis whose classes
differ (the other axis and every other field fixed) halves the bracket with each run. Without --bracket the
parent sweep's range of the axis is scanned at SCAN_POINTS values first, and the first change of class from
its low end is bisected. Log axes are bisected in log10. `fractal-llm transect --through NAME=VALUE` calls
the same bisection. Each run's verdict is kept in a record file (--record), so a re-run skips what is done.
Prints each run and, last, `centre: X,Y` in the order `fractal-llm zoom --centre` takes (x: the name that
sorts first).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from fractal_llm.config import TrainConfig
from fractal_llm.paths import atomic_write_text
from fractal_llm.plans.transect import TransectError, axes_for, parse_through
from fractal_llm.plans.zoom import Axis
from fractal_llm.sweep import load_sweep

SCAN_POINTS = 9  # values of the axis tried when no --bracket is given (about 0.4 decades apart on 3 decades)
DEFAULT_STEPS = 20  # halvings: 3 decades / 2^20 = 3e-6 decades, below a 512-point transect's finest spacing


@dataclass
class Bisection:
    """What the bisection found: the bracket's two ends (classes differ) and the runs it took."""
    axis: str
    lo: float
    hi: float
    runs: dict[float, tuple[str, float]]  # axis value -> (verdict, loss ratio)
    log: bool

    @property
    def centre(self) -> float:
        return 10 ** ((math.log10(self.lo) + math.log10(self.hi)) / 2) if self.log else (self.lo + self.hi) / 2

    @property
    def width(self) -> float:
        return math.log10(self.hi / self.lo) if self.log else self.hi - self.lo


class RunCache:
    """Verdicts by axis value, kept in a YAML file beside the transect so that a re-run trains nothing twice."""

    def __init__(self, path: Path | None, fixed: dict, console: Console):
        self.path, self.fixed, self.console = path, fixed, console
        self.runs: dict[float, tuple[str, float]] = {}
        if path is not None and path.exists():
            saved = yaml.safe_load(path.read_text()) or {}
            if saved.get("fixed") == fixed:
                self.runs = {float(v): (verdict, float(r)) for v, verdict, r in saved.get("runs", [])}

    def verdict(self, axis: str, value: float) -> tuple[str, float]:
        if value not in self.runs:
            from fractal_llm.train import train
            result = train(TrainConfig.from_dict({**self.fixed, axis: value}))
            self.runs[value] = (result.summary["verdict"], float(result.summary["loss_ratio"]))
            self.save()
        verdict, ratio = self.runs[value]
        self.console.print(f"{axis}={value:.10g}: {verdict} (loss ratio {ratio:.4f})", highlight=False)
        return verdict, ratio

    def save(self) -> None:
        if self.path is not None:
            runs = [[v, verdict, r] for v, (verdict, r) in sorted(self.runs.items())]
            atomic_write_text(self.path, yaml.safe_dump({"fixed": self.fixed, "runs": runs}, sort_keys=False))


def scan_bracket(axis: Axis, cache: RunCache) -> tuple[float, float]:
    """Two neighbouring values of a coarse scan over the parent's range whose classes differ."""
    a, b = (math.log10(axis.lo), math.log10(axis.hi)) if axis.log else (axis.lo, axis.hi)
    values = [a + (b - a) * i / (SCAN_POINTS - 1) for i in range(SCAN_POINTS)]
    values = [10 ** v for v in values] if axis.log else values
    classes = [cache.verdict(axis.name, v)[0] == "trainable" for v in values]
    for v0, v1, c0, c1 in zip(values, values[1:], classes, classes[1:]):
        if c0 != c1:
            return v0, v1
    kind = "trainable" if classes[0] else "not trainable"
    raise TransectError(f"{axis.name}: every one of {SCAN_POINTS} values from {axis.lo:.4g} to {axis.hi:.4g} is "
                        f"{kind} at these settings; no border to bisect on that line (give --bracket LO,HI)")


def bisect(axis: Axis, cache: RunCache, bracket: tuple[float, float] | None, steps: int) -> Bisection:
    lo, hi = bracket if bracket is not None else scan_bracket(axis, cache)
    lo_class = cache.verdict(axis.name, lo)[0] == "trainable"
    if (cache.verdict(axis.name, hi)[0] == "trainable") == lo_class:
        raise TransectError(f"--bracket={lo:g},{hi:g}: both ends are in the same class along {axis.name}")
    found = Bisection(axis.name, lo, hi, cache.runs, axis.log)
    for _ in range(steps):
        mid = found.centre
        if (cache.verdict(axis.name, mid)[0] == "trainable") == lo_class:
            found.lo = mid
        else:
            found.hi = mid
    return found


def parse_bracket(text: str | None, axis: Axis) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise TransectError(f"--bracket={text!r}: expected LO,HI (two values of {axis.name})") from None
    if lo == hi or (axis.log and min(lo, hi) <= 0):
        raise TransectError(f"--bracket={text!r}: need two different values{' > 0 (a log axis)' if axis.log else ''}")
    return lo, hi


def find_border(parent_file: str, bisect_axis: str, at: dict[str, float], bracket: str | None, steps: int,
                record: Path | None, console: Console) -> tuple[dict[str, float], float]:
    """({both axes: values}, bracket width) of a border point along bisect_axis, the other axis held at `at`."""
    if steps < 1:
        raise TransectError(f"--bisect-steps={steps}: must be >= 1")
    spec = load_sweep(parent_file)
    axis, _held = axes_for(spec, bisect_axis)
    span = parse_bracket(bracket, axis)
    from fractal_llm.sweep import expand_grid
    fixed = {k: v for k, v in expand_grid(spec)[0].items() if k not in spec.axis_names}
    cache = RunCache(record, {**fixed, **at}, console)
    found = bisect(axis, cache, span, steps)
    unit = "decades" if axis.log else "(axis units)"
    console.print(f"bracket width {found.width:.3g} {unit} after {len(cache.runs)} runs", highlight=False)
    return {**at, bisect_axis: found.centre}, found.width


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fractal-llm boundary", description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="sweep YAML: its fixed values and its two axes' ranges are used")
    p.add_argument("--along", required=True, help="the axis to bisect")
    p.add_argument("--at", required=True, help="NAME=VALUE: the other axis, held fixed")
    p.add_argument("--bracket", help="LO,HI: two values of the axis with different classes (default: scan)")
    p.add_argument("--bisect-steps", type=int, default=DEFAULT_STEPS, help=f"halvings (default {DEFAULT_STEPS})")
    p.add_argument("--record", help="YAML file that keeps each run's verdict (a re-run skips them)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    spec = load_sweep(args.file)
    along, held = axes_for(spec, args.along)
    at = parse_through(args.at, along, held)
    if list(at) != [held.name]:
        raise TransectError(f"--at={args.at!r}: give the other axis, {held.name}=VALUE")
    point, _ = find_border(args.file, args.along, at, args.bracket, args.bisect_steps,
                           Path(args.record) if args.record else None, console)
    x, y = sorted(point)
    console.print(f"centre: {point[x]:.12g},{point[y]:.12g}", highlight=False)
    return 0
