"""The transect estimator (fractal_llm/report/transect.py) on lines of known dimension, at a ladder's 512 points.

    python scripts/calibrate_transect.py [--points 512] [--seeds 16]

Weierstrass-type functions of Hölder exponent H (each seed a random stretch of a quarter period and a random
phase): the level set at their median has dimension 1 - H, the structure exponent is H. Prints a markdown
table (docs/results.md, "Calibration"): D_line mean ± sd over seeds, how many 95% intervals cover the true
value, and the roughness exponent; then a sine (smooth) and coin flips (noise).
"""

import argparse

import numpy as np

from fractal_llm.report.transect import analyse_line

HURSTS = (0.3, 0.5, 0.7, 0.9)


def weierstrass(x: np.ndarray, hurst: float, phase: float, base: float = 2.0, terms: int = 40) -> np.ndarray:
    return sum(base ** (-hurst * k) * np.cos(base ** k * np.pi * x + k + phase) for k in range(terms))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=512)
    p.add_argument("--seeds", type=int, default=16)
    args = p.parse_args()
    n = args.points
    print("| line | true D_line | D_line (mean ± sd) | intervals that cover it | true exponent | exponent |")
    print("|---|---:|---:|---:|---:|---:|")
    for hurst in HURSTS:
        dims, exps, cover = [], [], 0
        for seed in range(args.seeds):
            rng = np.random.default_rng(seed)
            x = rng.uniform(0, 1) + np.linspace(0, 0.25, n)
            w = weierstrass(x, hurst, rng.uniform(0, 2 * np.pi))
            s = analyse_line(w < np.median(w), w, step=1 / n)
            dims.append(s.line_dimension)
            exps.append(s.roughness_exponent)
            cover += s.interval[0] <= 1 - hurst <= s.interval[1]
        print(f"| Weierstrass H = {hurst} | {1 - hurst:.2f} | {np.mean(dims):.2f} ± {np.std(dims):.2f} | "
              f"{cover} of {args.seeds} | {hurst:.2f} | {np.mean(exps):.2f} ± {np.std(exps):.2f} |")
    x = np.linspace(0, 1, n)
    r = 1 + 0.3 * np.sin(2 * np.pi * 3 * x)
    s = analyse_line(r < 1, r, step=1 / n)
    print(f"| sine (smooth) | 0 | {s.line_dimension:.2f} | | 1 | {s.roughness_exponent:.2f} |")
    rng = np.random.default_rng(0)
    noise = [analyse_line(rng.random(n) < 0.5, rng.random(n), step=1 / n) for _ in range(args.seeds)]
    print(f"| coin flips (noise) | 1 | {np.mean([s.line_dimension for s in noise]):.2f} ± "
          f"{np.std([s.line_dimension for s in noise]):.2f} | | 0 | "
          f"{np.mean([s.roughness_exponent for s in noise]):.2f} |")


if __name__ == "__main__":
    main()
