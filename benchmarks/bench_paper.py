"""Benchmark: the paper's tanh full-batch grid (default 256x256 x 500 steps) against this machine's FLOP floor.

    python benchmarks/bench_paper.py [--res 256] [--steps 500] [--chunk 0] [--workers 0] [--device cpu|cuda]

The grid runs as `fractal-llm paper` runs it: mlp.train_grid over --workers single-threaded processes
(default: one per core), or with --device cuda in this process on the card, in float64, in chunks that
fill half its free memory (mlp.cuda_chunk_size). The wall time counts everything from starting the worker
processes (or the first chunk) to the last summary.

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
thread count as there are workers; on CUDA an 8192^3 one): the time the work would take if every FLOP ran at
peak matmul speed. On a card the step is bound by memory traffic rather than FLOPs (each point's 16 x 272
pre-activations pass through memory about six times a step), so expect a larger ratio there.
Points that diverge stop early, so fewer point-steps run than planned (the table shows both); the floor counts
every planned step.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fractal_llm.paper import mlp
from fractal_llm.config import TrainConfig

console = Console()


def flops_per_point_step(n: int, size: int) -> int:
    d = n
    return (2 * size * n * d + 2 * size * n + size * n + 3 * size + 2 * size * n + 3 * size * n
            + 2 * size * n * d + n * d + 2 * (n * d + n))


def matmul_gflops(dim: int = 2048, reps: int = 5, device: str = "cpu") -> float:
    a = torch.randn(dim, dim, dtype=torch.float64, device=device)
    b = torch.randn(dim, dim, dtype=torch.float64, device=device)
    torch.matmul(a, b)
    sync(device)
    best = float("inf")
    for _ in range(reps):  # best of reps: the machine's rate, not its noise
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * dim ** 3 / best / 1e9


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--chunk", type=int, default=0, help="points per task (0: automatic)")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0: one per core; CPU only)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device=cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)")
    cuda = args.device == "cuda"
    workers = 1 if cuda else args.workers or torch.get_num_threads()
    torch.set_num_threads(workers)  # the floor's matmul uses as many cores as the workers
    problem = mlp.problem_of(TrainConfig(model_family="mlp", nonlinearity="tanh", num_iterations=args.steps))
    problem = replace(problem, device=args.device)
    gflops = matmul_gflops(8192, device="cuda") if cuda else matmul_gflops()
    xs = np.logspace(0.0, 4.0, args.res)
    ys = np.logspace(1.5, 3.0, args.res)  # the default tanh window: about half the points diverge
    xx, yy = np.meshgrid(xs, ys)
    points = xx.size
    chunk = args.chunk or (mlp.cuda_chunk_size(problem, points) if cuda else mlp.grid_chunk_size(points))
    start = time.perf_counter()
    with mlp.worker_pool(workers) as pool:
        summary = mlp.train_grid(problem, xx.ravel(), yy.ravel(), np.zeros(xx.size), chunk_size=chunk,
                                 pool=pool)
    sync(args.device)
    wall = time.perf_counter() - start
    steps_run = int(summary["steps"].sum())  # diverged chunks stop early; count the steps actually run
    total_flops = flops_per_point_step(problem.width, problem.dataset_size) * points * args.steps
    floor = total_flops / (gflops * 1e9)
    where = torch.cuda.get_device_name() if cuda else f"{workers} worker(s)"
    table = Table(title=f"paper tanh full batch: {args.res}x{args.res} points x {args.steps} steps, "
                        f"{where}, chunk {chunk}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    rows = [
        ("FLOPs per point-step", f"{flops_per_point_step(problem.width, problem.dataset_size):,}"),
        ("total FLOPs (all points x all planned steps)", f"{total_flops:.3e}"),
        (f"float64 matmul rate ({8192 if cuda else 2048}^3, {args.device})", f"{gflops:.1f} GFLOP/s"),
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
