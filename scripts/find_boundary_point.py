"""A point on the trainability boundary, by bisection along one axis: a centre for `fractal-llm zoom`.

A map's pixels place the boundary only to within one pixel spacing; a zoom sequence 5 octaves deep needs its
centre on the boundary to within a small share of its deepest frame's width, or the deep frames miss it.
Bisection between two values of one axis whose verdicts differ (the other axis and every other field fixed)
halves the bracket with each run.

    python scripts/find_boundary_point.py sweeps/smoke_band32.yaml --axis matrix_lr --bracket 0.5,2 \
        --at unembedding_lr=0.3 --steps 14

Prints each run and, last, `centre: X,Y` in the order `fractal-llm zoom --centre` takes (x = the axis whose
name sorts first). Log axes are bisected in log10.
"""

import argparse
import math
import sys

from rich.console import Console

from fractal_llm.config import TrainConfig
from fractal_llm.sweep import expand_grid, load_sweep
from fractal_llm.train import train


def verdict_at(fixed: dict, values: dict) -> tuple[str, float]:
    result = train(TrainConfig(**{**fixed, **values}))
    return result.summary["verdict"], float(result.summary["loss_ratio"])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("file", help="sweep YAML: its fixed values are used")
    p.add_argument("--axis", required=True, help="the axis to bisect")
    p.add_argument("--bracket", required=True, help="LO,HI: two values of the axis with different classes")
    p.add_argument("--at", required=True, help="NAME=VALUE: the other axis, held fixed")
    p.add_argument("--steps", type=int, default=14, help="bisection steps (default 14)")
    args = p.parse_args(argv)
    console = Console()
    spec = load_sweep(args.file)
    names = spec.axis_names
    other, other_value = args.at.split("=")
    if sorted([args.axis, other]) != sorted(names):
        console.print(f"[red]error:[/red] --axis {args.axis} and --at {other}: the sweep's axes are {names}")
        return 2
    fixed = {k: v for k, v in expand_grid(spec)[0].items() if k not in names}
    fixed[other] = float(other_value)
    lo, hi = (float(v) for v in args.bracket.split(","))
    log = lo > 0 and hi > 0
    point = lambda v: {args.axis: v}  # noqa: E731
    classes = {}
    for v in (lo, hi):
        verdict, ratio = verdict_at(fixed, point(v))
        classes[v] = verdict == "trainable"
        console.print(f"{args.axis}={v:.10g}: {verdict} (loss ratio {ratio:.4f})", highlight=False)
    lo_trainable = classes[lo]
    if lo_trainable == classes[hi]:
        console.print(f"[red]error:[/red] --bracket {args.bracket}: both ends are in the same class")
        return 2
    for _ in range(args.steps):
        mid = 10 ** ((math.log10(lo) + math.log10(hi)) / 2) if log else (lo + hi) / 2
        verdict, ratio = verdict_at(fixed, point(mid))
        console.print(f"{args.axis}={mid:.10g}: {verdict} (loss ratio {ratio:.4f})", highlight=False)
        if (verdict == "trainable") == lo_trainable:
            lo = mid
        else:
            hi = mid
    mid = 10 ** ((math.log10(lo) + math.log10(hi)) / 2) if log else (lo + hi) / 2
    width = math.log10(hi / lo) if log else hi - lo
    values = {args.axis: mid, other: float(other_value)}
    console.print(f"bracket width {width:.3g} {'decades' if log else ''}", highlight=False)
    console.print(f"centre: {values[names[0]]:.12g},{values[names[1]]:.12g}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
