"""Grid reconstruction: placement by config values, tolerance, duplicates, errors, missing points, refusals."""

import math
import random

import numpy as np
import pytest

from fractal_llm.report.grid import GridError, build_grid, grid_from_arrays, sweep_axes
from fractal_llm.records import RunRecord

XS = [1e-4, 1e-3, 1e-2, 1e-1, 1.0]  # matrix_lr (sorts first: x)
YS = [1e-5, 1e-4, 1e-3, 1e-2]  # unembedding_lr (y)


def sweep_config(xs=XS, ys=YS, **fixed) -> dict:
    params = {"unembedding_lr": {"values": list(ys)}, "matrix_lr": {"values": list(xs)},
              "num_tokens": {"value": 20000}, "lr_schedule": {"value": "cosine"}}
    params.update({key: {"value": value} for key, value in fixed.items()})
    return {"name": "unit", "method": "grid", "parameters": params}


def record(x, y, verdict="trainable", created_at=0.0, score=None, loss=1.0, **config) -> RunRecord:
    summary = {"verdict": verdict, "score": -10.0 if score is None else score, "loss_last": loss}
    if verdict == "error":
        summary.update(score=None, loss_last=None, error="CUDA out of memory")
    cfg = {"matrix_lr": x, "unembedding_lr": y, "num_tokens": 20000, "lr_schedule": "cosine",
           "repro": {"git": "abc"}, "seed": 0, **config}
    return RunRecord(name=f"{x},{y}", config=cfg, summary=summary, history=None, created_at=created_at,
                     path=f"runs/{x},{y},{created_at}")


def test_axes_sorted_by_name_and_values_ascending():
    cfg = sweep_config(xs=list(reversed(XS)))
    (x, y), fixed = sweep_axes(cfg)
    assert x == ("matrix_lr", XS) and y == ("unembedding_lr", YS)
    assert fixed == {"num_tokens": 20000, "lr_schedule": "cosine"}


def test_shuffled_runs_with_float_noise_are_placed_by_value():
    rng = random.Random(0)
    expected = np.empty((len(YS), len(XS)), dtype=object)
    records = []
    for i, y in enumerate(YS):
        for j, x in enumerate(XS):
            verdict = rng.choice(["trainable", "not_trainable", "diverged"])
            expected[i, j] = verdict
            # The config went through W&B/JSON/str(): a relative error of ~1e-12 must not matter.
            records.append(record(x * (1 + 3e-12), y * (1 - 2e-12), verdict, score=float(10 * i + j),
                                  loss=float(i + j + 1)))
    rng.shuffle(records)
    grid = build_grid(sweep_config(), records)
    assert grid.x_name == "matrix_lr" and grid.y_name == "unembedding_lr"
    assert grid.shape == (4, 5)
    assert (grid.verdicts == expected).all()
    assert np.array_equal(grid.labels, np.where(expected == "trainable", 1.0, 0.0))
    assert grid.scores[2, 3] == 23.0 and grid.final_loss[2, 3] == 6.0
    assert sum(grid.counts.values()) == 20 and grid.counts["missing"] == 0 and grid.counts["error"] == 0
    assert grid.counts["trainable"] == int((expected == "trainable").sum())
    placed = grid.records[grid.record_index[1, 4]]
    assert math.isclose(placed.config["matrix_lr"], 1.0, rel_tol=1e-9)
    assert math.isclose(placed.config["unembedding_lr"], 1e-4, rel_tol=1e-9)


def test_values_outside_tolerance_are_not_placed_but_listed():
    records = [record(1e-4 * 1.001, 1e-5), record(1e-3, 1e-4)]
    grid = build_grid(sweep_config(), records)
    assert grid.verdicts[0, 0] == "missing" and grid.verdicts[1, 1] == "trainable"
    assert len(grid.skipped) == 1 and "not a point of this grid" in grid.skipped[0]


def test_duplicates_latest_non_error_wins():
    records = [
        record(1e-3, 1e-4, "not_trainable", created_at=20.0),  # latest non-error: wins
        record(1e-3, 1e-4, "trainable", created_at=10.0),
        record(1e-3, 1e-4, "error", created_at=30.0),  # newer, but an error never hides a result
    ]
    grid = build_grid(sweep_config(), records)
    assert grid.verdicts[1, 1] == "not_trainable"
    assert grid.record_index[1, 1] == 0
    assert grid.counts["error"] == 0


def test_errors_and_missing_points():
    records = [record(1e-4, 1e-5, "error", created_at=1.0), record(1e-4, 1e-5, "error", created_at=5.0),
               record(1e-2, 1e-3, "diverged", score=3.0), record(1.0, 1e-2, "trainable")]
    grid = build_grid(sweep_config(), records)
    assert grid.verdicts[0, 0] == "error" and math.isnan(grid.labels[0, 0])
    assert grid.record_index[0, 0] == 1  # the latest error run, to show its message
    assert grid.labels[2, 2] == 0.0 and grid.labels[3, 4] == 1.0
    assert grid.counts == {"trainable": 1, "not_trainable": 0, "diverged": 1, "error": 1, "pending": 0,
                           "missing": 17}
    assert np.isnan(grid.labels).sum() == 18
    assert grid.trainable_fraction() == 0.5


def test_a_run_without_verdict_is_a_hole_or_pending_by_its_state():
    crashed, running, error = record(1e-4, 1e-5), record(1e-3, 1e-5), record(1e-2, 1e-5, "error", created_at=1.0)
    crashed.summary, crashed.state = {}, "crashed"
    running.summary, running.state = {}, "running"
    later = record(1e-2, 1e-5, created_at=2.0)  # a re-run (refill) in flight at an error's point
    later.summary, later.state = {}, "running"
    grid = build_grid(sweep_config(), [crashed, running, error, later])
    assert list(grid.verdicts[0, :3]) == ["missing", "pending", "pending"]
    assert grid.record_index[0, 0] == 0  # the hole keeps its run, to name its state
    assert grid.counts["pending"] == 2 and grid.counts["error"] == 0 and np.isnan(grid.labels[0, :3]).all()


def test_a_result_beats_a_run_in_flight_at_its_point():
    running = record(1e-4, 1e-5, created_at=5.0)
    running.summary, running.state = {}, "running"
    grid = build_grid(sweep_config(), [running, record(1e-4, 1e-5, "diverged", created_at=1.0)])
    assert grid.verdicts[0, 0] == "diverged" and grid.counts["pending"] == 0


def test_mismatched_fixed_parameter_is_refused_with_names_and_values():
    records = [record(1e-4, 1e-5), record(1e-3, 1e-5, num_tokens=50000)]
    records[1].name = "the-odd-one"
    with pytest.raises(GridError) as info:
        build_grid(sweep_config(), records)
    message = str(info.value)
    assert "the-odd-one" in message and "num_tokens" in message and "50000" in message and "20000" in message


def test_fixed_floats_compare_with_tolerance_and_derived_lrs_are_accepted():
    cfg = sweep_config(weight_decay=0.1, embedding_lr=-1.0)
    ok = [record(1e-4, 1e-5, weight_decay=0.1 * (1 + 1e-12), embedding_lr=1e-3)]  # resolved embedding LR
    assert build_grid(cfg, ok).counts["trainable"] == 1
    with pytest.raises(GridError, match="weight_decay"):
        build_grid(cfg, [record(1e-4, 1e-5, weight_decay=0.2)])
    with pytest.raises(GridError, match="lr_schedule"):
        build_grid(cfg, [record(1e-4, 1e-5, lr_schedule="constant")])


def test_run_without_an_axis_key_is_refused():
    broken = record(1e-4, 1e-5)
    del broken.config["unembedding_lr"]
    with pytest.raises(GridError, match="unembedding_lr"):
        build_grid(sweep_config(), [broken])


def test_sweep_config_needs_two_numeric_axes():
    cfg = sweep_config()
    cfg["parameters"]["seed"] = {"values": [0, 1]}
    with pytest.raises(GridError, match="3 axes.*exactly 2 parameters"):
        build_grid(cfg, [])
    cfg = sweep_config(ys=["a", "b"])
    with pytest.raises(GridError, match="unembedding_lr.*must be a number"):
        build_grid(cfg, [])


def test_grid_from_arrays_paper_mode():
    trainable = np.full((3, 4), "not_trainable", dtype=object)
    trainable[:, :2] = "trainable"
    grid = grid_from_arrays("lr_input", "lr_output", [0.1, 1, 10, 100], [0.1, 1, 10], trainable,
                            scores=np.arange(12.0).reshape(3, 4), fixed={"nonlinearity": "tanh"})
    assert grid.counts == {"trainable": 6, "not_trainable": 6, "diverged": 0, "error": 0, "pending": 0,
                           "missing": 0}
    assert grid.labels[0, 0] == 1.0 and grid.labels[0, 3] == 0.0 and grid.records == []
    verdicts = np.array([["trainable", "diverged"], ["missing", "error"]], dtype=object)
    grid = grid_from_arrays("a", "b", [1, 2], [1, 2], verdicts, np.zeros((2, 2)))
    assert np.isnan(grid.labels[1]).all() and grid.counts["missing"] == 1 and grid.counts["error"] == 1
    with pytest.raises(GridError, match="shape"):
        grid_from_arrays("a", "b", [1, 2, 3], [1, 2], verdicts, np.zeros((2, 2)))
    with pytest.raises(GridError, match="converged"):
        grid_from_arrays("a", "b", [1, 2], [1, 2], np.array([["converged"] * 2] * 2), np.zeros((2, 2)))


def test_error_record_without_config_is_placed_by_its_point_name():
    """The local runner writes {config: {}} when a worker process dies; its name still says where."""
    lost = RunRecord(name="matrix_lr=0.01,unembedding_lr=0.001", config={}, summary={"verdict": "error"},
                     history=None, created_at=1.0)
    nameless = RunRecord(name="garbage", config={}, summary={"verdict": "error"}, history=None, created_at=1.0)
    grid = build_grid(sweep_config(), [lost, nameless, record(1e-4, 1e-5)])
    assert grid.verdicts[2, 2] == "error" and grid.counts["error"] == 1
    assert len(grid.skipped) == 1 and grid.skipped[0].startswith("garbage")


def test_runs_of_two_base_model_versions_are_not_merged_silently():
    def run_of(lr_m, lr_u, base, resolved_key=False):
        r = record(lr_m, lr_u)
        repro = {"base_model": base}
        if resolved_key:  # a W&B run: the resolved config is nested under "resolved"
            r.config["resolved"] = {"repro": repro}
        else:
            r.config["repro"] = repro
        return r

    runs = [run_of(1e-4, 1e-5, "wandb:e/p/d20:v3"), run_of(1e-3, 1e-5, "wandb:e/p/d20:v4", resolved_key=True)]
    with pytest.raises(GridError, match=r"2 base models.*d20:v3 \(1 runs\), wandb:e/p/d20:v4 \(1 runs\)"):
        build_grid(sweep_config(), runs)
    grid = build_grid(sweep_config(), runs, allow_mixed_base=True)
    assert grid.counts["missing"] == grid.labels.size - 2
    build_grid(sweep_config(), [run_of(1e-4, 1e-5, "tiny:x"), run_of(1e-3, 1e-5, "tiny:x")])  # one model: fine


def test_runs_of_two_dataset_commits_are_not_merged_silently():
    runs = [record(1e-4, 1e-5), record(1e-3, 1e-5), record(1e-2, 1e-5)]
    for r, commit in zip(runs, ("aaa", "bbb", "aaa")):
        r.config["repro"] = {"base_model": "tiny:x", "dataset": f"org/sft@{commit}"}
    with pytest.raises(GridError, match=r"2 datasets in one map \(repro.dataset\): org/sft@aaa \(2 runs\), "
                                        r"org/sft@bbb \(1 runs\)"):
        build_grid(sweep_config(), runs)
    assert build_grid(sweep_config(), runs, allow_mixed_base=True).counts["missing"] == len(XS) * len(YS) - 3


def test_a_run_records_the_base_model_and_dataset_it_loaded(tiny_base):
    from fractal_llm.config import TrainConfig
    from fractal_llm.report.grid import repro_of
    from fractal_llm.records import record_from_result
    from fractal_llm.train import train
    result = train(TrainConfig(matrix_lr=0.01, max_seq_len=192, device_batch_size=2, num_iterations=2))
    recorded = record_from_result(result, "x")
    assert repro_of(recorded, "base_model") == f"tiny:{tiny_base.name}"
    assert repro_of(recorded, "dataset") == TrainConfig().dataset_id  # the shipped docqa data: no commit


def test_a_deep_frame_places_every_run_in_its_own_cell():
    """Neighbouring axis values 1e-9 apart (relative), far closer than the 1e-6 tolerance: each run still
    lands at its nearest value, and a run halfway between two values is not placed."""
    xs = [0.3 * (1 + k * 1e-9) for k in range(8)]
    ys = [2e-3 * (1 + k * 1e-9) for k in range(6)]
    truth = np.array([[i + j < 7 for j in range(8)] for i in range(6)])
    records = [record(x, y, "trainable" if truth[i, j] else "not_trainable", score=float(10 * i + j))
               for i, y in enumerate(ys) for j, x in enumerate(xs)]
    random.Random(1).shuffle(records)
    grid = build_grid(sweep_config(xs=xs, ys=ys), records)
    assert grid.counts["missing"] == 0 and grid.skipped == []
    assert np.array_equal(grid.labels, truth.astype(float))
    assert all(grid.scores[i, j] == 10 * i + j for i in range(6) for j in range(8))
    between = build_grid(sweep_config(xs=xs, ys=ys), [record(0.5 * (xs[2] + xs[3]), ys[0])])
    assert len(between.skipped) == 1 and between.counts["missing"] == 48


def test_an_adaptive_maps_trainable_fraction_counts_its_inferred_pixels():
    """The runs of an adaptive map crowd the boundary; the map's fraction counts every pixel by its class."""
    from fractal_llm.report.grid import apply_refinement
    from fractal_llm.refine.levels import RefinePlan, refine
    n = 33
    xs, ys = [10.0 ** (k / 8) for k in range(n)], [10.0 ** (-k / 8) for k in range(n)]
    u, v = np.meshgrid(np.arange(n), np.arange(n))
    truth = (u - 16) ** 2 + (v - 16) ** 2 < 12 ** 2  # a disk: trainable inside
    known = refine(RefinePlan((n, n), levels=2, margin=1),
                   lambda points: {p: "trainable" if truth[p] else "not_trainable" for p in points})
    records = [record(xs[j], ys[i], verdict) for (i, j), verdict in known.items()]
    grid = build_grid(sweep_config(xs=xs, ys=ys), records)
    apply_refinement(grid, levels=2, margin=1)
    assert grid.counts["inferred"] > 0 and np.array_equal(grid.labels, truth.astype(float))
    assert grid.trainable_fraction() == pytest.approx(truth.mean())
    ran = np.array([truth[p] for p in known])
    assert grid.run_trainable_fraction() == pytest.approx(ran.mean()) != pytest.approx(truth.mean())
