"""CPU threads that do not fight: seconds per point of the embedded default, alone and beside a busy process.

    python benchmarks/bench_threads.py [--points 12]

Times the first N points of sweeps/smoke.yaml (W&B disabled, model and data loaded before timing) in a fresh
process with torch's default threads or with one, alone and beside one busy process that trains the same
points in a loop with the same thread setting; then `fractal-llm local` on 2N points with the runner's CPU
splits (1 worker x all cores, one worker per core x 1 thread). Run it on an idle machine: it is the
measurement behind runner.cpu_workers and agents.threads_per_agent.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from fractal_llm.pool import usable_cores

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "sweeps" / "smoke.yaml"

TIME_POINTS = """
import sys, time, torch
threads, n, loop = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "loop"
if threads > 0:
    torch.set_num_threads(threads)
from fractal_llm.config import TrainConfig
from fractal_llm.pool import usable_cores
from fractal_llm.sweep import expand_grid, load_sweep
from fractal_llm.train import train
points = expand_grid(load_sweep(sys.argv[4]))[:n]
train(TrainConfig(**points[0]))  # load the base model and the data outside the timing
while True:
    start = time.perf_counter()
    for p in points:
        train(TrainConfig(**p))
    if not loop:
        print((time.perf_counter() - start) / n, flush=True)
        break
"""


def seconds_per_point(threads: int, n: int, beside_busy: bool) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled"}
    busy = None
    if beside_busy:
        busy = subprocess.Popen([sys.executable, "-c", TIME_POINTS, str(threads), str(n), "loop", str(SMOKE)],
                                env=env, stdout=subprocess.DEVNULL)
        time.sleep(8)  # past its start-up: busy training
    try:
        out = subprocess.run([sys.executable, "-c", TIME_POINTS, str(threads), str(n), "once", str(SMOKE)],
                             env=env, capture_output=True, text=True, check=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    return float(out.stdout.strip().splitlines()[-1])


def runner_seconds_per_point(workers: int, n: int) -> float:
    cfg = yaml.safe_load(SMOKE.read_text())
    for axis in ("matrix_lr", "unembedding_lr"):
        values = cfg["parameters"][axis]["values"]
        cfg["parameters"][axis]["values"] = values[: max(2, int(round((2 * n) ** 0.5)))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(yaml.safe_dump(cfg))
        points = len(cfg["parameters"]["matrix_lr"]["values"]) * len(cfg["parameters"]["unembedding_lr"]["values"])
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fractal_llm", "local", str(path), "--out", f"{tmp}/out",
                        "--workers", str(workers), "--wandb", "disabled"], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
        return (time.perf_counter() - start) / points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=12)
    args = parser.parse_args()
    cores = usable_cores()
    table = Table(title=f"seconds per point, first {args.points} points of sweeps/smoke.yaml, {cores} cores")
    for column in ("torch threads", "alone", "beside one busy process", "slow-down"):
        table.add_column(column, justify="right")
    for threads, label in ((0, f"default ({cores})"), (1, "1")):
        alone = seconds_per_point(threads, args.points, beside_busy=False)
        busy = seconds_per_point(threads, args.points, beside_busy=True)
        table.add_row(label, f"{alone:.2f}", f"{busy:.2f}", f"{busy / alone:.1f}x")
    Console().print(table)
    runs = Table(title=f"`fractal-llm local`, ~{2 * args.points} points (start-up included)")
    for column in ("workers x threads", "s per point"):
        runs.add_column(column, justify="right")
    for workers in sorted({1, cores}):
        runs.add_row(f"{workers} x {max(1, cores // workers)}", f"{runner_seconds_per_point(workers, args.points):.2f}")
    Console().print(runs)


if __name__ == "__main__":
    main()
