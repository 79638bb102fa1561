"""An independent JAX re-implementation of the paper notebook's computation, to hold `fractal-llm paper` to it.

    python scripts/paper_reference_jax.py CONFIG [--frames A:B] [--res 128] [--steps 500] [--json FILE]
    # needs jax (the venv of scripts/make_paper_weights.py) and numpy; nothing from fractal_llm

It follows the notebook step by step, in JAX, without the tool's code: the same PRNG draws (PRNGKey(0) split
as the notebook does, x64, pre-0.5 threefry), the mean-field network written as the notebook writes it
(X @ W / sqrt(fan_in), tanh(sqrt(2) z) or sqrt(2) relu(z)), jax.value_and_grad of the MSE, one vmapped GD
step per learning-rate pair, the minibatch indices from split(PRNGKey(42), steps), the convergence measure
(mean of the last 20 loss ratios < 1 -> -sum, else sum of inverses), edges as sign changes of that measure
over 2x2 blocks, porespy's box count (10 log-spaced sizes from 10, boxes that hold some but not only edge
pixels, -gradient of log N over log s), and one median over every frame's slopes. Frames are the zoom-out
sequence of the notebook (centre fixed, each frame twice as wide as the next, the widest >= 6 decades).

Prints per frame the trainable count (measure < 0) and D, then the pooled D; --json writes them.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_threefry_partitionable", False)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# (centre log10 x = input LR or offset, centre log10 y = output LR or LR, tile width, tile frame,
#  nonlinearity, dataset: 'params' | 'width' | 'one', minibatch, phase space)
CONFIGS = {
    "linear": (2.2787786522, 0.6791983840, 4.023e-6, 21, "identity", "width", None, "lr_vs_lr"),
    "relu": (-0.2383546474, 1.9108561363, 2.145e-6, 22, "relu", "params", None, "lr_vs_lr"),
    "tanh-one-point": (1.6839376040, 1.2602310346, 3.696e-6, 21, "tanh", "one", None, "lr_vs_lr"),
    "tanh-minibatch": (-0.5728404884, 2.2412214093, 5.058e-12, 41, "tanh", "params", 16, "lr_vs_lr"),
    "tanh": (1.1238442669, 2.3018075671, 7.749e-7, 23, "tanh", "params", None, "lr_vs_lr"),
    "init-offset": (-0.7076069516, 1.5913480399, 6.291e-10, 34, "tanh", "params", None, "paraminit_vs_lr"),
}
WIDTH = 16


def frame_bounds(cx: float, cy: float, tile_width: float, tile: int, frame: int) -> list[float]:
    """The notebook's mnmx = [y0, y1, x0, x1] of frame `frame`: the zoom-out of the tile frame by 2^(tile-frame)."""
    scale = 2.0 ** (tile - frame)
    return [cy - scale * tile_width / 2.0, cy + scale * tile_width / 2.0,
            cx - scale * tile_width / 2.0, cx + scale * tile_width / 2.0]


def make_problem(nonlinearity: str, dataset: str, minibatch, phase_space: str):
    def net(theta, x):
        z = None
        for w in theta:
            z = jnp.dot(x, w) / jnp.sqrt(w.shape[0])
            if nonlinearity == "tanh":
                x = jax.nn.tanh(z * jnp.sqrt(2))
            elif nonlinearity == "relu":
                x = jax.nn.relu(z) * jnp.sqrt(2)
            else:
                x = z
        return z / jnp.sqrt(w.shape[0])

    def loss(theta, x, y):
        return jnp.mean((net(theta, x) - y) ** 2)

    def train_step(key, theta, hparams, x, y):
        if phase_space == "lr_vs_lr":
            rates = [hparams[0], hparams[1]]
        else:  # the offset joins W0 inside the step and stays in the returned parameters
            theta = [theta[0] + hparams[0], theta[1]]
            rates = [hparams[1], hparams[1]]
        if minibatch is None:
            value, grad = jax.value_and_grad(loss)(theta, x, y)
        else:
            idx = jax.random.randint(key, (minibatch,), 0, x.shape[0])
            value = loss(theta, x, y)
            grad = jax.grad(loss)(theta, x[idx], y[idx])
        return [t - r * g for t, g, r in zip(theta, grad, rates)], value

    step = jax.jit(jax.vmap(train_step, in_axes=(None, 0, 0, None, None)))

    def measure(v, max_val=1e6):
        # Written as the notebook writes it. JAX multiplies by a bool array as a select, so v * fin is 0 (not
        # NaN) where the loss is inf or NaN, and a non-finite loss becomes max_val (nan_measure counts misses).
        fin = jnp.isfinite(v)
        v = v * fin + max_val * (1 - fin)
        v = v / v[0]
        exceeds = v > max_val
        v = v * (1 - exceeds) + max_val * exceeds
        converged = jnp.mean(v[-20:]) < 1
        return jnp.where(converged, -jnp.sum(v), jnp.sum(1 / v))

    measure_all = jax.jit(jax.vmap(measure))

    def draws():
        rng = jax.random.PRNGKey(0)
        rng, srng = jax.random.split(rng)
        keys = jax.random.split(srng, 2)
        theta = [jax.random.normal(keys[0], (WIDTH, WIDTH)), jax.random.normal(keys[1], (WIDTH, 1))]
        n_params = WIDTH * WIDTH + WIDTH
        size = {"params": n_params, "width": WIDTH, "one": 1}[dataset]
        rng, srng = jax.random.split(rng)
        x = jax.random.normal(srng, (size, WIDTH))
        rng, srng = jax.random.split(rng)
        y = jax.random.normal(srng, (size, 1))
        return theta, x, y

    def image(mnmx, res: int, steps: int, batch: int = 65536) -> np.ndarray:
        theta, x, y = draws()
        g1 = jnp.logspace(mnmx[0], mnmx[1], res)  # rows: output LR (or LR)
        g2 = jnp.logspace(mnmx[2], mnmx[3], res)  # columns: input LR (or offset)
        lr0, lr1 = jnp.meshgrid(g2, g1)
        hp = jnp.stack([lr0.ravel(), lr1.ravel()], axis=-1)
        keys = jax.random.split(jax.random.PRNGKey(42), steps)
        out = []
        for lo in range(0, hp.shape[0], batch):
            part = hp[lo:lo + batch]
            th = [jnp.tile(t, (part.shape[0], 1, 1)) for t in theta]
            losses = []
            for k in keys:
                th, value = step(k, th, part, x, y)
                losses.append(value)
            out.append(np.asarray(measure_all(jnp.stack(losses, axis=-1))))
        return np.concatenate(out).reshape(res, res)

    return image


def edges_of(v: np.ndarray) -> np.ndarray:
    blocks = np.stack((v[1:, 1:], v[:-1, 1:], v[1:, :-1], v[:-1, :-1]), axis=-1)
    return np.sign(blocks.max(axis=-1) * blocks.min(axis=-1)) < 0


def boxcount_slopes(edges: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """porespy.metrics.boxcount's recipe, box by box."""
    sizes = np.unique(np.logspace(1, np.log10(min(edges.shape)), bins).astype(int))
    counts = []
    for d in sizes:
        n = 0
        for i in range(0, edges.shape[0], d):
            for j in range(0, edges.shape[1], d):
                box = edges[i:i + d, j:j + d]
                n += int(np.any(box)) - int(np.all(box))
        counts.append(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        slopes = -np.gradient(np.log(np.array(counts, dtype=float)), np.log(sizes))
    return sizes, np.array(counts), slopes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", choices=sorted(CONFIGS))
    parser.add_argument("--frames", default=None, help="A:B (default: the tile frame)")
    parser.add_argument("--res", type=int, default=128)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    cx, cy, tile_width, tile, *problem = CONFIGS[args.config]
    a, b = (tile, tile) if args.frames is None else (int(v) for v in args.frames.split(":"))
    image = make_problem(*problem)
    rows, all_slopes = [], []
    for k in range(a, b + 1):
        start = time.perf_counter()
        mnmx = frame_bounds(cx, cy, tile_width, tile, k)
        v = image(mnmx, args.res, args.steps)
        sizes, counts, slopes = boxcount_slopes(edges_of(v))
        all_slopes.append(slopes)
        row = {"frame": k, "mnmx": mnmx, "trainable": int(np.count_nonzero(v < 0)),
               "nan_measure": int(np.count_nonzero(np.isnan(v))),
               "paper_dimension": float(np.median(slopes)), "box_sizes": sizes.tolist(),
               "counts": counts.tolist(), "slopes": slopes.tolist(), "seconds": time.perf_counter() - start}
        rows.append(row)
        print(f"frame {k}: trainable {row['trainable']} / {args.res ** 2}, NaN {row['nan_measure']}, D {row['paper_dimension']:.6f} "
              f"({row['seconds']:.1f} s)", flush=True)
    pooled = float(np.median(np.concatenate(all_slopes)))
    print(f"{args.config}: pooled D over frames {a}..{b} = {pooled:.6f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "res": args.res, "steps": args.steps, "jax": jax.__version__,
                       "frames": rows, "pooled_paper_dimension": pooled}, f, indent=1)
    return 0 if all(math.isfinite(r["paper_dimension"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
