"""Benchmark: what adaptive refinement (fractal_llm.refine.levels) costs in runs and loses in accuracy, on paper-mode
maps whose full truth is known.

    python benchmarks/bench_refine.py [--configs tanh,relu,tanh-one-point] [--res 256] [--steps 500]
                                      [--levels 3,4,5,6] [--margins 0,1,2] [--zoom 0] [--workers 0]

Truth: every pixel of a frame trained exactly as `fractal-llm paper CONFIG --res RES` trains it (paper.run_frame
on the config's default window, the batched MLP core), cached in FRACTAL_LLM_HOME/bench_refine/*.npz so a rerun
only refines. --zoom K adds the K nested frames that `fractal-llm paper --zoom K` would train next
(paper.zoom_window).

Refinement then "runs" a point by looking its verdict up in the truth: the batched core computes every point
alone (mlp.train_grid), so a point trained by itself gets the same verdict, and the lookup is what the real run
would return. Per frame and (levels L, margin M) the table shows:
- runs: points run / lattice size;
- wrong: pixels whose refined class differs from the full map (undecided pixels count as wrong);
- missed: connected wrong regions (refine.missed_islands), and in brackets those smaller than the coarse
  spacing 2^L on some axis: the expected loss, features that fall between the level-0 points;
- D: box-counting dimension of the refined map minus the full map's, ours (fractal.estimate_dimension, the
  report's estimator) and the paper's method (fractal.paper_dimension);
- max dslope: the largest change of a local slope of the box counts (ours), the curve both estimators read:
  a large dD ours beside a small dslope is our estimator choosing another fit window, not refinement.
The goal, per row: runs <= 35%, wrong <= 0.5%, |dD| <= 0.03 for both estimators.

    python benchmarks/bench_refine.py --llm sweeps/smoke_band32.yaml [--levels 1,2,3,4] [--margins 0,1,2]
                                      [--run 3,1]

The LLM case: the sweep's full map is run with `fractal-llm local` (runner.run_sweep, W&B disabled) into
FRACTAL_LLM_HOME/bench_refine/llm-NAME-full (a rerun only resumes it), and is the truth. The (L, M) table is
the same lookup as above, plus "cost": the summed runtime_s of the points a row runs over the full map's
(diverged runs stop early, so they cost less than a point count says). Then --run L,M runs the adaptive path
for real (runner.run_adaptive into llm-NAME-adaptive-L-M): its wall time against the full map's, and whether
each point it ran got the same verdict as in the full map (CPU runs are deterministic, so the lookup rows are
what a real adaptive run would give).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from rich.console import Console
from rich.table import Table

from fractal_llm import paths

from fractal_llm.paper import mlp

from fractal_llm.paper import paper

from fractal_llm.runners import local as runner
from fractal_llm.report.fractal import estimate_dimension, paper_dimension
from fractal_llm.pool import usable_cores
from fractal_llm.records import file_name, read_record
from fractal_llm.refine.levels import RefinePlan, fill, missed_islands, refine
from fractal_llm.sweep import SweepSpec, load_sweep

console = Console(width=170)  # the table is wider than a default 80-column pipe
GOAL_RUNS, GOAL_WRONG, GOAL_DD = 0.35, 0.005, 0.03


def truth_path(name: str, window, res: int, steps: int) -> Path:
    # The paper's frames are ~1e-6 decades wide and nested frames share a centre: the window goes in whole
    tag = hashlib.sha1(repr(tuple(float(v) for v in window)).encode()).hexdigest()[:12]
    return paths.home() / "bench_refine" / f"{name}-{res}-{steps}-{tag}.npz"


def truth_frames(name: str, res: int, steps: int, zoom: int, workers: int) -> list[tuple[tuple, np.ndarray]]:
    """[(window, verdicts (res, res))] for the base frame and `zoom` nested frames, from the cache if there."""
    cfg = paper.CONFIGS[name]
    problem = mlp.problem_of(paper.train_config(cfg, steps))
    frames, window = [], cfg.window
    with mlp.worker_pool(workers) as pool:
        for k in range(zoom + 1):
            path = truth_path(name, window, res, steps)
            if path.exists():
                with np.load(path) as data:
                    verdicts, labels = data["verdicts"], data["labels"]
            else:
                start = time.perf_counter()
                frame = paper.run_frame(cfg, problem, window, res, 0, pool, label=f"{name} frame {k}")
                verdicts, labels = frame.verdicts.astype(str), frame.labels
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(path, verdicts=verdicts, labels=labels, window=np.array(window))
                console.print(f"{name} frame {k}: {res}x{res} truth in {time.perf_counter() - start:.0f} s -> {path}")
            frames.append((tuple(window), verdicts))
            if k < zoom:
                # zoom_window only reads labels and the axes' length
                window = paper.zoom_window(paper.Frame(window, np.zeros(res), np.zeros(res), {}, labels))
                if window is None:
                    console.print(f"[yellow]{name}: frame {k} has no boundary, no more zoom frames[/]")
                    break
    return frames


class Dims(NamedTuple):
    ours: float  # fractal.estimate_dimension: a fit over a window of box sizes it chooses
    paper: float  # fractal.paper_dimension
    error: float  # our estimator's error bar: a dD inside it is the estimator's noise
    slopes: np.ndarray  # local slopes -dlnN/dlns between neighbouring box sizes, before any window is chosen


def dimensions(labels: np.ndarray) -> Dims:
    ours = estimate_dimension(labels)
    return Dims(ours.dimension, paper_dimension(labels).dimension, ours.uncertainty, np.array(ours.local_slopes))


def measure(verdicts: np.ndarray, levels: int, margin: int, full_d: Dims,
            cost: np.ndarray | None = None) -> dict:
    """One table row: refinement "runs" a point by looking its verdict up. cost: seconds per point, if known."""
    truth = verdicts == "trainable"
    plan = RefinePlan(verdicts.shape, levels=levels, margin=margin)
    known = refine(plan, lambda points: {p: str(verdicts[p]) for p in points})
    return compare(truth, plan, known, full_d, cost)


def compare(truth: np.ndarray, plan: RefinePlan, known: dict, full_d: Dims,
            cost: np.ndarray | None = None) -> dict:
    """The refined map of `known` against the full one."""
    levels = plan.levels
    result = fill(plan, known)
    refined = result.float_labels()
    islands = missed_islands(truth, refined)
    spacing = 2 ** levels
    small = [i for i in islands if min(i.bbox[2] - i.bbox[0], i.bbox[3] - i.bbox[1]) + 1 < spacing]
    d = dimensions(refined)
    return {"runs": len(known) / truth.size, "wrong": float(np.mean(~(refined == truth))),
            "missed": len(islands), "missed_small": len(small), "missed_pixels": sum(i.pixels for i in islands),
            "dd_ours": d.ours - full_d.ours, "dd_paper": d.paper - full_d.paper,
            # the box counts themselves: a jump of dD ours with small slope changes is the fit window moving
            "dslope": float(np.max(np.abs(d.slopes - full_d.slopes))) if len(d.slopes) == len(full_d.slopes) else np.nan,
            "cost": None if cost is None else sum(cost[p] for p in known) / cost.sum()}


def goal_met(row: dict) -> bool:
    return (row["runs"] <= GOAL_RUNS and row["wrong"] <= GOAL_WRONG
            and abs(row["dd_ours"]) <= GOAL_DD and abs(row["dd_paper"]) <= GOAL_DD)


def new_table(title: str, with_cost: bool) -> Table:
    table = Table(title=title)
    columns = ["config / frame", "D full (ours±err, paper)", "L", "M", "runs"] + (["cost"] if with_cost else [])
    for col in columns + ["wrong px", "missed (< 2^L)", "dD ours", "dD paper", "max dslope", "goal"]:
        table.add_column(col, justify="left" if col.startswith("config") else "right")
    return table


def add_rows(table: Table, label: str, verdicts: np.ndarray, levels: list[int], margins: list[int],
             cost: np.ndarray | None = None) -> None:
    full_d = dimensions((verdicts == "trainable").astype(float))
    d_text = f"{full_d.ours:.3f}±{full_d.error:.3f}, {full_d.paper:.3f}"
    for lv in levels:
        for m in margins:
            r = measure(verdicts, lv, m, full_d, cost)
            cells = [label, d_text, str(lv), str(m), f"{r['runs']:.1%}"]
            if cost is not None:
                cells.append(f"{r['cost']:.1%}")
            table.add_row(*cells, f"{r['wrong']:.3%}", f"{r['missed']} ({r['missed_small']})",
                          f"{r['dd_ours']:+.3f}", f"{r['dd_paper']:+.3f}", f"{r['dslope']:.3f}",
                          "yes" if goal_met(r) else "no")
            label = d_text = ""
    table.add_section()


# ---------------------------------------------------------------------------------------------- the LLM case

def read_lattice(spec: SweepSpec, out_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(verdicts, runtime_s) of the lattice from a record directory; verdict "" where no record is."""
    names = runner.lattice_names(spec)
    shape = (max(p[0] for p in names) + 1, max(p[1] for p in names) + 1)
    verdicts, runtimes = np.full(shape, "", dtype=object), np.zeros(shape)
    for point, name in names.items():
        path = out_dir / file_name(name)
        if path.exists():
            record = read_record(path)
            verdicts[point], runtimes[point] = record.verdict, record.summary.get("runtime_s") or 0.0
    return verdicts, runtimes


def timed(what: str, call) -> float:
    start = time.perf_counter()
    code = call()
    if code != 0:
        raise SystemExit(f"{what} exited with {code}")
    return time.perf_counter() - start


def llm_case(sweep_file: str, levels: list[int], margins: list[int], run: tuple[int, int] | None,
             workers: int | None) -> None:
    spec = load_sweep(sweep_file)
    root = paths.home() / "bench_refine"
    full_dir = root / f"llm-{spec.name}-full"
    full_wall = timed("the full map", lambda: runner.run_sweep(spec, full_dir, workers=workers, wandb_mode="disabled"))
    verdicts, runtimes = read_lattice(spec, full_dir)
    if (verdicts == "error").any() or (verdicts == "").any():
        raise SystemExit(f"{full_dir}: the full map has errors or holes; rerun to retry them")
    counts = {v: int((verdicts == v).sum()) for v in ("trainable", "not_trainable", "diverged")}
    table = new_table(f"adaptive refinement vs the full map: {spec.name}, {verdicts.shape[0]}x{verdicts.shape[1]} "
                      f"(goal: runs <= {GOAL_RUNS:.0%}, wrong <= {GOAL_WRONG:.1%}, |dD| <= {GOAL_DD})",
                      with_cost=True)
    add_rows(table, spec.name, verdicts, levels, margins, runtimes)
    console.print(table)
    console.print(f"full map: {verdicts.size} points {counts}, {runtimes.sum():.0f} s of summed runtime_s, "
                  f"{full_wall:.0f} s wall in this call (~0 when it was already on disk)", highlight=False)
    if run is None:
        return
    lv, m = run
    plan = RefinePlan(verdicts.shape, levels=lv, margin=m)
    out_dir = root / f"llm-{spec.name}-adaptive-{lv}-{m}"
    wall = timed("the adaptive run", lambda: runner.run_adaptive(spec, out_dir, lv, m, workers=workers,
                                                                    wandb_mode="disabled"))
    ran, ran_time = read_lattice(spec, out_dir)
    known = {(int(a), int(b)): str(ran[a, b]) for a, b in zip(*np.nonzero(ran != ""))}
    same = sum(ran[p] == verdicts[p] for p in known)
    r = compare(verdicts == "trainable", plan, known, dimensions((verdicts == "trainable").astype(float)), runtimes)
    console.print(f"real adaptive run, L={lv} M={m}: {len(known)} of {verdicts.size} points ({r['runs']:.1%}), "
                  f"{same} of them with the full map's verdict; {r['wrong']:.3%} pixels wrong, dD ours "
                  f"{r['dd_ours']:+.3f}, paper {r['dd_paper']:+.3f}; {ran_time.sum():.0f} s summed runtime_s, "
                  f"{wall:.0f} s wall in this call (~0 when it was already on disk)", highlight=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tanh,relu,tanh-one-point")
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--steps", type=int, default=mlp.DEFAULT_STEPS)
    parser.add_argument("--levels", help="levels to try (default 3,4,5,6; --llm: 1,2,3,4)")
    parser.add_argument("--margins", default="0,1,2")
    parser.add_argument("--zoom", type=int, default=0, help="nested zoom frames after the default window")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: one per core)")
    parser.add_argument("--llm", metavar="SWEEP_YAML", help="the LLM case instead: this sweep, full vs adaptive")
    parser.add_argument("--run", metavar="L,M", help="--llm: also run the adaptive path for real at L, M")
    args = parser.parse_args(argv)
    levels = [int(v) for v in (args.levels or ("1,2,3,4" if args.llm else "3,4,5,6")).split(",")]
    margins = [int(v) for v in args.margins.split(",")]
    start = time.perf_counter()
    if args.llm:
        run = tuple(int(v) for v in args.run.split(",")) if args.run else None
        if run is not None and len(run) != 2:
            parser.error(f"--run={args.run!r}: need L,M")
        llm_case(args.llm, levels, margins, run, args.workers or None)
        console.print(f"{time.perf_counter() - start:.0f} s in all")
        return 0
    names = args.configs.split(",")
    for name in names:
        if name not in paper.CONFIGS:
            parser.error(f"--configs: {name!r} is not one of {', '.join(paper.CONFIGS)}")
    for lv in levels:
        RefinePlan((args.res, args.res), levels=lv)  # a bad level fails before any training
    workers = args.workers or usable_cores()

    table = new_table(f"adaptive refinement vs the full map: {args.res}x{args.res}, {args.steps} steps "
                      f"(goal: runs <= {GOAL_RUNS:.0%}, wrong <= {GOAL_WRONG:.1%}, |dD| <= {GOAL_DD})",
                      with_cost=False)
    for name in names:
        for k, (window, verdicts) in enumerate(truth_frames(name, args.res, args.steps, args.zoom, workers)):
            add_rows(table, f"{name} / {k} [{':'.join(f'{v:.3g}' for v in window)}]", verdicts, levels, margins)
    console.print(table)
    console.print(f"{time.perf_counter() - start:.0f} s in all (truth included unless cached)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
