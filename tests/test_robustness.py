"""Dynamics or noise: thresholds re-labelled from records, the noise floor, and the report's section."""

import json
import math

import numpy as np
import pytest

from fractal_llm.report import robustness
from fractal_llm.report.grid import build_grid
from fractal_llm.records import RunRecord
from fractal_llm.sweep import AxisArg, new_sweep

N = 32
FIXED = {"model_family": "mlp", "num_iterations": 10}


def ratio_grid(n=N):
    """A map whose loss ratio grows left to right, 0.8 .. 1.2: each threshold puts the boundary elsewhere."""
    cfg = new_sweep([AxisArg("lr_input", 0.1, 10.0, n), AxisArg("lr_output", 0.1, 10.0, n)], FIXED, name="ratio")
    xs, ys = cfg["parameters"]["lr_input"]["values"], cfg["parameters"]["lr_output"]["values"]
    records = []
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            ratio = 0.8 + 0.4 * j / (n - 1) + 0.01 * math.sin(i)
            verdict = "trainable" if ratio < 1.0 else "not_trainable"
            records.append(RunRecord(name=f"p{i}-{j}", config={**FIXED, "lr_input": x, "lr_output": y},
                                     summary={"verdict": verdict, "stable": True, "loss_ratio": ratio,
                                              "score": -1.0 if verdict == "trainable" else 1.0},
                                     history=None, created_at=0.0))
    return build_grid(cfg, records)


def test_threshold_rows_change_with_the_threshold_and_1_0_is_the_map():
    rob = robustness.robustness_of(ratio_grid())
    rows = {row["threshold"]: row for row in rob["thresholds"]}
    assert sorted(rows) == [0.9, 1.0, 1.1]
    assert rows[0.9]["trainable"] < rows[1.0]["trainable"] < rows[1.1]["trainable"]
    assert rows[1.0]["changed"] == 0.0 and rows[0.9]["changed"] > 0.1 and rows[1.1]["changed"] > 0.1
    assert all(row["edge_pixels"] > 0 for row in rows.values())


def test_a_diverged_or_unstable_run_is_never_trainable_at_any_threshold():
    assert robustness.trainable_at({"verdict": "diverged", "stable": False, "loss_ratio": None}, 1.1) is False
    assert robustness.trainable_at({"verdict": "not_trainable", "stable": True, "loss_ratio": 1.05}, 1.1) is True
    assert robustness.trainable_at({"verdict": "error", "stable": False}, 1.1) is None


def test_noise_floor_shuffled_labels_give_d_near_2_and_a_smooth_level_set_near_1_at_64():
    rng = np.random.default_rng(1)
    labels = np.zeros((64, 64))
    labels[:, 32:] = 1.0  # a straight boundary: shuffling it must make noise
    shuffled = robustness.shuffled_labels(labels)
    assert shuffled.sum() == labels.sum()  # the same labels, elsewhere
    assert robustness.dimensions(shuffled)["dimension"] == pytest.approx(2.0, abs=0.1)
    smooth = robustness.dimensions(robustness.smooth_labels((64, 64)))
    assert smooth["dimension"] == pytest.approx(1.0, abs=0.15)
    np.testing.assert_array_equal(robustness.shuffled_labels(labels), shuffled)  # fixed seed
    del rng


def test_every_report_carries_robustness_in_json_and_markdown(tmp_path):
    from fractal_llm.report.writer import write_report
    report = write_report(ratio_grid(), tmp_path, title="t", zoom_k=0)
    rob = report["robustness"]
    assert [row["threshold"] for row in rob["thresholds"]] == [0.9, 1.0, 1.1]
    assert rob["noise_floor"]["shuffled"]["seed"] == 0
    text = (tmp_path / "report.md").read_text()
    assert "## Dynamics or noise" in text and "smooth level set" in text


def test_window_k_is_recomputed_from_the_stored_curves():
    # the loss climbs, then falls late: the mean of the last 5 is below the first loss, of the last 10 not
    curve = [1.0, 3.0, 3.0, 3.0, 3.0, 3.0, 0.3, 0.3, 0.3, 0.3, 0.3]
    record = RunRecord(name="p", config={**FIXED, "num_iterations": len(curve), "trainable_loss_ratio_threshold": 1.0},
                       summary={"verdict": "trainable"}, history={"train/loss": curve}, created_at=0.0)
    assert robustness.relabel_window([record], 5) == {"p": "trainable"}
    assert robustness.relabel_window([record], 10) == {"p": "not_trainable"}


def test_flip_share_counts_pixels_decided_in_both():
    a = np.array([[1.0, 0.0], [np.nan, 1.0]])
    b = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert robustness.flip_share(a, b) == pytest.approx(1 / 3)


def test_the_study_script_runs_each_variant_once_and_a_rerun_trains_nothing(tmp_path):
    import importlib.util
    from pathlib import Path

    from fractal_llm.sweep import dump_sweep_yaml
    path = Path(__file__).resolve().parents[1] / "scripts" / "study_robustness.py"
    spec = importlib.util.spec_from_file_location("study_robustness", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    frame = tmp_path / "frame.yaml"
    fixed = {"model_family": "mlp", "num_iterations": 8, "trainable_window_steps": 4, "dataset_size": 4, "width": 4}
    frame.write_text(dump_sweep_yaml(new_sweep([AxisArg("lr_input", 0.1, 1e3, 12), AxisArg("lr_output", 0.1, 1e3, 12)],
                                               fixed, name="f")))
    out = tmp_path / "study"
    args = [str(frame), "--out", str(out), "--res", "6", "--workers", "1", "--seeds", "0,1", "--steps", "4,8",
            "--windows", "2"]
    assert study.main(args) == 0
    result = json.loads((out / "study.json").read_text())
    assert [r["variant"] for r in result["seeds"]] == ["seed 0", "seed 1"]
    assert [r["variant"] for r in result["budget"]] == ["4 steps", "8 steps"] and result["window"][0]["variant"] == "K = 2"
    assert result["seeds"][0]["flip_vs_reference"] == 0.0 and result["budget"][1]["flip_vs_reference"] == 0.0
    # seed 0 at its own 8 steps is one variant, shared by the seed and budget checks: 3 record directories
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["seed0-steps4", "seed0-steps8", "seed1-steps8"]
    assert all(r["trainable"] + r["not_trainable"] == 36 for r in result["seeds"])
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*.json")}
    assert study.main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.json")} == before


def test_an_adaptive_maps_inferred_pixels_are_filled_again_at_each_threshold():
    from fractal_llm.report.grid import apply_refinement
    from fractal_llm.refine.levels import RefinePlan, refine

    full = ratio_grid()
    records = {(i, j): full.records[full.record_index[i, j]] for i in range(N) for j in range(N)}
    ran = refine(RefinePlan((N, N), 3, 1), lambda points: {p: records[p].summary["verdict"] for p in points})
    adaptive = build_grid({"name": "ratio", "parameters": {
        "lr_input": {"values": full.x_values}, "lr_output": {"values": full.y_values},
        **{k: {"value": v} for k, v in FIXED.items()}}}, [records[p] for p in ran])
    apply_refinement(adaptive, 3, 1)
    assert adaptive.counts["inferred"] > 0
    np.testing.assert_array_equal(robustness.threshold_labels(adaptive, 1.0), adaptive.labels)
    at_09 = robustness.threshold_labels(adaptive, 0.9)
    truth = robustness.threshold_labels(full, 0.9)
    decided = ~np.isnan(at_09)
    np.testing.assert_array_equal(at_09[decided], truth[decided])  # never the old class where it is wrong
    assert np.isnan(at_09).sum() > 0  # the moved boundary left the refined band: undecided there, not guessed
