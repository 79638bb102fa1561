"""`fractal-llm zoom`: frame windows, the float64 rule, --centre-from, resume, and --wandb level sweeps."""

import json
import math

import pytest
import yaml

import numpy as np
from test_refine_sweeps import created, disk, runs_of  # noqa: F401  (fixture: wandb.sweep recorded, no server)
from test_sources import Calls, FakeApi

from fractal_llm.paper import paper
from fractal_llm.report import sequence
from fractal_llm.report.fractal import estimate_dimension

from fractal_llm.runners import zoom as zoom_sequence
from fractal_llm.records import read_records
from fractal_llm.sweep import AxisArg, dump_sweep_yaml, load_sweep, new_sweep
from fractal_llm.plans import zoom as zoom_plan
from fractal_llm.plans.zoom import ZoomError, float64_problem, plan_sequence

MLP_FIXED = {"model_family": "mlp", "num_iterations": 8, "trainable_window_steps": 4, "dataset_size": 4,
             "width": 4}


def write_parent(tmp_path, axes, fixed, name="parent"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(dump_sweep_yaml(new_sweep(axes, fixed, name=name)))
    return path


def mlp_parent(tmp_path, n=9):
    # lr_output listed first: x must still be lr_input (the name that sorts first)
    return write_parent(tmp_path, [AxisArg("lr_output", 1e-2, 1e2, n), AxisArg("lr_input", 1e-3, 1e1, n)],
                        MLP_FIXED, name="mlp-parent")


def axis_of(cfg, name):
    return cfg["parameters"][name]["values"]


def test_frame_k_spans_the_parents_log_span_over_2_to_the_k_centred_both_ends_included(tmp_path):
    parent = mlp_parent(tmp_path)
    raw, seq, configs = plan_sequence(str(parent), "0.1,1", None, "1:3", 16)
    assert (seq.x.name, seq.y.name) == ("lr_input", "lr_output")
    assert sorted(configs) == [1, 2, 3] and seq.frames == (1, 2, 3)
    for k, cfg in configs.items():
        xs, ys = axis_of(cfg, "lr_input"), axis_of(cfg, "lr_output")
        assert len(xs) == len(ys) == 16
        assert math.log10(xs[-1] / xs[0]) == pytest.approx(4 / 2 ** k)  # parent x: 4 decades
        assert math.log10(ys[-1] / ys[0]) == pytest.approx(4 / 2 ** k)  # parent y: 4 decades
        assert math.sqrt(xs[0] * xs[-1]) == pytest.approx(0.1) and math.sqrt(ys[0] * ys[-1]) == pytest.approx(1.0)
        assert seq.window(k) == pytest.approx((xs[0], xs[-1], ys[0], ys[-1]))
        fixed = {key: v["value"] for key, v in cfg["parameters"].items() if "value" in v}
        assert fixed == {key: v["value"] for key, v in raw["parameters"].items() if "value" in v}
        assert cfg["name"] == f"mlp-parent-frame_{k:02d}"


def test_a_linear_axis_spans_the_linear_span_and_gpt_sweeps_work(tmp_path):
    parent = write_parent(tmp_path, [AxisArg("matrix_lr", 1e-3, 1e1, 8), AxisArg("warmup_frac", 0.0, 0.4, 8, "lin")],
                          {"model_id": "tiny", "num_iterations": 4}, name="gpt-parent")
    _raw, seq, configs = plan_sequence(str(parent), "0.01,0.2", None, "0:2", 8)
    assert not seq.y.log and seq.x.log
    for k, cfg in configs.items():
        ys = axis_of(cfg, "warmup_frac")
        assert ys[-1] - ys[0] == pytest.approx(0.4 / 2 ** k) and (ys[0] + ys[-1]) / 2 == pytest.approx(0.2)
        assert cfg["parameters"]["model_id"] == {"value": "tiny"}
    frame = tmp_path / "frame.yaml"
    frame.write_text(dump_sweep_yaml(configs[2]))
    assert load_sweep(frame).fixed["num_iterations"] == 4


def test_frames_float64_cannot_place_are_refused_with_the_reason(tmp_path):
    parent = mlp_parent(tmp_path)
    # the parent spans 4 decades: frame 42 is 9.1e-13 decades wide
    with pytest.raises(ZoomError, match="frame 42: lr_input 9.09e-13 decades wide, narrower than float64"):
        plan_sequence(str(parent), "0.1,1", None, "40:44", 16)
    with pytest.raises(ZoomError, match="frame 38: lr_input .*float64 steps of its coordinates"):
        plan_sequence(str(parent), "0.1,1", None, "38:38", 65536)
    plan_sequence(str(parent), "0.1,1", None, "38:38", 16)  # the same frame at 16 values is fine


def test_one_float64_rule_for_paper_mode_and_zoom_sequences():
    # The published deepest tile (tanh-minibatch frame 41, 5.1e-12 decades) is placeable at 4096 pixels, two
    # frames deeper is not; a frame under 1e-12 decades never is.
    assert float64_problem(2.2412214093 - 2.529e-12, 2.2412214093 + 2.529e-12, 4096, log=True) is None
    assert "float64 steps" in float64_problem(2.24 - 6.3e-13, 2.24 + 6.3e-13, 4096, log=True)
    assert "narrower than float64" in float64_problem(1.0, 1.0 + 5e-13, 16, log=True)
    assert "narrower than float64" in float64_problem(1.0, 1.0 + 1e-13, 16, log=False)
    # near log10 = 0 the coordinates are dense but the values are not: the values' own steps decide
    assert "neighbouring values" in float64_problem(-6e-13, 6e-13, 8192, log=True)
    with pytest.raises(paper.PaperError, match="narrower than float64"):
        paper.check_resolvable((1.0, 1.0 + 5e-13, 0.0, 1.0), 16, "w")


def test_centre_from_a_report_is_the_centre_of_its_top_ranked_zoom_box(tmp_path):
    report_dir = tmp_path / "report"
    report_dir.mkdir()
    boxes = [{"rank": 2, "x_range": [1e-3, 1e-1], "y_range": [1.0, 100.0]},
             {"rank": 1, "x_range": [1e-2, 1.0], "y_range": [0.1, 10.0]}]
    (report_dir / "report.json").write_text(json.dumps({"zoom": boxes}))
    _raw, seq, _configs = plan_sequence(str(mlp_parent(tmp_path)), None, str(report_dir), "0:0", 8)
    assert seq.centre == pytest.approx((0.1, 1.0))  # log axes: the geometric middle
    linear = write_parent(tmp_path, [AxisArg("lr_input", 1e-3, 1e1, 8), AxisArg("lr_output", 0.1, 100.0, 8, "lin")],
                          MLP_FIXED, name="linear")
    axes = zoom_plan.parent_axes(load_sweep(linear))
    assert not axes[1].log  # linearly spaced, all > 0: still a linear axis
    assert zoom_plan.centre_from_report(report_dir, *axes) == pytest.approx((0.1, 5.05))
    (report_dir / "report.json").write_text(json.dumps({"zoom": []}))
    with pytest.raises(ZoomError, match="no zoom box"):
        plan_sequence(str(mlp_parent(tmp_path)), None, str(report_dir), "0:0", 8)


def test_a_rerun_resumes_and_trains_nothing(tmp_path, capsys):
    out = tmp_path / "seq"
    args = [str(mlp_parent(tmp_path)), "--centre", "0.1,1", "--frames", "0:1", "--res", "9", "--out", str(out),
            "--workers", "1", "--levels", "1"]
    assert zoom_sequence.main(args) == 0
    first = {k: sorted(p.stat().st_mtime_ns for p in (out / f"frame_{k:02d}").glob("*.json")) for k in (0, 1)}
    assert all(first.values())
    seq = yaml.safe_load((out / "sequence.yaml").read_text())
    assert seq["frames"] == [0, 1] and seq["res"] == 9 and seq["x"]["name"] == "lr_input"
    capsys.readouterr()
    assert zoom_sequence.main(args) == 0
    assert "running" not in capsys.readouterr().out  # no level had a point left to run
    again = {k: sorted(p.stat().st_mtime_ns for p in (out / f"frame_{k:02d}").glob("*.json")) for k in (0, 1)}
    assert again == first  # no record rewritten: nothing trained
    assert {r.name for r in read_records(out / "frame_00")}  # records are the frame's points


def test_another_sequence_in_the_same_directory_is_refused(tmp_path):
    out = tmp_path / "seq"
    parent = str(mlp_parent(tmp_path))
    assert zoom_sequence.main([parent, "--centre", "0.1,1", "--frames", "0:0", "--res", "8", "--out", str(out),
                               "--write-only"]) == 0
    assert zoom_sequence.main([parent, "--centre", "0.2,1", "--frames", "0:0", "--res", "8", "--out", str(out),
                               "--write-only"]) == 2


def test_wandb_frames_are_refined_level_by_level_and_reported_as_one_sequence(tmp_path, created, capsys):
    out = tmp_path / "seq"
    # centred on the edge of test_refine_sweeps.disk: log10(lr_input) = 0.1 + 0.7, log10(lr_output) = -0.1
    args = [str(mlp_parent(tmp_path)), "--centre", f"{10 ** 0.8},{10 ** -0.1}", "--frames", "2:3", "--res", "17",
            "--out", str(out), "--wandb", "--levels", "2", "--entity", "e", "--project", "p"]
    assert zoom_sequence.main(args) == 0
    assert len(created) == 2
    assert "fractal-llm refine: level=0 levels=2 margin=1 lattice=mlp-parent-frame_02" in created[0]["description"]
    assert len(created[0]["parameters"]["grid_point"]["values"]) == 25  # every 4th of 17 values: 5 x 5
    printed = capsys.readouterr().out
    assert "frame_02: fractal-llm agents e/p/lv0" in printed and "frame_03: fractal-llm agents e/p/lv1" in printed
    assert not (out / "frame_02").exists()  # nothing ran here
    calls, runs = Calls(), {"lv0": [], "lv1": []}

    def api():
        return FakeApi({f"lv{k}": cfg for k, cfg in enumerate(created)}, runs, calls)

    assert zoom_sequence.main(args, api=api()) == 0  # the agents have not started: nothing is created twice
    assert len(created) == 2 and capsys.readouterr().out.count("25 points have no verdict yet") == 2
    while True:  # the agents finish every level created so far; each call creates the frames' next levels
        runs.update({f"lv{k}": runs_of(cfg, calls) for k, cfg in enumerate(created) if not runs.get(f"lv{k}")})
        before = len(created)
        assert zoom_sequence.main(args, api=api()) == 0
        if len(created) == before:
            break
    assert capsys.readouterr().out.count("done, 3 level sweep(s)") == 2  # levels 0, 1, 2 of each frame
    assert {k: len(v) for k, v in yaml.safe_load((out / "wandb_sweeps.yaml").read_text()).items()} == {
        "frame_02": 3, "frame_03": 3}

    assert sequence.main(["--sequence", str(out), "--out", str(tmp_path / "report")], api=api()) == 0
    frames = json.loads((tmp_path / "report" / "report.json").read_text())["sequence"]["frames"]
    assert [(f["index"], f["status"]) for f in frames] == [(2, "done"), (3, "done")]
    for f in frames:
        result = json.loads((tmp_path / "report" / f"frame_{f['index']:02d}" / "report.json").read_text())
        xs, ys = result["axes"]["values"]
        truth = np.array([[disk(x, y) for x in xs] for y in ys])
        assert 0 < truth.mean() < 1  # the frame holds the edge
        assert result["runs_used"] == f["runs_used"] < 17 * 17 and result["counts"]["missing"] == 0
        # the refined map's boundary is the disk's at full resolution: the same box counts
        assert result["fractal"]["counts"] == estimate_dimension(truth.astype(float)).to_dict()["counts"]


def test_bad_arguments_are_refused_before_any_run(tmp_path):
    parent = str(mlp_parent(tmp_path))
    for bad, message in ((["--centre", "0.1"], "expected X,Y"), (["--centre", "-1,1"], "> 0"),
                         (["--centre", "0.1,1", "--frames", "3:1"], "0 <= A <= B"),
                         (["--centre", "0.1,1", "--res", "3"], ">= 4")):
        with pytest.raises(ZoomError, match=message):
            plan_sequence(parent, *_split(bad))


def _split(args):
    opts = dict(zip(args[::2], args[1::2]))
    return opts.get("--centre"), None, opts.get("--frames", "0:1"), int(opts.get("--res", 8))
