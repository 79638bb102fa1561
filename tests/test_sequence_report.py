"""`fractal-llm report --sequence`: one report over a zoom sequence (real mlp runs, and known shapes)."""

import json
import math

import numpy as np
import pytest

from fractal_llm.report import report as report_command

from fractal_llm.report import sequence as sequence_report

from fractal_llm.plans import zoom as zoom_plan
from fractal_llm.runners import zoom as zoom_sequence
from fractal_llm.report.fractal import paper_dimension, pooled_paper_dimension
from fractal_llm.records import RunRecord, record_name, write_record
from fractal_llm.sweep import AxisArg, dump_sweep_yaml, load_sweep, new_sweep

MLP_FIXED = {"model_family": "mlp", "num_iterations": 20, "trainable_window_steps": 5, "dataset_size": 4, "width": 4}


def parent(tmp_path, fixed=MLP_FIXED, n=24):
    path = tmp_path / "parent.yaml"
    path.write_text(dump_sweep_yaml(new_sweep([AxisArg("lr_input", 0.1, 1e3, n), AxisArg("lr_output", 0.1, 1e3, n)],
                                              fixed, name="p")))
    return path


def test_a_small_mlp_sequence_reports_every_frame_the_pooled_d_its_interval_and_a_pending_frame(tmp_path):
    out, seq_dir = tmp_path / "report", tmp_path / "seq"
    common = [str(parent(tmp_path)), "--centre", "1,22", "--res", "24", "--out", str(seq_dir), "--workers", "1"]
    assert zoom_sequence.main([*common, "--frames", "0:3", "--write-only"]) == 0
    assert zoom_sequence.main([*common, "--frames", "0:2"]) == 0  # frame 3 stays without records
    assert report_command.main(["--sequence", str(seq_dir), "--out", str(out)]) == 0
    result = json.loads((out / "report.json").read_text())["sequence"]
    frames = {f["index"]: f for f in result["frames"]}
    assert sorted(frames) == [0, 1, 2, 3] and result["pending"] == [3]
    assert frames[3]["status"] == "pending" and frames[3]["dimension"] is None
    seq = zoom_plan.read_sequence(seq_dir)
    for k in (0, 1, 2):
        f = frames[k]
        assert f["window"] == pytest.approx(list(seq.window(k))) and f["resolution"] == 24
        assert 0 < f["runs_used"] <= 24 * 24 and (out / f"frame_{k:02d}" / "score_map.png").is_file()
        frame_report = json.loads((out / f"frame_{k:02d}" / "report.json").read_text())
        assert f["dimension"] == frame_report["fractal"]["dimension"]
        assert "robustness" in frame_report
    low, high = result["interval"]
    assert low <= result["pooled_dimension"] <= high
    assert result["pooled_frames"] == [0, 1, 2]
    assert (out / "zoom.gif").is_file() and (out / "scale_slopes.png").is_file()
    text = (out / "report.md").read_text()
    assert "Pending (no records yet): frames 3" in text and "## Dynamics or noise" in text
    # a frame whose adaptive levels still have points to run is drawn but never pooled
    next(iter((seq_dir / "frame_02").glob("*=*.json"))).unlink()
    assert report_command.main(["--sequence", str(seq_dir), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "report.json").read_text())["sequence"]
    assert again["in_progress"] == [2] and again["pooled_frames"] == [0, 1]
    assert {f["index"]: f["status"] for f in again["frames"]} == {0: "done", 1: "done", 2: "in progress", 3: "pending"}
    assert "In progress (drawn, not pooled): frames 2" in (tmp_path / "again" / "report.md").read_text()


def write_known_frames(tmp_path, labels_of, frames="0:2", res=32):
    """A sequence whose frames' records come from labels_of(x, y) (no training): a shape known in advance."""
    fixed = {"model_family": "mlp", "num_iterations": 10}
    seq_dir = tmp_path / "seq"
    assert zoom_sequence.main([str(parent(tmp_path, fixed)), "--centre", "10,10", "--frames", frames,
                               "--res", str(res), "--out", str(seq_dir), "--write-only"]) == 0
    seq = zoom_plan.read_sequence(seq_dir)
    for k in seq.frames:
        spec = load_sweep(seq_dir / f"frame_{k:02d}.yaml")
        frame_dir = seq_dir / f"frame_{k:02d}"
        frame_dir.mkdir()
        (frame_dir / "sweep.yaml").write_text(dump_sweep_yaml(spec.raw))
        (xn, xs), (yn, ys) = spec.axes
        for x in xs:
            for y in ys:
                trainable = labels_of(x, y)
                write_record(RunRecord(name=record_name({xn: x, yn: y}), config={**fixed, xn: x, yn: y},
                                       summary={"verdict": "trainable" if trainable else "not_trainable",
                                                "stable": True, "loss_ratio": 0.5 if trainable else 1.5,
                                                "score": -1.0 if trainable else 1.0},
                                       history=None, created_at=0.0), frame_dir)
    return seq_dir


def test_a_straight_boundary_is_d_1_pooled_with_paper_modes_function(tmp_path):
    seq_dir = write_known_frames(tmp_path, lambda x, y: math.log10(y) - 1 < 0.3 * (math.log10(x) - 1))
    result = sequence_report.write_sequence_report(seq_dir, tmp_path / "out")["sequence"]
    # at 32² the paper's box sizes (10 .. 31) hold 2-5 partly-edge boxes: single slopes swing from 0 to 5, the
    # pooled median stays near 1 and the interval is wide
    assert result["pooled_dimension"] == pytest.approx(1.0, abs=0.15)
    low, high = result["interval"]
    assert low <= result["pooled_dimension"] <= high
    grids = [f.grid for f in sequence_report.load_frames(seq_dir, zoom_plan.read_sequence(seq_dir))]
    assert result["pooled_dimension"] == pooled_paper_dimension([paper_dimension(g.labels) for g in grids]).dimension
    assert [f["paper_dimension"] for f in result["frames"]] == [paper_dimension(g.labels).dimension for g in grids]
    # at threshold 1.1 every record (ratio 0.5 or 1.5) keeps its class: the same pooled D
    rows = {r["threshold"]: r["pooled_dimension"] for r in result["robustness"]["thresholds"]}
    assert rows[0.9] == rows[1.0] == rows[1.1] == pytest.approx(result["pooled_dimension"])
    # the paper method's floors at 32² (box sizes 10 .. 31) are poor: a disc far from 1; the report
    # shows them so that a map's pooled D is read against them
    assert result["robustness"]["shuffled"] > result["robustness"]["map"]


def test_the_bootstrap_is_fixed_by_its_seed_and_narrows_with_agreeing_frames():
    same = [np.array([1.0, 1.01, 0.99, 1.0])] * 4
    spread = [np.array([1.0, 1.2]), np.array([1.5, 1.7]), np.array([1.1, np.nan])]
    assert sequence_report.bootstrap_interval(same) == sequence_report.bootstrap_interval(same)
    low, high = sequence_report.bootstrap_interval(same)
    assert 0.98 <= low <= high <= 1.02
    low2, high2 = sequence_report.bootstrap_interval(spread)
    assert high2 - low2 > high - low
