"""The trainability verdict and Sohl-Dickstein's convergence score (the rules: docs/design.md).

v[0..S-1] is the training loss at each optimizer step, v[0] measured before any update.
- diverged: a loss became non-finite; training stopped there.
- trainable: all steps ran and mean(v[-K:]) / v[0] < threshold, K = min(window, S).
- not_trainable: all steps ran, every loss finite, ratio >= threshold.
- error: an exception that is not divergence (never decided here: the caller records it).

One implementation serves one curve and a batch of curves: summarize_losses is summarize_batch on one row.
"""

from typing import Sequence

import numpy as np

VERDICTS = ("trainable", "not_trainable", "diverged", "error")
# A map's cells: a verdict; "pending", a run still in flight; "missing", a hole: no run, or a run that ended
# without a verdict (crashed, failed, killed, preempted) or whose record file does not parse.
OUTCOMES = (*VERDICTS, "pending", "missing")
PENDING_STATES = ("pending", "running", "preempting")  # W&B run states of a run that may still finish
NOT_TRAINABLE = ("not_trainable", "diverged")  # the class "not trainable" of the boundary
SCORE_CAP = 1e6  # Sohl-Dickstein's cap for normalised losses (and the value given to non-finite ones)


def normalised_batch(v: np.ndarray, steps: np.ndarray, planned_steps: int) -> np.ndarray:
    """u = v / v[:, 0] per row, recorded steps only; non-finite -> cap, clipped to the cap, padded with the
    cap up to planned_steps (a diverged run "stays at the cap" for the steps it never ran)."""
    b, s = v.shape
    u = np.full((b, max(planned_steps, s)), SCORE_CAP)
    v0 = v[:, :1]
    ok0 = np.isfinite(v0) & (v0 != 0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ratio = v / np.where(ok0, v0, 1.0)
    recorded = np.arange(s)[None, :] < steps[:, None]
    # np.where, never a mask multiplied into inf (inf * 0 = NaN).
    body = np.where(np.isfinite(ratio), np.minimum(ratio, SCORE_CAP), SCORE_CAP)
    u[:, :s] = np.where(recorded & ok0, body, SCORE_CAP)
    return u


def scores_batch(u: np.ndarray, trainable: np.ndarray) -> np.ndarray:
    """-sum(u) when trainable, +sum(1/u) otherwise: the sign is the class, the size how fast or how long."""
    with np.errstate(divide="ignore"):
        inverse = np.where(u > 0, 1.0 / np.maximum(u, 1e-300), SCORE_CAP)
    return np.where(trainable, -np.sum(u, axis=1), np.sum(inverse, axis=1))


def summarize_batch(losses: np.ndarray, planned_steps: int, window: int = 20, threshold: float = 1.0) -> dict:
    """Per-curve verdict arrays for a (B, S) loss matrix; a row's entries after its first non-finite loss are
    ignored (that loss is its divergence). Returns numpy arrays: verdict (object), trainable, stable,
    diverged_at_step (-1: none), steps, loss_first, loss_last, loss_mean_last_k, loss_ratio (NaN: undefined),
    score. A row that stops before planned_steps without diverging is refused: that is an error, not a verdict."""
    v = np.asarray(losses, dtype=np.float64)
    b, s = v.shape
    finite = np.isfinite(v)
    any_bad = ~finite.all(axis=1)
    first_bad = np.where(any_bad, np.argmin(finite, axis=1), -1)
    n_finite = np.where(any_bad, first_bad, s)
    steps = np.where(any_bad, first_bad + 1, s)
    if not any_bad.all() and s < planned_steps:
        raise ValueError(f"losses: {s} finite losses for {planned_steps} planned steps; a run that stopped early "
                         "without a non-finite loss is an error, not a verdict")
    rows = np.arange(b)
    has = n_finite > 0
    loss_first = np.where(has, v[:, 0] if s else np.nan, np.nan)
    loss_last = np.where(has, v[rows, np.maximum(n_finite - 1, 0)] if s else np.nan, np.nan)
    mean_k = np.full(b, np.nan)
    with np.errstate(over="ignore"):  # huge finite losses may sum to inf: the ratio is then inf, not trainable
        for length in np.unique(n_finite[has]):
            sel = has & (n_finite == length)
            k = min(window, int(length))
            mean_k[sel] = np.mean(v[sel, length - k:length], axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(has & (loss_first != 0), mean_k / loss_first, np.nan)
    trainable = ~any_bad & np.isfinite(ratio) & (ratio < threshold)
    verdict = np.where(any_bad, "diverged", np.where(trainable, "trainable", "not_trainable")).astype(object)
    score = scores_batch(normalised_batch(v, steps, planned_steps), trainable)
    return {"verdict": verdict, "trainable": trainable, "stable": ~any_bad, "diverged_at_step": first_bad,
            "steps": steps, "loss_first": loss_first, "loss_last": loss_last, "loss_mean_last_k": mean_k,
            "loss_ratio": ratio, "score": score}


def summarize_losses(losses: Sequence[float], planned_steps: int, window: int = 20,
                     threshold: float = 1.0) -> dict:
    """Verdict and loss statistics of one run's recorded losses (stopping at the first non-finite one),
    as plain Python values: None where summarize_batch has NaN or -1."""
    row = summarize_batch(np.asarray([list(losses)], dtype=np.float64).reshape(1, -1), planned_steps, window,
                          threshold)
    out = {key: values[0].item() if hasattr(values[0], "item") else values[0] for key, values in row.items()}
    for key in ("loss_first", "loss_last", "loss_mean_last_k", "loss_ratio"):
        if out[key] != out[key]:  # NaN
            out[key] = None
    if out["diverged_at_step"] < 0:
        out["diverged_at_step"] = None
    return out


def normalised_losses(losses: Sequence[float], planned_steps: int) -> np.ndarray:
    """u of one curve (see normalised_batch)."""
    v = np.asarray([list(losses)], dtype=np.float64).reshape(1, -1)
    return normalised_batch(v, np.array([v.shape[1]]), planned_steps)[0]


def convergence_score(losses: Sequence[float], planned_steps: int, trainable: bool) -> float:
    """The score of one curve (see scores_batch)."""
    return float(scores_batch(normalised_losses(losses, planned_steps)[None, :], np.array([trainable]))[0])


def run_outcome(verdict: str | None, state: str = "") -> str:
    """The cell a run fills: its verdict when it wrote one; without one, "pending" while its state says it is
    in flight (PENDING_STATES), else "missing" (a hole: the state, e.g. crashed, says why)."""
    if verdict is not None:
        return verdict
    return "pending" if state in PENDING_STATES else "missing"


def count_verdicts(verdicts) -> dict:
    """{outcome: count} over OUTCOMES for any array or list of verdict strings; anything else is refused."""
    values = np.asarray(verdicts, dtype=object).ravel()
    counts = {outcome: int(np.count_nonzero(values == outcome)) for outcome in OUTCOMES}
    if sum(counts.values()) != values.size:
        unknown = sorted({str(v) for v in values if v not in OUTCOMES})
        raise ValueError(f"verdicts: {unknown} not allowed; allowed: {OUTCOMES}")
    return counts


def labels_from_verdicts(verdicts) -> np.ndarray:
    """The boundary's two classes: 1.0 trainable, 0.0 not trainable (diverged included), NaN undecided
    (error, pending or missing)."""
    verdicts = np.asarray(verdicts, dtype=object)
    labels = np.full(verdicts.shape, np.nan)
    labels[verdicts == "trainable"] = 1.0
    labels[np.isin(verdicts, NOT_TRAINABLE)] = 0.0
    return labels


def from_trainable(trainable) -> np.ndarray:
    """Verdict strings for a bool map (True: trainable, False: not_trainable), e.g. a hand-made label image."""
    return np.where(np.asarray(trainable, dtype=bool), "trainable", "not_trainable").astype(object)
