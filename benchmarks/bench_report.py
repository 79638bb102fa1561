"""Time the report on a 64x64 (4096-point) local sweep of synthetic records.

    python benchmarks/bench_report.py [--n 64] [--steps 50] [--out DIR]

The records are what a local runner writes (records.write_record; summaries from
verdict.summarize_losses on synthetic loss curves), laid out on a fractal-ish boundary, so reading,
grid building, dimension, zoom and plots all do their real work. Prints a rich table of timings.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fractal_llm.config import TrainConfig
from fractal_llm.report.grid import build_grid, grid_from_arrays
from fractal_llm.verdict import from_trainable
from fractal_llm.records import RunRecord, point_name, write_record
from fractal_llm.report.writer import write_report
from fractal_llm.report.sources import local_source
from fractal_llm.sweep import MODULE_COMMAND, axis_values, dump_sweep_yaml
from fractal_llm.verdict import summarize_losses

X_NAME, Y_NAME = "matrix_lr", "unembedding_lr"


def synthetic_sweep_config(n: int, name: str = "synthetic", x_range=(1e-4, 1.0), y_range=(1e-5, 1e-1)) -> dict:
    return {
        "name": name,
        "method": "grid",
        "metric": {"name": "score", "goal": "minimize"},
        "command": list(MODULE_COMMAND),
        "parameters": {
            "lr_schedule": {"value": "cosine"},
            "num_tokens": {"value": 20000},
            X_NAME: {"values": axis_values(x_range[0], x_range[1], n)},
            Y_NAME: {"values": axis_values(y_range[0], y_range[1], n)},
        },
    }


def boundary_field(u: np.ndarray, v: np.ndarray, octaves: int = 7) -> np.ndarray:
    """Signed distance-like field whose zero set is a rough (Weierstrass-type) curve: > 0 = trainable.
    u, v in [0, 1]; amplitudes fall as 2^(-0.7 k), which gives a wiggly boundary at every scale."""
    wiggle = sum(2 ** (-0.7 * k) * np.sin(2 ** k * 7.0 * v + 1.3 * k) for k in range(octaves))
    return 1.1 - (u + v) - 0.12 * wiggle


def synthetic_losses(margin: float, steps: int, rng: np.random.Generator) -> list[float]:
    """Trainable (margin > 0): decays, slower near the boundary. Else: flat-ish or blows up."""
    t = np.arange(steps)
    if margin > 0:
        losses = 3.0 * np.exp(-t * min(0.1, 0.5 * margin)) + 0.5
    elif margin > -0.1:
        losses = 3.0 * (1 + 0.002 * t)  # stable but not improving
    else:
        blowup = max(2, int(steps * min(1.0, 0.05 / -margin)))
        losses = 3.0 * np.exp(t * 0.5)
        losses[blowup:] = np.inf
        losses = losses[: blowup + 1]
    return (losses * (1 + 0.01 * rng.standard_normal(len(losses)))).tolist()


def make_synthetic_sweep(directory: str | Path, n: int = 64, steps: int = 50, seed: int = 0,
                         name: str = "synthetic", shift: float = 0.0) -> Path:
    """Write DIR/sweep.yaml and n*n records like a local runner would. `shift` moves the boundary
    (a second sweep for comparisons)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = synthetic_sweep_config(n, name)
    (directory / "sweep.yaml").write_text(dump_sweep_yaml(cfg))
    xs, ys = cfg["parameters"][X_NAME]["values"], cfg["parameters"][Y_NAME]["values"]
    fixed = {key: spec["value"] for key, spec in cfg["parameters"].items() if "value" in spec}
    base = TrainConfig(**fixed).resolved().to_dict()
    rng = np.random.default_rng(seed)
    u = (np.log10(xs) - math.log10(xs[0])) / (math.log10(xs[-1]) - math.log10(xs[0]))
    v = (np.log10(ys) - math.log10(ys[0])) / (math.log10(ys[-1]) - math.log10(ys[0]))
    field = boundary_field(u[None, :], v[:, None]) + shift
    now = time.time()
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            losses = synthetic_losses(float(field[i, j]), steps, rng)
            summary = summarize_losses(losses, steps)
            summary.update(tokens_seen=steps * 1000, runtime_s=0.1, error=None)
            config = {**base, X_NAME: x, Y_NAME: y}
            point = {X_NAME: x, Y_NAME: y}
            record = RunRecord(name=point_name(point), config=config, summary=summary,
                               history={"train/loss": losses}, created_at=now)
            write_record(record, directory)
    return directory


def time_array_report(n: int, out_dir: Path) -> float:
    """Seconds for grid_from_arrays + write_report on an n x n label array (no records, no sweep config)."""
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    trainable = boundary_field(u, v) > 0
    scores = np.where(trainable, -100.0 * (1 + u), 50.0 * (1 + v))
    start = time.perf_counter()
    grid = grid_from_arrays("lr_input", "lr_output", np.logspace(-2, 2, n), np.logspace(-2, 2, n), from_trainable(trainable), scores)
    write_report(grid, out_dir, title=f"array {n}x{n}", zoom_k=3)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=64, help="points per axis (default 64: 4096 points)")
    parser.add_argument("--steps", type=int, default=50, help="loss values per synthetic run")
    parser.add_argument("--out", help="report directory (default: a temp dir)")
    parser.add_argument("--array-side", type=int, default=0, metavar="N",
                        help="also time a paper-mode report of an N x N label array (e.g. 1024)")
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        sweep_dir = Path(tmp) / "sweep"
        start = time.perf_counter()
        make_synthetic_sweep(sweep_dir, args.n, args.steps)
        t_write = time.perf_counter() - start

        start = time.perf_counter()
        sweep_config, records = local_source(sweep_dir)
        t_read = time.perf_counter() - start

        start = time.perf_counter()
        grid = build_grid(sweep_config, records)
        t_grid = time.perf_counter() - start

        out_dir = Path(args.out) if args.out else Path(tmp) / "report"
        start = time.perf_counter()
        report = write_report(grid, out_dir, title=f"bench {args.n}x{args.n}", sweep_config=sweep_config)
        t_report = time.perf_counter() - start

        if args.array_side:
            t_array = time_array_report(args.array_side, Path(tmp) / "array")

    timings = {"write records (setup)": t_write, "read records": t_read, "build grid": t_grid,
               "report (total)": t_report, **{f"  report: {k}": v for k, v in report["timing_s"].items()},
               "read + grid + report": t_read + t_grid + t_report}
    if args.array_side:
        timings[f"array report {args.array_side}x{args.array_side} (paper mode)"] = t_array
    table = Table(title=f"bench_report: {args.n}x{args.n} = {args.n ** 2} points, {args.steps} steps per run")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for stage, seconds in timings.items():
        table.add_row(stage, f"{seconds:.3f}")
    fractal = report["fractal"]
    table.add_row("D (synthetic boundary)", f"{fractal['dimension']:.3f} ± {fractal['uncertainty']:.3f}")
    console.print(table)
    return timings


if __name__ == "__main__":
    main(sys.argv[1:])
