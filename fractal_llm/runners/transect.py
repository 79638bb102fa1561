"""`fractal-llm transect FILE.yaml --through X,Y --along AXIS --span DECADES --points N --out DIR [--wandb]`.

N points evenly spaced along AXIS (in log10 on a log axis, linearly on a linear one), centred on (X, Y), the
other axis held at its value there: a 1-D probe of the border's scales (fractal_llm/plans/transect.py is the
plan, fractal_llm/report/transect.py the analysis). `--through NAME=VALUE` gives one coordinate and finds the
other by bisection (`fractal-llm boundary`), so a ladder of budgets finds its border again at each budget;
`--through-from REPORT_DIR` goes through the centre of a map report's top-ranked zoom box.

The line runs here like any map (`fractal-llm local`: claims, workers, a re-run resumes) into DIR, which then
holds transect.yaml (the plan), sweep.yaml (the line's sweep), boundary.yaml (the bisection's runs) and one
record per point; `fractal-llm report --local DIR` analyses it. With --wandb the line is created as a W&B
sweep instead (the bisection still runs here), and the command prints the `fractal-llm agents` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from fractal_llm.paths import atomic_write_text
from fractal_llm.plans.transect import (TRANSECT_FILE, TransectError, axes_for, check_span, parse_through, plan_transect,
                                        read_transect, write_transect)
from fractal_llm.plans.zoom import centre_from_report
from fractal_llm.runners.boundary import DEFAULT_STEPS, find_border
from fractal_llm.sweep import load_sweep

BOUNDARY_FILE = "boundary.yaml"
WANDB_SWEEP_FILE = "wandb_sweep.txt"  # --wandb: the line's sweep path, so a re-run does not create a second


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fractal-llm transect", description=__doc__.split("\n\n")[1])
    p.add_argument("file", help="the parent sweep YAML (two axes; its other fields are the line's)")
    p.add_argument("--through",
                   help="X,Y (x: the axis name that sorts first) or NAME=VALUE (the other found by bisection)")
    p.add_argument("--through-from", metavar="REPORT_DIR",
                   help="through the centre of a map report's top-ranked zoom box (a stretch of its border)")
    p.add_argument("--along", required=True, help="the axis the points move along")
    p.add_argument("--span", type=float, required=True, help="the line's length: decades on a log axis")
    p.add_argument("--points", type=int, default=512, help="points on the line (default 512)")
    p.add_argument("--out", required=True, help="the transect's directory")
    p.add_argument("--bracket", help="bisection: LO,HI of the other axis (default: scan its range)")
    p.add_argument("--bisect-steps", type=int, default=DEFAULT_STEPS,
                   help=f"bisection halvings (default {DEFAULT_STEPS})")
    p.add_argument("--workers", type=int, help="worker processes (default: as `fractal-llm local`)")
    p.add_argument("--limit", type=int, help="run at most this many pending points")
    p.add_argument("--wandb", action="store_true", help="create the line as a W&B sweep instead of running here")
    p.add_argument("--entity", help="--wandb: the W&B entity (default: yours)")
    p.add_argument("--project", help="--wandb: the W&B project (default: the parent's)")
    return p


def resolve_through(args, out: Path, console: Console) -> tuple[float, float]:
    """(along value, held value) of the line's centre: given, found by bisection, or read from DIR's plan."""
    spec = load_sweep(args.file)
    along, held = axes_for(spec, args.along)
    check_span(args.span, args.points, along)
    if (args.through is None) == (args.through_from is None):
        raise TransectError("give one of --through and --through-from")
    if args.through_from is not None:
        x, y = sorted((along, held), key=lambda a: a.name)
        centre = dict(zip((x.name, y.name), centre_from_report(Path(args.through_from), x, y)))
        return centre[along.name], centre[held.name]
    given = parse_through(args.through, along, held)
    if len(given) == 2:
        return given[along.name], given[held.name]
    (name, value), = given.items()
    if (out / TRANSECT_FILE).exists():  # found by an earlier call: a re-run keeps the line where it was
        old = read_transect(out)
        old_point = {old.along.name: old.through[0], old.held.name: old.through[1]}
        if old.along.name == along.name and old_point.get(name) == value:
            return old.through
    other = held.name if name == along.name else along.name
    console.print(f"bisecting {other} at {name}={value:.10g} for the border", highlight=False)
    point, _width = find_border(args.file, other, given, args.bracket, args.bisect_steps, out / BOUNDARY_FILE,
                                console)
    return point[along.name], point[held.name]


def main(argv: list[str] | None = None) -> int:
    from fractal_llm.runners import local as runner
    args = build_parser().parse_args(argv)
    console = Console()
    out = Path(args.out)
    for flag in ("workers", "limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise TransectError(f"--{flag}={value}: must be >= 1")
    spec = load_sweep(args.file)
    runner.preflight_sweep(spec)
    out.mkdir(parents=True, exist_ok=True)
    through = resolve_through(args, out, console)
    t, cfg = plan_transect(args.file, args.along, through, args.span, args.points)
    write_transect(out, t, cfg)
    unit = "decades" if t.along.log else "axis units"
    console.print(f"transect: {t.points} points along {t.along.name} over {t.span:g} {unit} (step {t.step:.3g}), "
                  f"through {t.along.name}={t.through[0]:.10g}, {t.held.name}={t.through[1]:.10g}; in {out}",
                  highlight=False, soft_wrap=True)
    if args.wandb:
        return create_wandb_line(out, cfg, args.entity, args.project, console)
    line = load_sweep(out / "sweep.yaml")
    runner.check_out_dir(out, line)
    rc = runner.run_sweep(line, out, workers=args.workers, limit=args.limit,
                          wandb_mode=runner.point_wandb_mode(None, out), console=console)
    console.print(f"report: fractal-llm report --local {out} --out {out}/report", highlight=False, soft_wrap=True)
    return rc


def create_wandb_line(out: Path, cfg: dict, entity: str | None, project: str | None, console: Console) -> int:
    from fractal_llm.refine.refine import create_sweep
    path = out / WANDB_SWEEP_FILE
    if path.exists():
        sweep_path = path.read_text().strip()
    else:
        sweep_path = create_sweep(cfg, entity, project)
        atomic_write_text(path, sweep_path + "\n")
    console.print(f"fractal-llm agents {sweep_path}", highlight=False, soft_wrap=True)
    console.print(f"report: fractal-llm report {sweep_path} --out {out}/report", highlight=False, soft_wrap=True)
    return 0
