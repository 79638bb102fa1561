"""The trainability verdict and Sohl-Dickstein's convergence score (definitions: shared DESIGN.md).

v[0..S-1] is the training loss at each optimizer step, v[0] measured before any update.
- diverged: a loss became non-finite; training stopped there.
- trainable: all steps ran and mean(v[-K:]) / v[0] < threshold, K = min(window, S).
- not_trainable: all steps ran, every loss finite, ratio >= threshold.
- error: an exception that is not divergence (never decided here: the caller records it).
"""

import math
from typing import Sequence

import numpy as np

VERDICTS = ("trainable", "not_trainable", "diverged", "error")
SCORE_CAP = 1e6  # Sohl-Dickstein's cap for normalised losses (and the value given to non-finite ones)


def normalised_losses(losses: Sequence[float], planned_steps: int) -> np.ndarray:
    """u = v / v[0], non-finite -> cap, clipped to the cap, padded with the cap up to planned_steps."""
    v = np.asarray(losses, dtype=np.float64)
    u = np.full(max(planned_steps, len(v)), SCORE_CAP)
    if len(v) == 0 or not np.isfinite(v[0]) or v[0] == 0:
        return u
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ratio = v / v[0]
    # np.where, never a mask multiplied into inf (inf * 0 = NaN).
    u[: len(v)] = np.where(np.isfinite(ratio), np.minimum(ratio, SCORE_CAP), SCORE_CAP)
    return u


def convergence_score(losses: Sequence[float], planned_steps: int, trainable: bool) -> float:
    """-sum(u) when trainable, +sum(1/u) otherwise: the sign is the class, the size how fast or how long."""
    u = normalised_losses(losses, planned_steps)
    if trainable:
        return float(-np.sum(u))
    with np.errstate(divide="ignore"):
        inverse = np.where(u > 0, 1.0 / np.maximum(u, 1e-300), SCORE_CAP)
    return float(np.sum(inverse))


def summarize_losses(losses: Sequence[float], planned_steps: int, window: int = 20,
                     threshold: float = 1.0) -> dict:
    """Verdict and loss statistics for one run's recorded losses (stopping at the first non-finite one)."""
    v = [float(x) for x in losses]
    bad = next((i for i, x in enumerate(v) if not math.isfinite(x)), None)
    finite = v if bad is None else v[:bad]
    diverged = bad is not None
    stable = not diverged and len(v) >= planned_steps and len(v) > 0
    k = min(window, len(finite)) if finite else 0
    loss_first = finite[0] if finite else None
    loss_last = finite[-1] if finite else None
    mean_last_k = float(np.mean(finite[-k:])) if k else None
    ratio = mean_last_k / loss_first if finite and loss_first != 0 else None
    trainable = bool(stable and ratio is not None and ratio < threshold)
    if diverged:
        verdict = "diverged"
    elif not stable:
        raise ValueError(f"losses: {len(v)} finite losses for {planned_steps} planned steps; "
                         "a run that stopped early without a non-finite loss is an error, not a verdict")
    else:
        verdict = "trainable" if trainable else "not_trainable"
    return {
        "verdict": verdict,
        "trainable": trainable,
        "stable": stable,
        "loss_first": loss_first,
        "loss_last": loss_last,
        "loss_mean_last_k": mean_last_k,
        "loss_ratio": ratio,
        "score": convergence_score(v, planned_steps, trainable),
        "diverged_at_step": bad,
        "steps": len(v),
    }
