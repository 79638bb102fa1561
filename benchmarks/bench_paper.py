"""Benchmark: the paper's tanh full-batch grid (default 256x256 x 500 steps) against this machine's FLOP floor.

    python benchmarks/bench_paper.py [--res 256] [--steps 500] [--chunk 0] [--workers 0]

The grid runs as `fractal-llm paper` runs it: mlp.train_grid over --workers single-threaded processes
(default: one per core). The wall time counts everything from starting the worker processes to the last
summary.

FLOPs are counted per point per step from the ops the batched core runs (N examples, width n, input d = n):
  forward  X W0^T            2 N n d      (matmul)
  output   W1 h              2 N n        (batched matmul)
  tanh                       N n          (counted as 1 FLOP each: a generous floor, tanh costs far more)
  residual, square, sum      3 N
  dL/dW1                     2 N n
  dL/dA = (1 - h^2) * r      3 N n
  dL/dW0 = dA X              2 N n d      (matmul)
  W1 row scale of dL/dW0     n d
  updates (scale + subtract) 2 (n d + n)
The FLOP floor is that count divided by the float64 matmul rate measured here (a 2048^3 torch.matmul with the
thread count as there are workers): the time the work would take if every FLOP ran at peak matmul speed.
Points that diverge stop early, so fewer point-steps run than planned (the table shows both); the floor counts
every planned step.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fractal_llm import mlp
from fractal_llm.config import TrainConfig

console = Console()


def flops_per_point_step(n: int, size: int) -> int:
    d = n
    return (2 * size * n * d + 2 * size * n + size * n + 3 * size + 2 * size * n + 3 * size * n
            + 2 * size * n * d + n * d + 2 * (n * d + n))


def matmul_gflops(dim: int = 2048, reps: int = 5) -> float:
    a = torch.randn(dim, dim, dtype=torch.float64)
    b = torch.randn(dim, dim, dtype=torch.float64)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(reps):  # best of reps: the machine's rate, not its noise
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * dim ** 3 / best / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=0, help="points per task (0: automatic)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: one per core)")
    args = parser.parse_args(argv)
    workers = args.workers or torch.get_num_threads()
    torch.set_num_threads(workers)  # the floor's matmul uses as many cores as the workers
    problem = mlp.problem_of(TrainConfig(model_family="mlp", nonlinearity="tanh", num_iterations=args.steps))
    gflops = matmul_gflops()
    xs = np.logspace(0.0, 4.0, args.res)
    ys = np.logspace(1.5, 3.0, args.res)  # the default tanh window: about half the points diverge
    xx, yy = np.meshgrid(xs, ys)
    points = xx.size
    start = time.perf_counter()
    with mlp.worker_pool(workers) as pool:
        summary = mlp.train_grid(problem, xx.ravel(), yy.ravel(), np.zeros(xx.size), chunk_size=args.chunk,
                                 pool=pool)
    wall = time.perf_counter() - start
    steps_run = int(summary["steps"].sum())  # diverged chunks stop early; count the steps actually run
    total_flops = flops_per_point_step(problem.width, problem.dataset_size) * points * args.steps
    floor = total_flops / (gflops * 1e9)
    table = Table(title=f"paper tanh full batch: {args.res}x{args.res} points x {args.steps} steps, "
                        f"{workers} worker(s), chunk {args.chunk or mlp.grid_chunk_size(points)}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("FLOPs per point-step", f"{flops_per_point_step(problem.width, problem.dataset_size):,}"),
        ("total FLOPs (all points x all planned steps)", f"{total_flops:.3e}"),
        ("float64 matmul rate (2048^3)", f"{gflops:.1f} GFLOP/s"),
        ("FLOP floor", f"{floor:.1f} s"),
        ("wall time", f"{wall:.1f} s"),
        ("wall / floor", f"{wall / floor:.2f}x (target <= 3x)"),
        ("points per second", f"{points / wall:,.0f}"),
        ("point-steps run / planned", f"{steps_run:,} / {points * args.steps:,}"),
        ("wall / floor of the point-steps run", f"{wall / (floor * steps_run / (points * args.steps)):.2f}x"),
        ("achieved GFLOP/s (planned FLOPs / wall)", f"{total_flops / wall / 1e9:.1f}"),
        ("verdicts", ", ".join(f"{k} {int(np.count_nonzero(summary['verdict'] == k))}"
                               for k in ("trainable", "not_trainable", "diverged"))),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
