"""`fractal-llm perturb TRANSECT_DIR --out DIR`: the uncertainty exponent and precision floor at a transect's border.

Runs the perturbation study of fractal_llm/plans/perturb.py on this machine (the local runner: claims,
workers, a re-run resumes) and writes its analysis (fractal_llm/report/uncertainty.py) to DIR/uncertainty.json
and DIR/uncertainty.md: f(eps), the exponent alpha with its interval and D = 2 - alpha; and how far a
rounding-level change of both learning rates moves the line's loss ratio, how many verdicts it flips, and the
precision floor against the transect's structure function; the same for the line points run in float64
(DIR/float64/). With --limit it runs part of the study and analyses what has finished.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
from rich.console import Console

from fractal_llm.plans.perturb import (EPSILONS, FLOAT64_DIR, PerturbPlan, Run, check_plan, parse_epsilons, plan_runs, study_config,
                                       write_plan)
from fractal_llm.plans.transect import TransectError, read_transect
from fractal_llm.records import file_name, json_safe, read_record, record_name
from fractal_llm.report.uncertainty import class_of, precision_floor, uncertainty_exponent
from fractal_llm.sweep import load_sweep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fractal-llm perturb", description=__doc__.split("\n\n")[0])
    p.add_argument("transect", help="a transect's directory (fractal-llm transect --out)")
    p.add_argument("--out", required=True, help="the study's directory")
    p.add_argument("--points", type=int, default=128, help="random base points (default 128)")
    p.add_argument("--window", type=float, help="half-width of the window in decades (default: half the line)")
    p.add_argument("--eps", default=",".join(f"{e:g}" for e in EPSILONS), help="perturbations in decades")
    p.add_argument("--rounding-sample", type=int, default=64, help="line points run with the rounding change")
    p.add_argument("--seed", type=int, default=0, help="seed of the base points and signs")
    p.add_argument("--workers", type=int, help="worker processes (default: as `fractal-llm local`)")
    p.add_argument("--limit", type=int, help="run at most this many pending points")
    return p


def main(argv: list[str] | None = None) -> int:
    from fractal_llm.runners import local as runner
    args = build_parser().parse_args(argv)
    console = Console()
    transect = read_transect(Path(args.transect))
    window = args.window if args.window is not None else transect.span / 2
    plan = PerturbPlan(transect=str(Path(args.transect)), points=args.points, window=window,
                       epsilons=parse_epsilons(args.eps), rounding_sample=args.rounding_sample, seed=args.seed)
    check_plan(plan)
    for flag in ("workers", "limit"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise TransectError(f"--{flag}={value}: must be >= 1")
    runs = plan_runs(plan)
    out = Path(args.out)
    write_plan(out, plan, study_config(plan, runs))
    spec = load_sweep(out / "sweep.yaml")
    runner.preflight_sweep(spec)
    runner.check_out_dir(out, spec)
    rc = runner.run_sweep(spec, out, workers=args.workers, limit=args.limit,
                          wandb_mode=runner.point_wandb_mode(None, out), console=console)
    if rc == 130:
        return rc
    if (out / FLOAT64_DIR / "sweep.yaml").exists():
        double = load_sweep(out / FLOAT64_DIR / "sweep.yaml")
        rc = runner.run_sweep(double, out / FLOAT64_DIR, workers=args.workers, limit=args.limit,
                              wandb_mode=runner.point_wandb_mode(None, out), console=console) or rc
        if rc == 130:
            return rc
    analysis = analyse_study(out, plan, runs)
    (out / "uncertainty.json").write_text(json.dumps(json_safe(analysis), indent=1))
    (out / "uncertainty.md").write_text(render_markdown(analysis))
    console.print(summary_line(analysis), markup=False, highlight=False, soft_wrap=True)
    return rc


def outcome(out: Path, run: Run) -> tuple[float, float]:
    """(class, loss ratio) of a run's record; NaN, NaN while it has none."""
    path = out / file_name(record_name(run.point))
    if not path.exists():
        return math.nan, math.nan
    record = read_record(path)
    ratio = record.summary.get("loss_ratio")
    return class_of(record.verdict), float(ratio) if ratio is not None else math.nan


def analyse_study(out: Path, plan: PerturbPlan, runs: list[Run]) -> dict:
    results = {id(run): outcome(out, run) for run in runs}
    bases = [r for r in runs if r.kind == "base"]
    moved = {(r.index, r.eps): results[id(r)][0] for r in runs if r.kind == "eps"}
    base_class = np.array([results[id(r)][0] for r in bases])
    moved_class = np.array([[moved[(r.index, e)] for e in plan.epsilons] for r in bases])
    analysis = {"plan": plan.to_dict(), "runs": len(runs),
                "finished": int(sum(np.isfinite(results[id(r)][0]) for r in runs)),
                "uncertainty": uncertainty_exponent(plan.epsilons, base_class, moved_class, plan.seed)}
    line = [r for r in runs if r.kind == "line"]
    if line:
        rounded = {r.index: results[id(r)] for r in runs if r.kind == "rounding"}
        structure = transect_structure(Path(plan.transect))
        line_ratio, line_class = [results[id(r)][1] for r in line], [results[id(r)][0] for r in line]
        analysis["rounding"] = precision_floor(line_ratio, [rounded[r.index][1] for r in line],
                                               line_class, [rounded[r.index][0] for r in line], structure)
        transect = read_transect(Path(plan.transect))
        recorded = [outcome(Path(plan.transect), Run("line", r.index, 0.0, {transect.along.name: r.point[transect.along.name]}))
                    for r in line]
        analysis["repeat"] = precision_floor(line_ratio, [d[1] for d in recorded], line_class, [d[0] for d in recorded],
                                             structure)
        double = [outcome(out / FLOAT64_DIR, r) for r in line]
        analysis["float64"] = precision_floor(line_ratio, [d[1] for d in double], line_class, [d[0] for d in double],
                                              structure)
    return analysis


def transect_structure(directory: Path) -> list[list[float]]:
    """[[spacing, S(spacing)], ...] of the transect's loss ratio (empty while its line is unfinished)."""
    from fractal_llm.report.grid import build_line
    from fractal_llm.report.line_report import LineReportError, check_line, line_coordinates
    from fractal_llm.report.sources import local_source
    from fractal_llm.report.transect import analyse_line
    config, records = local_source(directory)
    line = build_line(config, records)
    x, _log = line_coordinates(line)
    try:
        step = check_line(line, x)
    except LineReportError:
        return []
    scaling = analyse_line(line.verdicts == "trainable", line.loss_ratio, step)
    return [[s, v] for s, v in zip(scaling.spacings, scaling.structure)]


def summary_line(analysis: dict) -> str:
    u = analysis["uncertainty"]
    text = (f"perturb: {analysis['finished']} of {analysis['runs']} runs finished; alpha {u['alpha']:.3f} "
            f"[{u['interval'][0]:.3f}, {u['interval'][1]:.3f}] (D = 2 - alpha = {u['dimension']:.3f})")
    if "rounding" in analysis:
        r = analysis["rounding"]
        text += (f"; rounding: mean |dr| {r['mean_change']:.3g}, {r['flips']} of {r['points']} flipped, "
                 f"floor {r['floor'] if r['floor'] is not None else 'below the finest spacing'}")
    return text


def render_markdown(analysis: dict) -> str:
    u, p = analysis["uncertainty"], analysis["plan"]
    lines = [f"# Perturbation study of {p['transect']}", "",
             f"{analysis['finished']} of {analysis['runs']} runs finished. {p['points']} random points within "
             f"±{p['window']:g} decades of the transect's centre, seed {p['seed']}.", "",
             "## Uncertainty exponent", "", "| eps (decades) | flips | share |", "|---:|---:|---:|"]
    lines += [f"| {e:g} | {n} | {f:.4f} |" for e, n, f in zip(u["epsilons"], u["flips"], u["fractions"])]
    lines += ["", f"alpha = {u['alpha']:.3f}, 95% interval [{u['interval'][0]:.3f}, {u['interval'][1]:.3f}] "
              f"(bootstrap over the {u['points']} base points); D = 2 - alpha = {u['dimension']:.3f}. alpha 1: a "
              "smooth border; near 0: a riddled one.", ""]
    probes = (("repeat", "exactly as the transect ran them (determinism: expect 0)"),
              ("rounding", "with both learning rates moved by one part in 10^7"), ("float64", "in float64"))
    if "rounding" in analysis:
        lines += ["## Precision floor", ""]
    for key, what in probes:
        if key in analysis:
            r = analysis[key]
            lines += [f"- {r['points']} line points run again {what}: the loss ratio moved by a mean "
                      f"{r['mean_change']:.3g} (median {r['median_change']:.3g}, max {r['max_change']:.3g}); "
                      f"{r['flips']} verdicts flipped. Floor (largest spacing where that change is at least half "
                      f"the line's mean |dr|): {r['floor'] if r['floor'] is not None else 'below the finest spacing'}."]
    lines.append("")
    return "\n".join(lines)
