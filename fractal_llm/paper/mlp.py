"""Sohl-Dickstein 2024's two-layer network, trained for many grid points at once.

Network (mean-field, no biases, input dimension = width n):
    y_hat = (1/n) * W1 @ phi(W0 @ x / sqrt(n)),   W0: n x n,  W1: 1 x n
    phi = tanh(sqrt(2) z) | sqrt(2) relu(z) | z
Weights, inputs and targets ~ N(0, 1) from fixed seeds, so every grid point starts from the same weights and
sees the same data; only the hyperparameters (lr_input, lr_output, init_offset) differ between points.
Two sources of those draws (`weights`): "torch" (torch's generator, from `seed`) or "notebook" (the paper
notebook's JAX draws, shipped in weights/, with its minibatch index stream from fractal_llm/paper/threefry.py).
Loss: mean squared error. Optimizer: plain gradient descent, one learning rate per layer, float64.

Layout of the batched core (B grid points): the data X is shared, so the input layer of all B points is one
2-D matrix product, W0 stacked as (B*n, d) times X^T (d, N) -> pre-activations A (B*n, N). The output layer
and its gradient are batched products (torch.bmm) over the B points. Gradients are written by hand (the
network has two matrices), every op works on the whole chunk in place, and the step loop is the only
Python loop. Both sqrt(2) (tanh, relu) and 1/sqrt(n) are folded into a scaled copy of X:
tanh(sqrt(2) * (W0 x)/sqrt(n)) = tanh(W0 (x * sqrt(2/n))), and sqrt(2) relu(z) = relu(sqrt(2) z).

On CUDA (float64 as on the CPU) a chunk is one block of all its points, with no slot refill: the card needs
big ops, and a Python loop over slots would cost more than the step (train_losses_whole).

Every point of a chunk is computed independently (row-wise ops and per-matrix products), so a point that
diverges (inf/NaN) never touches the others; its curve is cut after its first non-finite loss, exactly as
the one-point path (which is this same core with B = 1) stops there.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fractal_llm.paper import threefry
from fractal_llm.config import DEFAULT_MLP_STEPS, ConfigError, TrainConfig
from fractal_llm.pool import WorkerPool
from fractal_llm.records import RunResult, SUMMARY_KEYS
from fractal_llm.repro import repro_metadata
from fractal_llm.verdict import summarize_batch, summarize_losses

DEFAULT_STEPS = DEFAULT_MLP_STEPS
DEFAULT_CHUNK = 4096  # points per train_losses call in train_many
MIN_GRID_CHUNK, MAX_GRID_CHUNK = 128, 1024  # points per train_losses call in train_grid (grid_chunk_size)
# Points per block inside train_losses, per torch thread: as many as fit BLOCK_BYTES of pre-activations
# (n x N floats per point), at most MAX_BLOCK. Measured on a 2-core Xeon (2 MB L2 per core): for tanh with
# n = 16, N = 272, 16 points (0.56 MB) beat 8, 24 and 32; a block's working set (pre-activations, residuals
# of CHECK ticks, weights) then stays in L2 while each op is long enough to hide its ~2 us dispatch cost.
# Smaller networks need more points per op: the linear network (N = 16) ran 1.7x faster with 256 points
# per block than with 16, the single data point (N = 1) 3x.
BLOCK_BYTES = 16 * 16 * 272 * 8
MAX_BLOCK = 256
# Ticks between divergence checks (and slot refills) of a block.
CHECK = 10
MINIBATCH_SEED_OFFSET = 7919  # the minibatch index stream uses its own generator, seed + this
# The paper notebook's draws (scripts/make_paper_weights.py): PRNGKey(0) for weights and data, PRNGKey(42)
# for the minibatch indices; width 16 and these dataset sizes (parameters, width, one point) only.
NOTEBOOK_FILE = Path(__file__).resolve().parent / "weights" / "notebook_width16.npz"
NOTEBOOK_WIDTH = 16
NOTEBOOK_DATASET_SIZES = (272, 16, 1)
NOTEBOOK_MINIBATCH_SEED = 42
# CUDA: a chunk holds as many points as fit this share of the card's free memory (see cuda_chunk_size).
CUDA_MEMORY_SHARE = 0.5


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
    weights: str = "torch"  # "torch" | "notebook" (see the module docstring)
    device: str = "cpu"  # "cpu" | "cuda" (float64 either way)

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
    problem = Problem(nonlinearity=config.nonlinearity, width=config.width,
                      dataset_size=resolved_dataset_size(config), batch_size=config.batch_size,
                      steps=resolved_steps(config), seed=config.seed, init_offset_mode=config.init_offset_mode,
                      window=config.trainable_window_steps, threshold=config.trainable_loss_ratio_threshold,
                      weights=config.mlp_weights)
    if problem.weights == "notebook":
        check_notebook_problem(problem)
    return problem


def check_notebook_problem(problem: Problem) -> None:
    """The notebook's draws exist for one network and three datasets: say which field is off, before any work."""
    if problem.width != NOTEBOOK_WIDTH:
        raise ConfigError(f"width={problem.width}: mlp_weights='notebook' has the notebook's width "
                          f"{NOTEBOOK_WIDTH} only (use mlp_weights='torch' for other widths)")
    if problem.dataset_size not in NOTEBOOK_DATASET_SIZES:
        raise ConfigError(f"dataset_size={problem.dataset_size}: mlp_weights='notebook' has the notebook's "
                          f"datasets of {', '.join(map(str, NOTEBOOK_DATASET_SIZES))} examples only")
    if problem.seed != 0:
        raise ConfigError(f"seed={problem.seed}: mlp_weights='notebook' is the notebook's PRNGKey(0) draw; "
                          "seed must be 0 (use mlp_weights='torch' to vary the seed)")


# ----------------------------------------------------------------------------------------------
# Fixed initial weights, data and minibatch sequence

def initial_state(problem: Problem) -> dict[str, torch.Tensor]:
    """W0 (n, n), W1 (1, n), X (N, n), Y (N,) on the CPU: the notebook's (see notebook_state) or drawn in this
    order from one torch generator seeded by problem.seed."""
    if problem.weights == "notebook":
        check_notebook_problem(problem)
        return {key: value.clone() for key, value in notebook_state(problem.dataset_size).items()}
    n, size = problem.width, problem.dataset_size
    gen = torch.Generator().manual_seed(problem.seed)
    w0 = torch.randn(n, n, generator=gen, dtype=torch.float64)
    w1 = torch.randn(1, n, generator=gen, dtype=torch.float64)
    x = torch.randn(size, n, generator=gen, dtype=torch.float64)
    y = torch.randn(size, generator=gen, dtype=torch.float64)
    return {"w0": w0, "w1": w1, "x": x, "y": y}


@lru_cache(maxsize=len(NOTEBOOK_DATASET_SIZES))
def notebook_state(dataset_size: int) -> dict[str, torch.Tensor]:
    """The notebook's arrays in this module's layout: it computes X @ W0 and h @ W1 with W0 (n, n), W1 (n, 1)
    and Y (N, 1); here w0 @ x and w1 @ h, so w0 = W0^T, w1 = W1^T, y = Y[:, 0]."""
    with np.load(NOTEBOOK_FILE) as arrays:
        return {"w0": torch.from_numpy(arrays["W0"].T.copy()), "w1": torch.from_numpy(arrays["W1"].T.copy()),
                "x": torch.from_numpy(arrays[f"X_{dataset_size}"].copy()),
                "y": torch.from_numpy(arrays[f"Y_{dataset_size}"][:, 0].copy())}


def minibatch_indices(problem: Problem) -> torch.Tensor | None:
    """(steps, batch_size) example indices drawn with replacement; the same for every grid point.

    notebook: split(PRNGKey(42), steps) and one randint per step, so the whole sequence depends on the step
    count (as in the notebook: 100 steps are not the first 100 of 500)."""
    if problem.batch_size < 0:
        return None
    if problem.weights == "notebook":
        indices = threefry.notebook_minibatch_indices(problem.steps, problem.batch_size, problem.dataset_size,
                                                      NOTEBOOK_MINIBATCH_SEED)
        return torch.from_numpy(indices)
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
    # fewer, larger ops (each pass over a big chunk is memory-bound). Across cores, worker processes with one
    # thread each (worker_pool) beat intra-op threads. The block's slots are a queue: a slot whose point has
    # diverged or finished takes the next point (full batch; see _BatchedRun.run). Points are independent, so
    # neither the blocking nor the refill changes any result.
    total = lr_in.shape[0]
    losses = np.full((total, problem.steps), math.nan)
    if total == 0:
        return losses
    if problem.device != "cpu":
        return train_losses_whole(problem, lr_input, lr_output, init_offset)
    slots = max(1, min(block_points(problem) * max(1, torch.get_num_threads()), total))
    queue = iter(range(total))
    _BatchedRun(problem, lr_in, lr_out, offset, slots).run(losses, lambda: next(queue, -1))
    return cut_after_divergence(losses)


def train_losses_whole(problem: Problem, lr_input, lr_output, init_offset) -> np.ndarray:
    """train_losses with every point in one block from step 0 and no slot refill, on problem.device: the CUDA
    path (train_grid sizes its chunks with cuda_chunk_size). On the CPU it gives the same curves as
    train_losses (tests check it), only slower than the cache-sized blocks there."""
    lr_in, lr_out, offset = (torch.as_tensor(np.asarray(a, dtype=np.float64).ravel())
                             for a in (lr_input, lr_output, init_offset))
    losses = np.full((lr_in.shape[0], problem.steps), math.nan)
    if lr_in.shape[0]:
        _BatchedRun(problem, lr_in, lr_out, offset, lr_in.shape[0]).run_whole(losses)
    return cut_after_divergence(losses)


def bytes_per_point(problem: Problem) -> int:
    """Device memory of one point in train_losses_whole (its buffers in _BatchedRun), in bytes."""
    n, size = problem.width, problem.dataset_size
    m = problem.examples_per_step
    # W0 and its gradient, pre-activations, CHECK ticks of residuals and losses, v/dL/dv/row rates, and the
    # per-point offset, rates and hyperparameters
    floats = 2 * n * n + n * size + CHECK * (size + 1) + 3 * n + 6
    if problem.batch_size > 0:
        floats += n * m + m
    return 8 * floats


def cuda_chunk_size(problem: Problem, total: int) -> int:
    """Points per train_losses call on CUDA: as many as fit CUDA_MEMORY_SHARE of the card's free memory (the
    rest stays for cuBLAS workspaces and the allocator's slack), at most total."""
    free, _ = torch.cuda.mem_get_info()
    return max(1, min(total, int(free * CUDA_MEMORY_SHARE) // bytes_per_point(problem)))


def block_points(problem: Problem) -> int:
    """Points per block and torch thread (see BLOCK_BYTES)."""
    per_point = problem.width * problem.dataset_size * 8
    return max(1, min(MAX_BLOCK, BLOCK_BYTES // per_point))


def cut_after_divergence(losses: np.ndarray) -> np.ndarray:
    """Set every loss after a row's first non-finite one to NaN (the one-point path never computes them)."""
    bad = ~np.isfinite(losses)
    after = np.cumsum(bad, axis=1) - bad > 0  # strictly after the first non-finite entry
    out = losses.copy()
    out[after] = np.nan
    return out


class _BatchedRun:
    """Buffers and the step loop for one chunk of B points (allocated once, updated in place).

    Every view the step uses is made once here: at a cache-sized chunk the step is ~11 torch ops, and each
    op's fixed cost (dispatch, view creation) is a visible part of the time.
    """

    def __init__(self, problem: Problem, lr_in: torch.Tensor, lr_out: torch.Tensor, offset: torch.Tensor,
                 slots: int):
        self.p = problem
        dev = torch.device(problem.device)
        state = {key: value.to(dev) for key, value in initial_state(problem).items()}
        b, n = slots, problem.width
        self.b, self.n = b, n
        self.points = (lr_in, lr_out, offset)  # every point of the queue, (P,) each
        size = problem.dataset_size
        self.indices = minibatch_indices(problem)
        if self.indices is not None:
            self.indices = self.indices.to(dev)
        m = size if self.indices is None else problem.batch_size
        self.x_scaled = state["x"] * input_scale(problem.nonlinearity, n)  # (N, d)
        self.xt_scaled = self.x_scaled.t().contiguous()  # (d, N)
        self.y = state["y"].view(1, 1, -1)
        self.w0_init, self.w1_init = state["w0"], state["w1"]
        self.w0 = torch.empty(b * n, n, dtype=torch.float64, device=dev)  # (B*n, d)
        self.w0_3d = self.w0.view(b, n, n)
        # The output layer is kept as v = W1 / n, so y_hat = v h is one batched product (the rescaling is
        # exact for a power-of-two width); its 1/n moves into the learning rates (see load).
        self.v = torch.empty(b, 1, n, dtype=torch.float64, device=dev)  # (B, 1, n)
        self.v_col = self.v.view(b, n, 1)
        self.offset = torch.zeros(b, 1, 1, dtype=torch.float64, device=dev)
        self.lr_in = torch.zeros(b, 1, 1, dtype=torch.float64, device=dev)
        self.lr_out = torch.zeros(b, 1, 1, dtype=torch.float64, device=dev)
        self.w0_slots, self.v_slots = self.w0_3d.unbind(0), self.v.unbind(0)
        self.grad_scale = 2.0 / (m * n)  # dL/dy_hat's 2/m times the 1/n of the output layer
        self.w0_rate = torch.empty(b, n, 1, dtype=torch.float64, device=dev)  # per row of W0: its rate times its v entry
        self.acts = torch.empty(b * n, size, dtype=torch.float64, device=dev)  # pre-activations, then phi of them
        self.h = self.acts.view(b, n, size)
        # Residuals of the last CHECK ticks (tick k: y_hat, then the residual, in res_ticks[k]); their squared
        # sums are taken once per interval (one reduction instead of one per step, each row alone as before).
        self.res_buf = torch.empty(CHECK, b, 1, size, dtype=torch.float64, device=dev)
        self.res_ticks = self.res_buf.unbind(0)
        self.g0 = torch.empty(b * n, n, dtype=torch.float64, device=dev)
        self.g0_3d = self.g0.view(b, n, n)
        self.g1 = torch.empty(b, 1, n, dtype=torch.float64, device=dev)
        if self.indices is None:
            self.h_t = self.h.transpose(1, 2)
        else:
            self.sub_acts = torch.empty(b * n, m, dtype=torch.float64, device=dev)
            self.sub_h = self.sub_acts.view(b, n, m)
            self.sub_h_t = self.sub_h.transpose(1, 2)
            self.sub_res = torch.empty(b, 1, m, dtype=torch.float64, device=dev)

    def load(self, slot: int, point: int) -> None:
        """Start point in slot: its initial weights (W0 + offset, v = W1 / n) and its hyperparameters (the
        learning rates times the constant factors of the gradients)."""
        lr_in, lr_out, offset = self.points
        torch.add(self.w0_init, offset[point], out=self.w0_slots[slot])  # as W0.repeat(...).add_(offset)
        torch.div(self.w1_init, self.n, out=self.v_slots[slot])
        self.offset[slot] = offset[point]
        self.lr_in[slot] = lr_in[point] * (self.grad_scale * self.n)  # dL/dW0 has W1 = n v
        self.lr_out[slot] = lr_out[point] * (self.grad_scale / self.n)  # v moves 1/n as far as W1

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

    def run_whole(self, losses: np.ndarray) -> None:
        """Every point in its own slot from step 0 to the end (no refill): losses (B, steps) as in run. Stops
        early once every point has a non-finite loss."""
        b, steps = self.b, self.p.steps
        dev = self.w0.device
        lr_in, lr_out, offset = (t.to(dev).view(b, 1, 1) for t in self.points)
        # The same arithmetic as load(), for all slots at once (elementwise, so bit for bit the same values).
        torch.add(self.w0_init.unsqueeze(0), offset, out=self.w0_3d)
        self.v.copy_(torch.div(self.w1_init, self.n).expand(b, 1, self.n))
        self.offset.copy_(offset)
        torch.mul(lr_in, self.grad_scale * self.n, out=self.lr_in)
        torch.mul(lr_out, self.grad_scale / self.n, out=self.lr_out)
        buf = torch.empty(CHECK, b, 1, dtype=torch.float64, device=dev)
        alive = np.ones(b, dtype=bool)
        for start in range(0, steps, CHECK):
            length = min(CHECK, steps - start)
            for k in range(length):
                self.step(start + k, self.res_ticks[k])
            sq = self.res_buf[:length]
            sq.mul_(sq)
            torch.sum(sq, dim=3, out=buf[:length])
            block = buf[:length, :, 0].mul(1.0 / self.p.dataset_size).cpu().numpy()  # (length, B)
            losses[:, start:start + length] = block.T
            alive &= np.isfinite(block).all(axis=0)
            if not alive.any():
                break

    def step(self, t: int, res: torch.Tensor) -> None:
        """One GD step for every point (step t of the minibatch sequence); writes each point's residuals
        y_hat - y (before the step) to res (B, 1, N)."""
        acts, h = self.acts, self.h
        torch.mm(self.w0, self.xt_scaled, out=acts)  # (B*n, N)
        self.activate(acts)
        torch.bmm(self.v, h, out=res)  # y_hat (B, 1, N)
        res.sub_(self.y)  # residual y_hat - y
        if self.indices is None:
            acts_used, h_used, h_used_t, x_used, res_used = acts, h, self.h_t, self.x_scaled, res
        else:
            idx = self.indices[t]
            torch.index_select(h, 2, idx, out=self.sub_h)
            torch.index_select(res, 2, idx, out=self.sub_res)
            acts_used, h_used, h_used_t = self.sub_acts, self.sub_h, self.sub_h_t
            x_used, res_used = self.x_scaled[idx], self.sub_res
        # Gradients up to constant factors, which sit in the per-point learning rates lr_in/lr_out (see load).
        torch.bmm(res_used, h_used_t, out=self.g1)  # ~ dL/dv (B, 1, n)
        # dL/dA without the W1 factor, written over h (not needed any more): a smaller working set.
        self.backprop_activation(res_used, h_used, h_used)
        torch.mm(acts_used, x_used, out=self.g0)  # (B*n, d)
        # Plain GD. The v factor of dL/dW0 joins its learning rate (one small op); v is read before its
        # own update. Separate mul and sub (no fused multiply-add), so the rounding never depends on how
        # an op splits its work into vector body and scalar tail.
        torch.mul(self.v_col, self.lr_in, out=self.w0_rate)  # (B, n, 1)
        self.g1.mul_(self.lr_out)
        self.v.sub_(self.g1)
        self.g0_3d.mul_(self.w0_rate)
        self.w0_3d.sub_(self.g0_3d)
        if self.p.init_offset_mode == "every_step":
            self.w0_3d.add_(self.offset)

    def activate(self, acts: torch.Tensor) -> None:
        if self.p.nonlinearity == "tanh":
            torch.tanh(acts, out=acts)
        elif self.p.nonlinearity == "relu":
            torch.relu_(acts)

    def backprop_activation(self, res: torch.Tensor, h: torch.Tensor, out: torch.Tensor) -> None:
        """out = res * phi'(A), written from h = phi(A) in one elementwise pass (out may be h; res (B, 1, m) is
        broadcast over the n rows): 1 - h^2 for tanh (of the folded input), 1[h > 0] for relu, 1 for linear."""
        if self.p.nonlinearity == "tanh":
            torch.ops.aten.tanh_backward.grad_input(res, h, grad_input=out)
        elif self.p.nonlinearity == "relu":
            torch.ops.aten.threshold_backward.grad_input(res, h, 0.0, grad_input=out)
        else:
            out.copy_(res.expand_as(out))


# ----------------------------------------------------------------------------------------------
# Grid driver used by the paper CLI (arrays in, arrays out; no per-point records)

@contextmanager
def worker_pool(workers: int) -> Iterator[WorkerPool | None]:
    """`workers` single-threaded worker processes for train_grid, started and ready, or None (train in this
    process) for 1.

    Why processes: at a cache-sized block the step is ~11 small torch ops, and splitting each of them over
    threads costs a fork/join per op (measured: two intra-op threads gave 1.6x one thread's points/s;
    Python threads were slower still, as they contend for the GIL between ops). Independent processes, one
    block each, scale with the cores.
    """
    if workers < 1:
        raise ValueError(f"workers={workers!r}: must be >= 1")
    if workers == 1:
        yield None
        return
    with WorkerPool(summarized_task, workers, threads=1) as pool:
        pool.wait_ready()
        yield pool


def grid_chunk_size(total: int) -> int:
    """Points per train_losses call in train_grid: ~32 chunks (load balance across workers, progress), within
    [MIN_GRID_CHUNK, MAX_GRID_CHUNK]. Larger is cheaper: the slots of a chunk's last block idle while its
    longest point finishes (measured on the default tanh window: 2% of the step time at 128 points, 0.8% at
    1024)."""
    return max(MIN_GRID_CHUNK, min(MAX_GRID_CHUNK, math.ceil(total / 32)))


def train_grid(problem: Problem, lr_input, lr_output, init_offset, chunk_size: int | None = None,
               progress=None, pool: WorkerPool | None = None) -> dict:
    """Train every point in chunks (of chunk_size, default grid_chunk_size; on CUDA cuda_chunk_size), in this
    process or in the worker processes of pool (worker_pool; CPU only); returns summarize_batch arrays plus runtime_s (total). The
    results are the same either way: every point is computed alone."""
    lr_input, lr_output, init_offset = (np.asarray(a, dtype=np.float64).ravel()
                                        for a in (lr_input, lr_output, init_offset))
    total = lr_input.shape[0]
    if problem.device != "cpu" and pool is not None:
        raise ValueError(f"device={problem.device!r}: train_grid runs device chunks in this process (pool=None)")
    if chunk_size:
        size = chunk_size
    else:
        size = cuda_chunk_size(problem, total) if problem.device == "cuda" else grid_chunk_size(total)
    spans = [(lo, min(total, lo + size)) for lo in range(0, total, size)]
    args = [(problem, lr_input[lo:hi], lr_output[lo:hi], init_offset[lo:hi]) for lo, hi in spans]
    start = time.perf_counter()
    parts: list[dict | None] = [None] * len(spans)
    done = 0
    if pool is None:
        finished = ((i, summarized_task(a)) for i, a in enumerate(args))
    else:
        finished = pool.map_unordered(args)
    for i, part in finished:
        parts[i] = part
        done += spans[i][1] - spans[i][0]
        if progress is not None:
            progress(done, total)
    merged = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    merged["runtime_s"] = time.perf_counter() - start
    return merged


def summarized_task(task: tuple) -> dict:
    """summarize_batch of one chunk's loss curves, task = (problem, lr_input, lr_output, init_offset): what a
    worker sends back is a few numbers per point."""
    problem, lr_input, lr_output, init_offset = task
    losses = train_losses(problem, lr_input, lr_output, init_offset)
    return summarize_batch(losses, problem.steps, problem.window, problem.threshold)


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
            losses = train_losses(problem, [configs[i].lr_input for i in chunk],
                                  [configs[i].lr_output_resolved() for i in chunk],
                                  [configs[i].init_offset for i in chunk])
            per_point = (time.perf_counter() - start) / len(chunk)
            for row, i in enumerate(chunk):
                results[i] = _result(configs[i], problem, losses[row], per_point, batched=chunk_size > 1)
    return results  # type: ignore[return-value]


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
        "lr/output": [config.lr_output_resolved()] * steps,
        "train/tokens_seen": [float(per_step * (t + 1)) for t in range(steps)],
    }
    full = replace(config, num_iterations=problem.steps, dataset_size=problem.dataset_size).resolved()
    config_dict = full.to_dict()
    config_dict["repro"] = repro_metadata("cpu", {"train_s": runtime_s}, batched=batched, dtype="float64")
    return RunResult(config=config_dict, summary=summary, history=history)
