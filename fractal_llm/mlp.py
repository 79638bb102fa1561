"""Sohl-Dickstein 2024's two-layer network, trained for many grid points at once.

Network (mean-field, no biases, input dimension = width n):
    y_hat = (1/n) * W1 @ phi(W0 @ x / sqrt(n)),   W0: n x n,  W1: 1 x n
    phi = tanh(sqrt(2) z) | sqrt(2) relu(z) | z
Weights, inputs and targets ~ N(0, 1) from fixed seeds, so every grid point starts from the same weights and
sees the same data; only the hyperparameters (lr_input, lr_output, init_offset) differ between points.
Loss: mean squared error. Optimizer: plain gradient descent, one learning rate per layer, float64.

Layout of the batched core (B grid points): the data X is shared, so the input layer of all B points is one
2-D matrix product, W0 stacked as (B*n, d) times X^T (d, N) -> pre-activations A (B*n, N). The output layer
and its gradient are batched products (torch.bmm) over the B points. Gradients are written by hand (the
network has two matrices), every op works on the whole chunk in place, and the step loop is the only
Python loop. Both sqrt(2) (tanh, relu) and 1/sqrt(n) are folded into a scaled copy of X:
tanh(sqrt(2) * (W0 x)/sqrt(n)) = tanh(W0 (x * sqrt(2/n))), and sqrt(2) relu(z) = relu(sqrt(2) z).

Every point of a chunk is computed independently (row-wise ops and per-matrix products), so a point that
diverges (inf/NaN) never touches the others; its curve is cut after its first non-finite loss, exactly as
the one-point path (which is this same core with B = 1) stops there.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from fractal_llm.config import ConfigError, TrainConfig
from fractal_llm.records import RunResult, SUMMARY_KEYS
from fractal_llm.verdict import SCORE_CAP, summarize_losses

DEFAULT_STEPS = 500
DEFAULT_CHUNK = 4096
# Points per batched step. Measured on a 2-core Xeon: the per-point arrays (n x N floats) of a chunk should
# fit in L2/L3 while each torch op still covers enough work to hide its ~5-10 us dispatch cost.
INNER_CHUNK = 128
# Points per block inside train_losses, per torch thread (measured on the same machine: 16 points of the paper's
# n = 16, N = 272 tanh network are ~1.1 MB per array, so a block's working set fits a core's 2 MB L2).
BLOCK_PER_THREAD = 16
# Ticks between divergence checks (and slot refills) of a block.
CHECK = 10
MINIBATCH_SEED_OFFSET = 7919  # the minibatch index stream uses its own generator, seed + this


@dataclass(frozen=True)
class Problem:
    """What every point of one batched run shares: network, data, steps and the verdict rule."""
    nonlinearity: str
    width: int
    dataset_size: int
    batch_size: int  # -1: full batch
    steps: int
    seed: int
    init_offset_mode: str
    window: int
    threshold: float

    @property
    def n_params(self) -> int:
        return self.width * self.width + self.width

    @property
    def examples_per_step(self) -> int:
        return self.dataset_size if self.batch_size < 0 else self.batch_size


def resolved_steps(config: TrainConfig) -> int:
    return DEFAULT_STEPS if config.num_iterations == -1 else config.num_iterations


def resolved_dataset_size(config: TrainConfig) -> int:
    if config.dataset_size > 0:
        return config.dataset_size
    if config.nonlinearity == "linear":
        return config.width
    return config.width * config.width + config.width


def problem_of(config: TrainConfig) -> Problem:
    if config.model_family != "mlp":
        raise ConfigError(f"model_family={config.model_family!r}: the batched paper network needs 'mlp'")
    return Problem(nonlinearity=config.nonlinearity, width=config.width,
                   dataset_size=resolved_dataset_size(config), batch_size=config.batch_size,
                   steps=resolved_steps(config), seed=config.seed, init_offset_mode=config.init_offset_mode,
                   window=config.trainable_window_steps, threshold=config.trainable_loss_ratio_threshold)


# ----------------------------------------------------------------------------------------------
# Fixed initial weights, data and minibatch sequence

def initial_state(problem: Problem) -> dict[str, torch.Tensor]:
    """W0 (n, n), W1 (1, n), X (N, n), Y (N,), drawn in this order from one generator seeded by problem.seed."""
    n, size = problem.width, problem.dataset_size
    gen = torch.Generator().manual_seed(problem.seed)
    w0 = torch.randn(n, n, generator=gen, dtype=torch.float64)
    w1 = torch.randn(1, n, generator=gen, dtype=torch.float64)
    x = torch.randn(size, n, generator=gen, dtype=torch.float64)
    y = torch.randn(size, generator=gen, dtype=torch.float64)
    return {"w0": w0, "w1": w1, "x": x, "y": y}


def minibatch_indices(problem: Problem) -> torch.Tensor | None:
    """(steps, batch_size) example indices drawn with replacement; the same for every grid point."""
    if problem.batch_size < 0:
        return None
    gen = torch.Generator().manual_seed(problem.seed + MINIBATCH_SEED_OFFSET)
    return torch.randint(0, problem.dataset_size, (problem.steps, problem.batch_size), generator=gen)


def input_scale(nonlinearity: str, width: int) -> float:
    """Factor folded into X: 1/sqrt(n) of the mean-field layer, times sqrt(2) of tanh/relu."""
    return math.sqrt(2.0 / width) if nonlinearity in ("tanh", "relu") else 1.0 / math.sqrt(width)


# ----------------------------------------------------------------------------------------------
# The batched core

def train_losses(problem: Problem, lr_input, lr_output, init_offset) -> np.ndarray:
    """Full-batch loss before each step for B points: (B, steps) float64, NaN after a point's first non-finite loss.

    lr_input, lr_output, init_offset: sequences of length B (one value per grid point).
    """
    lr_in = torch.as_tensor(np.asarray(lr_input, dtype=np.float64))
    lr_out = torch.as_tensor(np.asarray(lr_output, dtype=np.float64))
    offset = torch.as_tensor(np.asarray(init_offset, dtype=np.float64))
    if not (lr_in.shape == lr_out.shape == offset.shape) or lr_in.ndim != 1:
        raise ValueError(f"lr_input/lr_output/init_offset: need three 1-D arrays of one length, got "
                         f"{tuple(lr_in.shape)}, {tuple(lr_out.shape)}, {tuple(offset.shape)}")
    # Run a block of a few points per torch thread: a block's (n x N) arrays then stay in L2, which beats
    # fewer, larger ops (each pass over a big chunk is memory-bound). (Measured: one single-threaded block per
    # core in a Python thread pool is slower than one block with intra-op threads, as the threads contend
    # for the GIL between the small ops.) The block's slots are a queue: a slot whose point has diverged or
    # finished takes the next point (full batch; see _BatchedRun.run). Points are independent, so neither the
    # blocking nor the refill changes any result.
    total = lr_in.shape[0]
    losses = np.full((total, problem.steps), math.nan)
    if total == 0:
        return losses
    slots = max(1, min(BLOCK_PER_THREAD * max(1, torch.get_num_threads()), total))
    queue = iter(range(total))
    _BatchedRun(problem, lr_in, lr_out, offset, slots).run(losses, lambda: next(queue, -1))
    return cut_after_divergence(losses)


def cut_after_divergence(losses: np.ndarray) -> np.ndarray:
    """Set every loss after a row's first non-finite one to NaN (the one-point path never computes them)."""
    bad = ~np.isfinite(losses)
    after = np.cumsum(bad, axis=1) - bad > 0  # strictly after the first non-finite entry
    out = losses.copy()
    out[after] = np.nan
    return out


class _BatchedRun:
    """Buffers and the step loop for one chunk of B points (allocated once, updated in place).

    Every view the step uses is made once here: at a cache-sized chunk the step is ~15 torch ops, and each
    op's fixed cost (dispatch, view creation) is a visible part of the time.
    """

    def __init__(self, problem: Problem, lr_in: torch.Tensor, lr_out: torch.Tensor, offset: torch.Tensor,
                 slots: int):
        self.p = problem
        state = initial_state(problem)
        b, n = slots, problem.width
        self.b, self.n = b, n
        self.points = (lr_in, lr_out, offset)  # every point of the queue, (P,) each
        size = problem.dataset_size
        self.indices = minibatch_indices(problem)
        m = size if self.indices is None else problem.batch_size
        self.x_scaled = state["x"] * input_scale(problem.nonlinearity, n)  # (N, d)
        self.xt_scaled = self.x_scaled.t().contiguous()  # (d, N)
        self.y = state["y"].view(1, 1, -1)
        self.w0_init, self.w1_init = state["w0"], state["w1"]
        self.w0 = torch.empty(b * n, n, dtype=torch.float64)  # (B*n, d)
        self.w0_3d = self.w0.view(b, n, n)
        self.w1 = torch.empty(b, 1, n, dtype=torch.float64)  # (B, 1, n)
        self.w1_col = self.w1.view(b, n, 1)
        self.offset = torch.zeros(b, 1, 1, dtype=torch.float64)
        self.lr_in = torch.zeros(b, 1, 1, dtype=torch.float64)
        self.lr_out = torch.zeros(b, 1, 1, dtype=torch.float64)
        self.w0_slots, self.w1_slots = self.w0_3d.unbind(0), self.w1.unbind(0)
        self.grad_scale = 2.0 / (m * n)  # dL/dy_hat's 2/m times the 1/n of the output layer
        self.one = torch.ones((), dtype=torch.float64)
        self.acts = torch.empty(b * n, size, dtype=torch.float64)  # pre-activations, then phi of them
        self.h = self.acts.view(b, n, size)
        # Residuals of the last CHECK ticks (tick k: y_hat, then the residual, in res_ticks[k]); their squared
        # sums are taken once per interval (one reduction instead of one per step, each row alone as before).
        self.res_buf = torch.empty(CHECK, b, 1, size, dtype=torch.float64)
        self.res_ticks = self.res_buf.unbind(0)
        self.res_scaled = torch.empty(b, 1, size, dtype=torch.float64)
        self.grad_act = torch.empty(b * n, m, dtype=torch.float64)
        self.grad_act_3d = self.grad_act.view(b, n, m)
        self.g0 = torch.empty(b * n, n, dtype=torch.float64)
        self.g0_3d = self.g0.view(b, n, n)
        self.g1 = torch.empty(b, 1, n, dtype=torch.float64)
        if self.indices is None:
            self.h_t = self.h.transpose(1, 2)
        else:
            self.sub_acts = torch.empty(b, n, m, dtype=torch.float64)
            self.sub_acts_t = self.sub_acts.transpose(1, 2)
            self.sub_res = torch.empty(b, 1, m, dtype=torch.float64)

    def load(self, slot: int, point: int) -> None:
        """Start point in slot: its initial weights (W0 + offset, W1) and its hyperparameters."""
        lr_in, lr_out, offset = self.points
        torch.add(self.w0_init, offset[point], out=self.w0_slots[slot])  # as W0.repeat(...).add_(offset)
        self.w1_slots[slot].copy_(self.w1_init)
        self.offset[slot] = offset[point]
        self.lr_in[slot] = lr_in[point]
        self.lr_out[slot] = lr_out[point]

    def run(self, losses: np.ndarray, take) -> None:
        """Write the losses of the points that take() hands out into their rows of losses (P, steps); values
        after a point's first non-finite loss are junk.

        All slots step together in intervals of up to CHECK ticks; after each interval a slot whose point has
        a non-finite loss or has run all its steps takes the next queued point. A point's own step counter
        starts at 0 when it is loaded, so its arithmetic is the same in any slot and at any tick. The
        minibatch index sequence is by step number, so there a new point is only loaded when every slot is
        free (all slots then share the step counter, and so the minibatch).
        """
        steps, b = self.p.steps, self.b
        # Tick k of an interval keeps its residuals in res_ticks[k]; after the interval the sums of squared
        # residuals go to buf (length, B, 1) in one reduction, then the 1/N of the mean (elementwise, so bit for
        # bit the same as scaling every step, and a finite sum stays finite).
        buf = torch.empty(CHECK, b, 1, dtype=torch.float64)
        point = [-1] * b  # the point in each slot (-1: free)
        t0 = [0] * b  # each slot's point's next step
        more = True
        refill_any = self.indices is None
        while True:
            free = [s for s in range(b) if point[s] < 0]
            if free and more and (refill_any or len(free) == b):
                for s in free:
                    p = take()
                    if p < 0:
                        more = False
                        break
                    self.load(s, p)
                    point[s], t0[s] = p, 0
            active = [s for s in range(b) if point[s] >= 0]
            if not active:
                break
            length = min(CHECK, min(steps - t0[s] for s in active))
            start = t0[active[0]]  # minibatch: every slot is at the same step
            for k in range(length):
                self.step(start + k, self.res_ticks[k])
            sq = self.res_buf[:length]
            sq.mul_(sq)  # the residuals are not needed any more: square them in place
            torch.sum(sq, dim=3, out=buf[:length])
            block = buf[:length, :, 0].mul(1.0 / self.p.dataset_size).numpy()  # (length, B)
            finite = np.isfinite(block).all(axis=0)
            for s in active:
                p, t = point[s], t0[s]
                losses[p, t:t + length] = block[:, s]
                t0[s] = t + length
                if t0[s] >= steps or not finite[s]:
                    point[s] = -1

    def step(self, t: int, res: torch.Tensor) -> None:
        """One GD step for every point (step t of the minibatch sequence); writes each point's residuals
        y_hat - y (before the step) to res (B, 1, N)."""
        acts, h = self.acts, self.h
        torch.mm(self.w0, self.xt_scaled, out=acts)  # (B*n, N)
        self.activate(acts)
        torch.bmm(self.w1, h, out=res)  # (B, 1, N)
        res.mul_(1.0 / self.n).sub_(self.y)  # residual y_hat - y
        if self.indices is None:
            h_used, h_used_t, x_used = h, self.h_t, self.x_scaled
            res_used = torch.mul(res, self.grad_scale, out=self.res_scaled)  # res itself is kept for the loss
        else:
            idx = self.indices[t]
            torch.index_select(h, 2, idx, out=self.sub_acts)
            torch.index_select(res, 2, idx, out=self.sub_res)
            h_used, h_used_t, x_used, res_used = self.sub_acts, self.sub_acts_t, self.x_scaled[idx], self.sub_res
            res_used.mul_(self.grad_scale)  # dL/dy_hat times the 1/n of the output layer
        torch.bmm(res_used, h_used_t, out=self.g1)  # dL/dW1 (B, 1, n)
        grad_act = self.grad_act_3d
        self.activation_slope(h_used, grad_act)
        grad_act.mul_(res_used)  # dL/dA without the W1 factor (applied to the small gradient below)
        torch.mm(self.grad_act, x_used, out=self.g0)  # (B*n, d)
        g0 = self.g0_3d
        g0.mul_(self.w1_col)
        # Plain GD. Separate mul and sub (not addcmul) so every element sees the same two roundings
        # whatever the chunk size (vector and scalar tails then agree bit for bit).
        self.g1.mul_(self.lr_out)
        g0.mul_(self.lr_in)
        self.w1.sub_(self.g1)
        self.w0_3d.sub_(g0)
        if self.p.init_offset_mode == "every_step":
            self.w0_3d.add_(self.offset)

    def activate(self, acts: torch.Tensor) -> None:
        if self.p.nonlinearity == "tanh":
            torch.tanh(acts, out=acts)
        elif self.p.nonlinearity == "relu":
            torch.relu_(acts)

    def activation_slope(self, h: torch.Tensor, out: torch.Tensor) -> None:
        """phi'(A) written from phi(A): 1 - h^2 (tanh of the folded input), 1[h > 0] (relu), 1 (linear)."""
        if self.p.nonlinearity == "tanh":
            torch.addcmul(self.one, h, h, value=-1.0, out=out)  # one pass over the chunk
        elif self.p.nonlinearity == "relu":
            torch.sign(h, out=out)  # h >= 0, so sign(h) is the indicator (NaN stays NaN)
        else:
            out.fill_(1.0)


# ----------------------------------------------------------------------------------------------
# Summaries, vectorised over points (equal to verdict.summarize_losses row by row; tests check it)

def summarize_batch(losses: np.ndarray, planned_steps: int, window: int = 20, threshold: float = 1.0) -> dict:
    """Per-point verdict arrays for a (B, S) loss matrix cut with cut_after_divergence.

    Returns numpy arrays: verdict (object), trainable, diverged_at_step (-1 none), steps, loss_first,
    loss_last, loss_mean_last_k, loss_ratio (NaN where summarize_losses gives None), score.
    """
    v = np.asarray(losses, dtype=np.float64)
    b, s = v.shape
    finite = np.isfinite(v)
    # NaN after divergence is "not recorded"; the first non-finite entry is recorded.
    any_bad = ~finite.all(axis=1)
    first_bad = np.where(any_bad, np.argmin(finite, axis=1), -1)
    n_finite = np.where(any_bad, first_bad, s)
    steps = np.where(any_bad, first_bad + 1, s)
    if not any_bad.all() and s < planned_steps:
        raise ValueError(f"losses: {s} losses for {planned_steps} planned steps without divergence")
    rows = np.arange(b)
    has = n_finite > 0
    loss_first = np.where(has, v[:, 0], np.nan)
    loss_last = np.where(has, v[rows, np.maximum(n_finite - 1, 0)], np.nan)
    mean_k = np.full(b, np.nan)
    with np.errstate(over="ignore"):  # huge finite losses may sum to inf, as in summarize_losses
        for length in np.unique(n_finite[has]):
            sel = has & (n_finite == length)
            k = min(window, int(length))
            mean_k[sel] = np.mean(v[sel, length - k:length], axis=1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = np.where(has & (loss_first != 0), mean_k / loss_first, np.nan)
    trainable = ~any_bad & np.isfinite(ratio) & (ratio < threshold)
    verdict = np.where(any_bad, "diverged", np.where(trainable, "trainable", "not_trainable")).astype(object)
    score = _scores(v, steps, planned_steps, trainable)
    return {"verdict": verdict, "trainable": trainable, "diverged_at_step": first_bad, "steps": steps,
            "loss_first": loss_first, "loss_last": loss_last, "loss_mean_last_k": mean_k, "loss_ratio": ratio,
            "score": score}


def _scores(v: np.ndarray, steps: np.ndarray, planned_steps: int, trainable: np.ndarray) -> np.ndarray:
    """verdict.convergence_score per row: u = v/v0 capped, padded with the cap; -sum(u) or sum(1/u)."""
    b, s = v.shape
    width = max(planned_steps, s)
    u = np.full((b, width), SCORE_CAP)
    v0 = v[:, :1]
    ok0 = np.isfinite(v0) & (v0 != 0)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        ratio = v / np.where(ok0, v0, 1.0)
    recorded = np.arange(s)[None, :] < steps[:, None]
    body = np.where(np.isfinite(ratio), np.minimum(ratio, SCORE_CAP), SCORE_CAP)
    u[:, :s] = np.where(recorded & ok0, body, SCORE_CAP)
    with np.errstate(divide="ignore"):
        inverse = np.where(u > 0, 1.0 / np.maximum(u, 1e-300), SCORE_CAP)
    return np.where(trainable, -np.sum(u, axis=1), np.sum(inverse, axis=1))


# ----------------------------------------------------------------------------------------------
# Grid driver used by the paper CLI (arrays in, arrays out; no per-point records)

def train_grid(problem: Problem, lr_input, lr_output, init_offset, chunk_size: int = INNER_CHUNK,
               progress=None) -> dict:
    """Train every point in chunks of chunk_size; returns summarize_batch arrays plus runtime_s (total)."""
    lr_input, lr_output, init_offset = (np.asarray(a, dtype=np.float64).ravel()
                                        for a in (lr_input, lr_output, init_offset))
    total = lr_input.shape[0]
    parts = []
    start = time.perf_counter()
    for lo in range(0, total, chunk_size):
        hi = min(total, lo + chunk_size)
        losses = train_losses(problem, lr_input[lo:hi], lr_output[lo:hi], init_offset[lo:hi])
        parts.append(summarize_batch(losses, problem.steps, problem.window, problem.threshold))
        if progress is not None:
            progress(hi, total)
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    merged["runtime_s"] = time.perf_counter() - start
    return merged


# ----------------------------------------------------------------------------------------------
# RunResult API (the local runner and train.train use these)

def train_one(config: TrainConfig) -> RunResult:
    """One grid point: the batched core with B = 1, so it agrees exactly with train_many."""
    return train_many([config], chunk_size=1)[0]


def train_many(configs: list[TrainConfig], chunk_size: int = DEFAULT_CHUNK) -> list[RunResult]:
    """Train many mlp configs; points that share everything but lr_input/lr_output/init_offset run batched."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size!r}: must be >= 1")
    results: list[RunResult | None] = [None] * len(configs)
    groups: dict[Problem, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(problem_of(config), []).append(i)
    for problem, members in groups.items():
        for lo in range(0, len(members), chunk_size):
            chunk = members[lo:lo + chunk_size]
            start = time.perf_counter()
            losses = _chunk_losses(problem, [configs[i] for i in chunk])
            per_point = (time.perf_counter() - start) / len(chunk)
            for row, i in enumerate(chunk):
                results[i] = _result(configs[i], problem, losses[row], per_point, batched=chunk_size > 1)
    return results  # type: ignore[return-value]


def _chunk_losses(problem: Problem, configs: list[TrainConfig]) -> np.ndarray:
    """Loss curves of one chunk, computed INNER_CHUNK points at a time (cache-sized; points are independent)."""
    parts = []
    for lo in range(0, len(configs), INNER_CHUNK):
        part = configs[lo:lo + INNER_CHUNK]
        parts.append(train_losses(problem, [c.lr_input for c in part], [c.lr_output for c in part],
                                  [c.init_offset for c in part]))
    return np.concatenate(parts)


def _result(config: TrainConfig, problem: Problem, row: np.ndarray, runtime_s: float, batched: bool) -> RunResult:
    bad = np.flatnonzero(~np.isfinite(row))
    recorded = row if bad.size == 0 else row[: bad[0] + 1]
    curve = [float(x) for x in recorded]
    stats = summarize_losses(curve, problem.steps, problem.window, problem.threshold)
    per_step = problem.examples_per_step
    summary = {**stats, "tokens_seen": per_step * len(curve), "runtime_s": runtime_s, "error": None}
    summary = {key: summary[key] for key in SUMMARY_KEYS}
    steps = len(curve)
    history = {
        "train/loss": curve,
        "lr/input": [config.lr_input] * steps,
        "lr/output": [config.lr_output] * steps,
        "train/tokens_seen": [float(per_step * (t + 1)) for t in range(steps)],
    }
    full = replace(config, num_iterations=problem.steps, dataset_size=problem.dataset_size).resolved()
    config_dict = full.to_dict()
    config_dict["repro"] = {"device": "cpu", "torch": torch.__version__, "batched": batched,
                            "dtype": "float64"}
    return RunResult(config=config_dict, summary=summary, history=history)
