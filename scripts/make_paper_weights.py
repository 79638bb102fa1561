"""Write fractal_llm/paper/weights/notebook_width16.npz: the paper notebook's W0, W1, X, Y, drawn with JAX.

    python scripts/make_paper_weights.py [--check-only]      # needs jax: pip install "jax==0.4.23" "jaxlib==0.4.23"

The notebook (width 16, one target) draws, with jax_enable_x64 and the pre-0.5 threefry key derivation:
    rng = PRNGKey(0); rng, srng = split(rng); W0, W1 = normal(k, (16, 16)), normal(k', (16, 1)) for
    k, k' = split(srng, 2); rng, srng = split(rng); X = normal(srng, (N, 16)); rng, srng = split(rng);
    Y = normal(srng, (N, 1))
with N = 272 (parameters: tanh, relu), 16 (width: linear) or 1 (one data point). X and Y depend on N (they
are not prefixes of one another), so all three are stored. Arrays keep the notebook's layout; mlp.py maps
them (w0 = W0^T, w1 = W1^T, y = Y[:, 0]).

The minibatch indices are not stored: fractal_llm/paper/threefry.py recomputes them for any step count. This
script checks that module against jax.random bit for bit (keys and indices, several step counts and sizes)
before writing anything, and checks the written file against a fresh JAX draw.

The shipped file was drawn with JAX 0.4.23 (the notebook's time). JAX's normal sampler has changed in the
last ulp since: JAX 0.10.2 gives the same W0, W1, Y and 16/1-example X, but one of the 4352 entries of the
272-example X differs by one ulp (`--check-only` under 0.10.2 reports exactly that). The keys and the
minibatch indices are the same under both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "fractal_llm" / "paper_weights" / "notebook_width16.npz"
WIDTH = 16
DATASET_SIZES = (272, 16, 1)


def jax_module():
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_threefry_partitionable", False)  # the derivation JAX used before 0.5
    return jax


def notebook_draws(jax, size: int) -> dict[str, np.ndarray]:
    rng = jax.random.PRNGKey(0)
    rng, srng = jax.random.split(rng)
    k0, k1 = jax.random.split(srng, 2)
    w0 = jax.random.normal(k0, (WIDTH, WIDTH))
    w1 = jax.random.normal(k1, (WIDTH, 1))
    rng, srng = jax.random.split(rng)
    x = jax.random.normal(srng, (size, WIDTH))
    rng, srng = jax.random.split(rng)
    y = jax.random.normal(srng, (size, 1))
    return {"W0": np.asarray(w0), "W1": np.asarray(w1), "X": np.asarray(x), "Y": np.asarray(y)}


def check_threefry(jax) -> None:
    from fractal_llm.paper import threefry

    for steps in (1, 2, 7, 10, 100, 500, 1000):
        keys = jax.random.split(jax.random.PRNGKey(42), steps)
        ours = threefry.split(threefry.prng_key(42), steps)
        assert np.array_equal(np.asarray(jax.random.key_data(keys)), ours), f"split of PRNGKey(42) into {steps}"
        for size in (272, 16, 1):
            want = np.stack([np.asarray(jax.random.randint(k, (16,), 0, size)) for k in keys])
            got = threefry.notebook_minibatch_indices(steps, 16, size)
            assert want.dtype == np.int64 and np.array_equal(want, got), f"indices: {steps} steps, N={size}"
    print("threefry.py matches jax.random bit for bit (split, randint; 7 step counts x 3 sizes)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check-only", action="store_true", help="compare the shipped file with JAX, write nothing")
    args = parser.parse_args()
    jax = jax_module()
    check_threefry(jax)
    arrays = {}
    for size in DATASET_SIZES:
        draws = notebook_draws(jax, size)
        for name in ("W0", "W1"):
            if name in arrays:
                assert np.array_equal(arrays[name], draws[name])  # the weights do not depend on N
            arrays[name] = draws[name]
        arrays[f"X_{size}"], arrays[f"Y_{size}"] = draws["X"], draws["Y"]
    if not args.check_only:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        np.savez(OUT, jax_version=np.array(jax.__version__), **arrays)
        print(f"wrote {OUT.relative_to(ROOT)} ({OUT.stat().st_size} bytes, jax {jax.__version__})")
    differ = 0
    with np.load(OUT) as shipped:
        made_with = str(shipped["jax_version"])
        for name, value in arrays.items():
            bad = shipped[name] != value
            if bad.any():
                ulps = np.abs(shipped[name].view(np.int64) - value.view(np.int64))[bad]
                print(f"{name}: {int(bad.sum())} of {bad.size} entries differ (at most {int(ulps.max())} ulp)")
                differ += 1
    if differ:
        print(f"{OUT.relative_to(ROOT)} (jax {made_with}) differs from this draw (jax {jax.__version__})")
        return 1
    print(f"{OUT.relative_to(ROOT)} (jax {made_with}) equals this JAX draw ({', '.join(arrays)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
