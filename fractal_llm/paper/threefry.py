"""The paper notebook's minibatch index stream, in numpy: JAX's threefry PRNG as JAX used it before 0.5.

The notebook draws its minibatch indices with `jax.random.split(PRNGKey(42), steps)` and one
`jax.random.randint(key, (16,), 0, N)` per step (64-bit integers, as under jax_enable_x64). Shipping the
indices would tie them to a few step counts (the split depends on the step count), so this module
recomputes them from the Threefry-2x32 counter-based generator (20 rounds) and JAX's non-partitionable key
derivation (`jax_threefry_partitionable=False`, the default before JAX 0.5). Only what the index stream needs
is here: seeding, split, random bits and randint. scripts/make_paper_weights.py checks the output against
JAX bit for bit; tests/test_paper.py holds the first ten steps as JAX gave them.
"""

from __future__ import annotations

import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # Threefry-2x32 rotation constants, alternating groups
_PARITY = np.uint32(0x1BD11BDA)  # the key-schedule constant


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry_2x32(key: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """JAX's threefry_2x32(key, counts): the flat uint32 counts are split in two halves (padded with one zero
    when odd), encrypted as pairs (first half, second half), and the two output halves concatenated."""
    counts = np.asarray(counts, dtype=np.uint32).ravel()
    odd = counts.size % 2
    if odd:
        counts = np.concatenate([counts, np.zeros(1, np.uint32)])
    x0, x1 = (half.copy() for half in np.split(counts, 2))
    k0, k1 = (np.uint32(k) for k in np.asarray(key, dtype=np.uint32))
    schedule = (k0, k1, k0 ^ k1 ^ _PARITY)
    with np.errstate(over="ignore"):
        x0 += schedule[0]
        x1 += schedule[1]
        for group in range(1, 6):  # 5 groups of 4 rounds, a key injection after each
            for r in _ROTATIONS[(group - 1) % 2]:
                x0 += x1
                x1 = _rotl(x1, r)
                x1 ^= x0
            x0 += schedule[group % 3]
            x1 += schedule[(group + 1) % 3] + np.uint32(group)
    out = np.concatenate([x0, x1])
    return out[:-1] if odd else out


def prng_key(seed: int) -> np.ndarray:
    """PRNGKey(seed) for a 64-bit seed: (high 32 bits, low 32 bits)."""
    seed = int(seed) % 2 ** 64
    return np.array([seed >> 32, seed & 0xFFFFFFFF], dtype=np.uint32)


def split(key: np.ndarray, num: int) -> np.ndarray:
    """jax.random.split(key, num): (num, 2) uint32 keys."""
    return threefry_2x32(key, np.arange(2 * num, dtype=np.uint32)).reshape(num, 2)


def random_bits64(key: np.ndarray, size: int) -> np.ndarray:
    """size uint64 words: 2 * size threefry words, the first half the high 32 bits, the second the low."""
    words = threefry_2x32(key, np.arange(2 * size, dtype=np.uint32)).astype(np.uint64)
    return (words[:size] << np.uint64(32)) | words[size:]


def randint(key: np.ndarray, size: int, minval: int, maxval: int) -> np.ndarray:
    """jax.random.randint(key, (size,), minval, maxval) with 64-bit integers (maxval > minval).

    JAX draws two 64-bit words per value from the two halves of split(key) and combines them modulo the
    span, (hi mod span) * (2^64 mod span) + (lo mod span), all in wrapping uint64 arithmetic.
    """
    if maxval <= minval:
        raise ValueError(f"randint: maxval={maxval} must be > minval={minval}")
    k1, k2 = split(key, 2)
    hi, lo = random_bits64(k1, size), random_bits64(k2, size)
    span = np.uint64(maxval - minval)
    multiplier = np.uint64(2 ** 32) % span
    with np.errstate(over="ignore"):
        multiplier = (multiplier * multiplier) % span
        offset = ((hi % span) * multiplier + lo % span) % span
    return offset.astype(np.int64) + np.int64(minval)


def notebook_minibatch_indices(steps: int, batch_size: int, dataset_size: int, seed: int = 42) -> np.ndarray:
    """(steps, batch_size) indices: step t uses randint(split(PRNGKey(seed), steps)[t], (batch_size,), 0, N)."""
    keys = split(prng_key(seed), steps)
    return np.stack([randint(k, batch_size, 0, dataset_size) for k in keys])
