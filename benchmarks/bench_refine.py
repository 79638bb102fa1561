"""Benchmark: what adaptive refinement (fractal_llm.refine) costs in runs and loses in accuracy, on paper-mode
maps whose full truth is known.

    python benchmarks/bench_refine.py [--configs tanh,relu,tanh-one-point] [--res 256] [--steps 500]
                                      [--levels 3,4,5] [--margins 0,1,2] [--zoom 0] [--workers 0]

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
  report's estimator) and the paper's method (fractal.paper_dimension).
The issue's goal, per row: runs <= 35%, wrong <= 0.5%, |dD| <= 0.03 for both estimators.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fractal_llm import mlp, paper, paths
from fractal_llm.fractal import estimate_dimension, paper_dimension
from fractal_llm.refine import RefinePlan, fill, missed_islands, refine

console = Console(width=150)  # the table is wider than a default 80-column pipe
GOAL_RUNS, GOAL_WRONG, GOAL_DD = 0.35, 0.005, 0.03


def truth_path(name: str, window, res: int, steps: int) -> Path:
    tag = "_".join(f"{v:.6g}" for v in window)
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


def dimensions(labels: np.ndarray) -> tuple[float, float, float]:
    """(D ours, D paper method, our error bar): a dD inside the error bar is the estimator's noise."""
    ours = estimate_dimension(labels)
    return ours.dimension, paper_dimension(labels).dimension, ours.uncertainty


def measure(verdicts: np.ndarray, levels: int, margin: int, full_d: tuple[float, float]) -> dict:
    truth = verdicts == "trainable"
    plan = RefinePlan(verdicts.shape, levels=levels, margin=margin)
    known = refine(plan, lambda points: {p: str(verdicts[p]) for p in points})
    result = fill(plan, known)
    refined = result.float_labels()
    islands = missed_islands(truth, refined)
    spacing = 2 ** levels
    small = [i for i in islands if min(i.bbox[2] - i.bbox[0], i.bbox[3] - i.bbox[1]) + 1 < spacing]
    d_ours, d_paper, _ = dimensions(refined)
    return {"runs": len(known) / truth.size, "wrong": float(np.mean(~(refined == truth))),
            "missed": len(islands), "missed_small": len(small), "missed_pixels": sum(i.pixels for i in islands),
            "dd_ours": d_ours - full_d[0], "dd_paper": d_paper - full_d[1]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="tanh,relu,tanh-one-point")
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--steps", type=int, default=mlp.DEFAULT_STEPS)
    parser.add_argument("--levels", default="3,4,5")
    parser.add_argument("--margins", default="0,1,2")
    parser.add_argument("--zoom", type=int, default=0, help="nested zoom frames after the default window")
    parser.add_argument("--workers", type=int, default=0, help="truth worker processes (0: one per core)")
    args = parser.parse_args(argv)
    names = args.configs.split(",")
    for name in names:
        if name not in paper.CONFIGS:
            parser.error(f"--configs: {name!r} is not one of {', '.join(paper.CONFIGS)}")
    levels = [int(v) for v in args.levels.split(",")]
    margins = [int(v) for v in args.margins.split(",")]
    for lv in levels:
        RefinePlan((args.res, args.res), levels=lv)  # a bad level fails before any training
    workers = args.workers or torch.get_num_threads()

    table = Table(title=f"adaptive refinement vs the full map: {args.res}x{args.res}, {args.steps} steps "
                        f"(goal: runs <= {GOAL_RUNS:.0%}, wrong <= {GOAL_WRONG:.1%}, |dD| <= {GOAL_DD})")
    for col in ("config / frame", "D full (ours±err, paper)", "L", "M", "runs", "wrong px", "missed (< 2^L)",
                "dD ours", "dD paper", "goal"):
        table.add_column(col, justify="left" if col.startswith("config") else "right")
    start = time.perf_counter()
    for name in names:
        for k, (window, verdicts) in enumerate(truth_frames(name, args.res, args.steps, args.zoom, workers)):
            full_d = dimensions((verdicts == "trainable").astype(float))
            label = f"{name} / {k} [{':'.join(f'{v:.3g}' for v in window)}]"
            d_text = f"{full_d[0]:.3f}±{full_d[2]:.3f}, {full_d[1]:.3f}"
            for lv in levels:
                for m in margins:
                    r = measure(verdicts, lv, m, full_d)
                    ok = (r["runs"] <= GOAL_RUNS and r["wrong"] <= GOAL_WRONG
                          and abs(r["dd_ours"]) <= GOAL_DD and abs(r["dd_paper"]) <= GOAL_DD)
                    table.add_row(label, d_text, str(lv), str(m), f"{r['runs']:.1%}",
                                  f"{r['wrong']:.3%}", f"{r['missed']} ({r['missed_small']})",
                                  f"{r['dd_ours']:+.3f}", f"{r['dd_paper']:+.3f}", "yes" if ok else "no")
                    label = d_text = ""
            table.add_section()
    console.print(table)
    console.print(f"{time.perf_counter() - start:.0f} s in all (truth included unless cached)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
