"""`fractal-llm paper`: argument errors, the paper's zoom sequences and pooled statistic against an independent
JAX run of the notebook, report output, zoom.gif, sweep YAML."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from fractal_llm.paper import mlp

from fractal_llm.paper import paper
from fractal_llm.report.fractal import estimate_dimension, paper_dimension, pooled_paper_dimension


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("argv, match", [
    (["sigmoid"], "CONFIG='sigmoid'"),
    (["tanh", "--res", "3"], "--res=3"),
    (["tanh", "--window", "0:1:2"], "x0:x1:y0:y1"),
    (["tanh", "--window", "a:1:2:3"], "must be numbers"),
    (["tanh", "--window", "2:1:0:1"], "x0=2.0 must be < x1=1.0"),
    (["tanh", "--window", "0:1:1:1"], "y0=1.0 must be < y1=1.0"),
    (["tanh", "--steps", "0"], "--steps=0"),
    (["tanh", "--zoom", "-1"], "--zoom=-1"),
    (["tanh", "--zoom", "2", "--res", "8"], "--zoom needs --res"),
    (["tanh", "--chunk", "-1"], "--chunk=-1"),
    (["tanh", "--workers", "-1"], "--workers=-1"),
    (["tanh", "--frames", "3"], "expected A:B"),
    (["tanh", "--frames", "5:3"], "0 <= A <= B"),
    (["tanh", "--frames", "1:3:0"], "STEP=0"),
    (["tanh", "--frames", "1:2", "--window", "0:1:0:1"], "give one"),
    (["tanh", "--frames", "1:2", "--zoom", "1"], "drop --zoom"),
    (["tanh", "--frames", "1:2", "--res", "16"], "--frames needs --res"),
    # the tile is frame 41 (5.1e-12 decades); frame 44 is 6.3e-13 decades wide
    (["tanh-minibatch", "--frames", "40:44"], "frame 44 of tanh-minibatch: 6.32e-13 decades wide, narrower than float64"),
    (["tanh-minibatch", "--frames", "43:43", "--res", "4096"], "float64 steps of its coordinates"),
    (["tanh", "--window", "1:1.0000000000001:0:1"], "narrower than float64"),
    (["linear", "--frames", "20:25"], "frame 25 of linear is deeper than its centre is known"),
    (["tanh", "--weights", "torch", "--device", "cuda"] if not __import__("torch").cuda.is_available()
     else ["tanh", "--frames", "x:1"], "--device=cuda" if not __import__("torch").cuda.is_available()
     else "must be integers"),
])
def test_bad_arguments_named_before_work(argv, match, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(mlp, "train_grid", lambda *a, **k: pytest.fail("trained before checking arguments"))
    assert paper.main([*argv, "--out", str(tmp_path / "out")]) == 2
    assert match in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(paper.CONFIGS))
def test_sequence_frames_share_the_centre_and_halve_in_width(name):
    seq = paper.CONFIGS[name].sequence
    published = {"linear": (2.2787786522, 0.6791983840, 4.023e-6, 21), "relu": (-0.2383546474, 1.9108561363, 2.145e-6, 22),
                 "tanh-one-point": (1.6839376040, 1.2602310346, 3.696e-6, 21),
                 "tanh-minibatch": (-0.5728404884, 2.2412214093, 5.058e-12, 41),
                 "tanh": (1.1238442669, 2.3018075671, 7.749e-7, 23), "init-offset": (-0.7076069516, 1.5913480399, 6.291e-10, 34)}
    cx, cy, tile_width, tile = published[name]
    for k in (0, 1, tile - 1, tile, tile + 1):
        x0, x1, y0, y1 = seq.window(k)
        assert (x0 + x1) / 2 == pytest.approx(cx, abs=1e-15) and (y0 + y1) / 2 == pytest.approx(cy, abs=1e-15)
        assert x1 - x0 == pytest.approx(tile_width * 2.0 ** (tile - k), rel=1e-9)
        assert y1 - y0 == pytest.approx(x1 - x0, rel=1e-9)
    assert seq.window(tile)[1] - seq.window(tile)[0] == pytest.approx(tile_width, rel=1e-9)
    widest = seq.window(0)[1] - seq.window(0)[0]
    assert 6.0 <= widest < 12.0  # the first frame at least 6 decades wide: half of it is under 6
    assert paper.CONFIGS[name].window == seq.window(tile)  # the default frame is the published tile


def test_pooled_statistic_is_one_median_over_all_frames_slopes():
    # Two hand-made frames: a straight boundary and a ragged one (their slopes differ in number and size).
    straight = np.zeros((64, 64))
    straight[:, :30] = 1.0
    ragged = (np.random.default_rng(4).random((90, 90)) < 0.3).astype(float)
    estimates = [paper_dimension(straight), paper_dimension(ragged)]
    slopes = np.concatenate([e.local_slopes for e in estimates])
    pooled = pooled_paper_dimension(estimates)
    assert pooled.dimension == float(np.median(slopes[np.isfinite(slopes)]))
    assert pooled.n_slopes + pooled.n_dropped == slopes.size and pooled.n_frames == 2
    assert pooled.dimension != pytest.approx(np.median([e.dimension for e in estimates]))  # not a median of medians


def test_frames_match_an_independent_jax_run_of_the_notebook(tmp_path):
    # scripts/paper_reference_jax.py tanh-one-point --frames 20:21 --res 40 --steps 200 (JAX 0.4.23) gave
    # trainable counts 999 and 558, per-frame D 1.1587070551535175 and 0.8735229371739885, pooled D
    # 1.0971205629785787 (not the median of the two: 1.016).
    out = tmp_path / "top"
    assert paper.main(["tanh-one-point", "--frames", "20:21", "--res", "40", "--steps", "200", "--workers", "1",
                       "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    frames = report["zoom_frames"]
    assert [f["frame"] for f in frames] == [20, 21]
    assert [f["counts"]["trainable"] for f in frames] == [999, 558]
    assert [f["paper_dimension"] for f in frames] == pytest.approx([1.1587070551535175, 0.8735229371739885], abs=1e-12)
    assert report["paper"]["pooled_paper_dimension"] == pytest.approx(1.0971205629785787, abs=1e-12)
    assert report["paper"]["pooled_frames"] == [20, 21] and report["paper"]["weights"] == "notebook"
    from PIL import Image

    with Image.open(out / "zoom.gif") as gif:
        assert gif.n_frames == 2
    assert (out / "frame_21" / "report.json").exists()


def test_linear_map_has_smooth_boundary_and_both_classes():
    cfg = paper.CONFIGS["linear"]
    problem = mlp.problem_of(paper.train_config(cfg, steps=200))
    frame = paper.run_frame(cfg, problem, (0.5, 3.0, 0.5, 2.5), 48, chunk=512)
    assert 0 < frame.labels.sum() < frame.labels.size  # both classes
    estimate = estimate_dimension(frame.labels)
    assert estimate.dimension < 1.3, estimate


def test_pixel_curve_retrains_a_pixel_exactly_as_the_batched_frame():
    from fractal_llm.verdict import summarize_losses

    for name, window in (("tanh", (0.0, 4.0, 1.5, 3.0)), ("init-offset", (-1.5, 1.0, 1.0, 2.5))):
        cfg = paper.CONFIGS[name]
        problem = mlp.problem_of(paper.train_config(cfg, steps=120))
        frame = paper.run_frame(cfg, problem, window, 6, chunk=0)
        assert len(set(frame.verdicts.ravel())) >= 2
        for i in range(6):
            for j in range(6):
                curve = paper.pixel_curve(cfg, problem, frame, i, j)
                stats = summarize_losses(curve, 120, problem.window, problem.threshold)
                assert stats["verdict"] == frame.verdicts[i, j], (name, i, j)
                assert stats["score"] == frame.summary["score"][i, j], (name, i, j)


def test_zoom_window_is_half_width_and_centred_on_boundary():
    labels = np.zeros((21, 21))
    labels[:, :7] = 1.0  # vertical boundary between columns 6 and 7
    frame = paper.Frame(window=(0.0, 2.0, 0.0, 2.0), x_values=np.logspace(0, 2, 21), y_values=np.logspace(0, 2, 21),
                        summary={}, labels=labels)
    x0, x1, y0, y1 = paper.zoom_window(frame)
    assert x1 - x0 == pytest.approx(1.0) and y1 - y0 == pytest.approx(1.0)
    assert (x0 + x1) / 2 == pytest.approx(0.65)  # between grid columns 6 (0.6) and 7 (0.7)
    assert (y0 + y1) / 2 == pytest.approx(1.0, abs=0.051)


def test_cli_writes_report_with_zoom_frames(tmp_path):
    out = tmp_path / "lin"
    assert paper.main(["linear", "--res", "24", "--steps", "100", "--window", "0.5:3:0.5:2.5", "--zoom", "1",
                       "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["counts"]) >= {"trainable", "not_trainable", "diverged", "error", "missing"}
    assert report["counts"]["trainable"] > 0 and report["counts"]["diverged"] > 0
    assert "dimension" in report["fractal"]
    frames = report["zoom_frames"]
    assert len(frames) == 2
    w0, w1 = frames[0]["window"], frames[1]["window"]
    assert w1[1] - w1[0] == pytest.approx((w0[1] - w0[0]) / 2)
    assert report["paper"]["paper_dimension_published"] == 1.17


def test_cli_is_deterministic(tmp_path):
    reports = []
    for name in ("a", "b"):
        paper.main(["tanh-one-point", "--res", "8", "--steps", "60", "--out", str(tmp_path / name)])
        reports.append(json.loads((tmp_path / name / "report.json").read_text()))
    assert reports[0]["counts"] == reports[1]["counts"]
    assert reports[0]["point_table"] == reports[1]["point_table"]


def test_write_yaml_is_a_checked_sweep(tmp_path):
    from fractal_llm.sweep import expand_grid, load_sweep

    path = tmp_path / "tanh.yaml"
    assert paper.main(["tanh", "--res", "4", "--steps", "50", "--window", "0:4:1.5:3", "--write-yaml", str(path)]) == 0
    spec = load_sweep(path)
    points = expand_grid(spec)
    assert len(points) == 16
    assert {p["model_family"] for p in points} == {"mlp"} and {p["num_iterations"] for p in points} == {50}
    assert {p["mlp_weights"] for p in points} == {"notebook"}
    params = yaml.safe_load(path.read_text())["parameters"]
    assert params["lr_input"]["values"][0] == pytest.approx(1.0)


def test_init_offset_yaml_ties_the_output_lr_to_the_input_lr(tmp_path):
    from fractal_llm.config import ConfigError, TrainConfig
    from fractal_llm.sweep import expand_grid, load_sweep

    path = tmp_path / "offset.yaml"
    assert paper.main(["init-offset", "--res", "4", "--steps", "40", "--write-yaml", str(path)]) == 0
    points = expand_grid(load_sweep(path))
    assert len(points) == 16 and {p["lr_output"] for p in points} == {-1.0}
    assert {p["init_offset_mode"] for p in points} == {"every_step"} and len({p["init_offset"] for p in points}) == 4
    configs = [TrainConfig(**p) for p in points]
    results = mlp.train_many(configs)
    lrs = [c.lr_input for c in configs]
    tied = mlp.train_losses(mlp.problem_of(configs[0]), lrs, lrs, [c.init_offset for c in configs])
    for result, row in zip(results, tied):
        curve = result.history["train/loss"]
        assert np.array_equal(curve, row[:len(curve)])
        assert result.config["lr_output"] == result.config["lr_input"]  # the record shows the LR used
    with pytest.raises(ConfigError, match="lr_output=-2.0.*-1 for the same LR as lr_input"):
        TrainConfig(model_family="mlp", lr_output=-2.0)


def test_ctrl_c_in_a_terminal_stops_workers_and_parent_cleanly(tmp_path):
    # A terminal's Ctrl-C reaches the whole process group: parent and worker processes.
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = tmp_path / "out"
    # The window where half the points diverge early: a running chunk then finishes in seconds after Ctrl-C.
    proc = subprocess.Popen([sys.executable, "-m", "fractal_llm.paper.paper", "tanh", "--res", "128", "--workers", "2",
                             "--window", "0:4:1.5:3", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:  # wait until the workers have started (the whole grid takes far longer)
        if "worker processes ready" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=180)  # the pool stops its workers at once; slack for a loaded machine
    assert proc.returncode == 130, output
    assert "stopped." in output and "Traceback" not in output
    assert not (out / "report.json").exists()

