"""Paper network: batched == one point, determinism, divergence handling, vectorised summaries."""

import math

import numpy as np
import pytest

from fractal_llm.paper import mlp
from fractal_llm.config import TrainConfig
from fractal_llm.records import SUMMARY_KEYS
from fractal_llm.verdict import summarize_batch

STEPS = 120


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def grid_configs(nonlinearity="tanh", **extra):
    lrs = np.logspace(0.0, 3.0, 4)  # straddles the boundary for every nonlinearity (see paper windows)
    return [TrainConfig(model_family="mlp", nonlinearity=nonlinearity, lr_input=float(a), lr_output=float(b),
                        num_iterations=STEPS, **extra) for b in lrs for a in lrs]


@pytest.mark.parametrize("kind", [{"nonlinearity": "tanh"}, {"nonlinearity": "relu"},
                                  {"nonlinearity": "tanh", "batch_size": 16}])
def test_batched_equals_one_point_on_4x4_grid(kind):
    configs = grid_configs(**kind)
    many = mlp.train_many(configs, chunk_size=16)
    ones = [mlp.train_one(c) for c in configs]
    assert [r.summary["verdict"] for r in many] == [r.summary["verdict"] for r in ones]
    assert [r.summary["score"] for r in many] == [r.summary["score"] for r in ones]
    for a, b in zip(many, ones):
        assert len(a.history["train/loss"]) == len(b.history["train/loss"])
        assert np.allclose(a.history["train/loss"], b.history["train/loss"], rtol=1e-12, atol=0)
    verdicts = {r.summary["verdict"] for r in many}
    assert "trainable" in verdicts and "diverged" in verdicts  # the grid straddles the boundary


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_batched_equals_one_point_for_odd_sizes(nonlinearity):
    # n*N = 35 per point: with B = 1 a contiguous elementwise op would end in a scalar tail that B = 16 runs
    # in its vector body; the results must not depend on that.
    configs = grid_configs(nonlinearity, width=5, dataset_size=7)
    many = [r.history["train/loss"] for r in mlp.train_many(configs, chunk_size=16)]
    ones = [mlp.train_one(c).history["train/loss"] for c in configs]
    assert many == ones


def test_worker_processes_give_the_same_grid_as_this_process():
    problem = mlp.problem_of(TrainConfig(model_family="mlp", nonlinearity="tanh", num_iterations=200))
    xx, yy = np.meshgrid(np.logspace(0.0, 4.0, 5), np.logspace(1.5, 3.0, 5))  # the default tanh window
    args = (problem, xx.ravel(), yy.ravel(), np.zeros(xx.size))
    here = mlp.train_grid(*args, chunk_size=7)  # chunks of unequal size: 7, 7, 7, 4
    seen = []
    with mlp.worker_pool(2) as pool:
        there = mlp.train_grid(*args, chunk_size=7, pool=pool, progress=lambda done, total: seen.append((done, total)))
    assert {"trainable", "diverged"} <= set(here["verdict"])
    for key in here.keys() - {"runtime_s"}:
        assert np.array_equal(here[key], there[key], equal_nan=here[key].dtype != object), key
    assert len(seen) == 4 and seen[-1] == (25, 25)


def test_worker_pool_needs_a_worker():
    with pytest.raises(ValueError, match="workers=0"):
        with mlp.worker_pool(0):
            pass


def test_result_shape_and_divergence_cut():
    configs = grid_configs("linear")
    results = mlp.train_many(configs, chunk_size=5)  # chunks of unequal size
    diverged = [r for r in results if r.summary["verdict"] == "diverged"]
    assert diverged
    for r in results:
        assert tuple(r.summary) == SUMMARY_KEYS
        assert r.summary["error"] is None and r.summary["runtime_s"] > 0
        assert r.config["repro"]["device"] == "cpu" and r.config["num_iterations"] == STEPS
        assert r.config["dataset_size"] == 16  # linear: width examples
        n = len(r.history["train/loss"])
        assert all(len(r.history[k]) == n for k in ("lr/input", "lr/output", "train/tokens_seen"))
        assert r.summary["tokens_seen"] == 16 * n
    for r in diverged:
        curve = r.history["train/loss"]
        assert not math.isfinite(curve[-1]) and all(math.isfinite(x) for x in curve[:-1])
        assert r.summary["diverged_at_step"] == len(curve) - 1


def test_matches_autograd_reference():
    torch = pytest.importorskip("torch")
    config = TrainConfig(model_family="mlp", nonlinearity="tanh", lr_input=3.0, lr_output=2.0, num_iterations=20)
    problem = mlp.problem_of(config)
    state = mlp.initial_state(problem)
    w0, w1 = state["w0"].clone(), state["w1"].clone()
    x, y, n = state["x"], state["y"], problem.width
    expected = []
    for _ in range(20):
        w0.requires_grad_(True)
        w1.requires_grad_(True)
        h = torch.tanh(math.sqrt(2) * (x @ w0.T) / math.sqrt(n))
        loss = (((h @ w1.T) / n).squeeze(1) - y).pow(2).mean()
        expected.append(loss.item())
        g0, g1 = torch.autograd.grad(loss, [w0, w1])
        w0, w1 = (w0 - 3.0 * g0).detach(), (w1 - 2.0 * g1).detach()
    got = mlp.train_one(config).history["train/loss"]
    assert np.allclose(got, expected, rtol=1e-12)


def test_deterministic():
    configs = grid_configs("tanh", batch_size=16)[:6]
    a = [r.history["train/loss"] for r in mlp.train_many(configs)]
    b = [r.history["train/loss"] for r in mlp.train_many(configs)]
    assert a == b


def test_minibatch_sequence_shared_and_reproducible():
    problem = mlp.problem_of(TrainConfig(model_family="mlp", batch_size=16, num_iterations=30))
    idx = mlp.minibatch_indices(problem)
    assert idx.shape == (30, 16) and int(idx.max()) < problem.dataset_size
    assert (idx == mlp.minibatch_indices(problem)).all()
    # Same LRs at two positions of a chunk -> identical curves: every point sees the same batches.
    losses = mlp.train_losses(problem, [5.0, 50.0, 5.0], [7.0, 70.0, 7.0], [0.0, 0.0, 0.0])
    assert np.array_equal(losses[0], losses[2])
    assert not np.array_equal(losses[0], losses[1])


def test_dataset_sizes():
    size = lambda **kw: mlp.problem_of(TrainConfig(model_family="mlp", **kw)).dataset_size
    assert size(nonlinearity="tanh") == 272 and size(nonlinearity="relu") == 272
    assert size(nonlinearity="linear") == 16 and size(dataset_size=1) == 1
    assert mlp.problem_of(TrainConfig(model_family="mlp")).steps == 500


def test_init_offset_modes_differ_after_first_step():
    base = dict(model_family="mlp", init_offset=0.05, lr_input=1.0, lr_output=1.0, num_iterations=5)
    once = mlp.train_one(TrainConfig(**base, init_offset_mode="init")).history["train/loss"]
    every = mlp.train_one(TrainConfig(**base, init_offset_mode="every_step")).history["train/loss"]
    assert once[0] == every[0] and once[1:] != every[1:]


def test_summarize_batch_gives_each_curve_its_verdict():
    """Hand-made curves with their verdicts worked out by hand (window 20, threshold 1: trainable when the mean
    of the last 20 losses is below the first loss)."""
    s, nan, inf = 40, np.nan, np.inf
    falling = np.linspace(2.0, 1.0, s)
    dips_then_returns = np.concatenate([np.full(20, 0.5), np.full(20, 1.0)])  # only the last 20 count
    after_inf = falling.copy()
    after_inf[7], after_inf[8:] = inf, 0.1  # what follows the divergence is ignored
    curves = [falling, np.linspace(1.0, 1.5, s), np.ones(s), dips_then_returns, after_inf,
              np.r_[nan, falling[1:]], np.r_[falling[:-1], -inf], np.full(s, 1e307), np.r_[0.0, falling[1:]]]
    out = summarize_batch(np.array(curves), s, window=20, threshold=1.0)
    assert out["verdict"].tolist() == ["trainable", "not_trainable", "not_trainable", "not_trainable", "diverged",
                                       "diverged", "diverged", "not_trainable", "not_trainable"]
    assert out["trainable"].tolist() == [True] + [False] * 8
    assert out["stable"].tolist() == [True, True, True, True, False, False, False, True, True]
    assert out["diverged_at_step"].tolist() == [-1, -1, -1, -1, 7, 0, 39, -1, -1]
    assert out["steps"].tolist() == [40, 40, 40, 40, 8, 1, 40, 40, 40]
    assert out["loss_ratio"][0] == pytest.approx(np.mean(falling[-20:]) / 2.0)
    assert out["loss_ratio"][2] == 1.0  # equal to the threshold: not below it
    assert out["loss_last"][4] == falling[6] and np.isnan(out["loss_first"][5])
    assert out["loss_ratio"][7] == inf and np.isnan(out["loss_ratio"][8])  # sums overflow; a first loss of 0
    assert (out["score"][0] < 0) and (out["score"][1:] > 0).all()  # the sign is the class

def test_non_mlp_config_rejected():
    with pytest.raises(ValueError, match="model_family"):
        mlp.problem_of(TrainConfig())


# ----------------------------------------------------------------------------------------------
# The notebook's weights, data and minibatch stream (values from a JAX 0.4.23 run of the notebook's draws:
# x64, PRNGKey(0) split as the notebook splits it, pre-0.5 threefry)

def notebook_problem(**extra):
    return mlp.problem_of(TrainConfig(model_family="mlp", mlp_weights="notebook", **extra))


def test_notebook_weights_are_the_notebooks_first_entries():
    state = mlp.initial_state(notebook_problem())  # tanh: 272 examples
    # W0[0, :3] of the notebook; here w0 = W0^T
    assert state["w0"][:3, 0].tolist() == [1.8020351263179202, 0.5916661076542855, 2.012225912204863]
    assert state["w1"][0, :3].tolist() == [0.481221237167072, 1.4184654277503403, 0.7514543794111577]
    assert state["x"][0, :3].tolist() == [0.012877245180492047, 1.016514811780042, -0.07164463971493798]
    assert state["y"][:3].tolist() == [-2.3967584431649946, -0.05172164140228051, -0.26390363086539337]
    assert state["x"].shape == (272, 16) and state["y"].shape == (272,)
    # X depends on the dataset size (the notebook draws (N, 16) from one key): not a prefix
    one = mlp.initial_state(notebook_problem(dataset_size=1))
    assert one["x"][0, :3].tolist() == [0.14646465203823308, 0.795768577155017, -0.7818079721942506]
    linear = mlp.initial_state(notebook_problem(nonlinearity="linear"))
    assert linear["x"][0, :3].tolist() == [0.031313708377454855, -1.1436330013292244, -1.066969171739973]
    assert torch_equal(linear["w0"], state["w0"])


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_notebook_minibatch_indices_for_10_steps_are_jaxs():
    # [jax.random.randint(k, (16,), 0, 272) for k in jax.random.split(jax.random.PRNGKey(42), 10)]
    jax_indices = [
        [5, 127, 122, 210, 101, 232, 265, 211, 180, 243, 184, 118, 14, 184, 99, 27],
        [206, 251, 222, 160, 184, 156, 78, 260, 83, 230, 85, 113, 118, 83, 171, 171],
        [228, 78, 189, 108, 244, 152, 234, 227, 224, 169, 228, 125, 241, 174, 232, 83],
        [0, 95, 133, 182, 191, 174, 230, 222, 205, 94, 6, 196, 121, 41, 232, 90],
        [205, 68, 121, 191, 241, 32, 19, 223, 239, 26, 206, 16, 228, 91, 262, 259],
        [42, 178, 244, 114, 50, 228, 219, 227, 243, 221, 7, 210, 207, 231, 134, 249],
        [43, 40, 241, 107, 240, 106, 113, 127, 90, 12, 225, 269, 97, 120, 25, 97],
        [99, 130, 240, 175, 205, 16, 150, 105, 208, 29, 247, 129, 164, 113, 68, 238],
        [215, 224, 256, 163, 50, 147, 195, 15, 135, 181, 142, 126, 241, 218, 15, 267],
        [7, 179, 210, 33, 269, 263, 240, 256, 74, 200, 56, 147, 200, 107, 131, 95],
    ]
    problem = notebook_problem(batch_size=16, num_iterations=10)
    assert mlp.minibatch_indices(problem).tolist() == jax_indices
    # the split depends on the step count: 11 steps give another first batch
    assert mlp.minibatch_indices(notebook_problem(batch_size=16, num_iterations=11))[0].tolist() != jax_indices[0]


@pytest.mark.parametrize("extra, match", [({"width": 8}, "width=8"), ({"dataset_size": 20}, "dataset_size=20"),
                                          ({"seed": 3}, "seed=3")])
def test_notebook_weights_refuse_what_the_notebook_never_drew(extra, match):
    with pytest.raises(ValueError, match=match):
        notebook_problem(**extra)


@pytest.mark.parametrize("kind", [{"nonlinearity": "tanh"}, {"nonlinearity": "tanh", "batch_size": 16},
                                  {"nonlinearity": "tanh", "init_offset_mode": "every_step"}])
def test_whole_block_path_equals_the_slot_path(kind):
    # train_losses_whole is the CUDA path; on the CPU it must give the slot path's curves.
    problem = mlp.problem_of(TrainConfig(model_family="mlp", num_iterations=STEPS, mlp_weights="notebook", **kind))
    xx, yy = np.meshgrid(np.logspace(0.0, 3.0, 5), np.logspace(0.0, 3.0, 5))
    offsets = np.full(xx.size, 0.01 if "init_offset_mode" in kind else 0.0)
    slots = mlp.train_losses(problem, xx.ravel(), yy.ravel(), offsets)
    whole = mlp.train_losses_whole(problem, xx.ravel(), yy.ravel(), offsets)
    assert np.array_equal(np.isfinite(slots), np.isfinite(whole))
    assert np.allclose(slots, whole, rtol=1e-12, atol=0, equal_nan=True)
    summary = summarize_batch(whole, STEPS)
    assert {"trainable", "diverged"} <= set(summary["verdict"])


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device (none here)")
def test_cuda_curves_equal_cpu_curves():
    from dataclasses import replace

    cpu = mlp.problem_of(TrainConfig(model_family="mlp", num_iterations=200, mlp_weights="notebook"))
    xx, yy = np.meshgrid(np.logspace(0.0, 4.0, 12), np.logspace(1.5, 3.0, 12))  # straddles the boundary
    args = (xx.ravel(), yy.ravel(), np.zeros(xx.size))
    here = mlp.train_losses(cpu, *args)
    there = mlp.train_losses(replace(cpu, device="cuda"), *args)
    a, b = summarize_batch(here, 200), summarize_batch(there, 200)
    # cuBLAS sums in another order than the CPU BLAS: curves agree to rounding, verdicts exactly, except
    # that a point on the edge of chaos may amplify the difference (allow one in 144).
    assert np.count_nonzero(a["verdict"] != b["verdict"]) <= 1
    same = a["verdict"] == b["verdict"]
    finite = np.isfinite(here) & np.isfinite(there) & same[:, None]
    assert np.allclose(here[finite], there[finite], rtol=1e-9)
    summary = mlp.train_grid(replace(cpu, device="cuda"), *args)  # automatic chunks on the card
    assert np.array_equal(summary["verdict"], b["verdict"])
