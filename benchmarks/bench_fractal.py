"""Time fractal_llm.report.fractal.estimate_dimension on square label images (target: 4096^2 in <= 2 s).

Run (repo root; PYTHONPATH=. until the package is installed): python benchmarks/bench_fractal.py [--sizes 1024 2048 4096] [--repeats 3]
The image is a disk with a noisy (random-walk) radius, so the boundary is long and irregular;
rendering it is not timed. Each figure is the best of `repeats` runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from rich.console import Console
from rich.table import Table

from fractal_llm.report.fractal import estimate_dimension, paper_dimension


def rough_disk(n: int, seed: int = 0) -> np.ndarray:
    """Disk whose radius wanders with angle: a realistic, non-trivial boundary."""
    rng = np.random.default_rng(seed)
    wobble = np.cumsum(rng.normal(size=4096)) * 0.004
    wobble -= np.linspace(0.0, wobble[-1], wobble.size)   # close the loop
    y, x = np.mgrid[0:n, 0:n] + 0.5
    angle = np.arctan2(y - n / 2, x - n / 2)
    radius = 0.35 * n * (1 + wobble[((angle + np.pi) / (2 * np.pi) * 4095).astype(int)])
    return (np.hypot(x - n / 2, y - n / 2) < radius).astype(float)


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    table = Table(title="estimate_dimension timing (best of %d)" % args.repeats)
    for column in ("size", "seconds", "paper s", "edge px", "D", "unc", "fit"):
        table.add_column(column, justify="right")
    for n in args.sizes:
        labels = rough_disk(n)
        seconds = best_time(lambda: estimate_dimension(labels), args.repeats)
        paper_seconds = best_time(lambda: paper_dimension(labels), args.repeats)
        est = estimate_dimension(labels)
        table.add_row(f"{n}x{n}", f"{seconds:.3f}", f"{paper_seconds:.3f}", str(est.n_edge_pixels),
                      f"{est.dimension:.3f}", f"{est.uncertainty:.3f}", f"{est.fit_range[0]}..{est.fit_range[1]}")
    Console().print(table)


if __name__ == "__main__":
    main()
