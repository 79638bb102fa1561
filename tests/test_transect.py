"""Transects: the 1-D scale analysis against known answers, the plan's checks, and the command end to end."""

import json

import numpy as np
import pytest
import yaml

from fractal_llm.cli import main as cli
from fractal_llm.plans.transect import TransectError, axes_for, parse_through, plan_transect, read_transect
from fractal_llm.plans.zoom import ZoomError, plan_sequence
from fractal_llm.report.transect import analyse_line, analyse_transect
from fractal_llm.report.uncertainty import precision_floor, uncertainty_exponent
from fractal_llm.sweep import load_sweep

N = 4096


@pytest.fixture(scope="module")
def short_smoke(tmp_path_factory):
    """sweeps/smoke.yaml at 10 steps of 4 rows (the fewest that keep a border along unembedding_lr at matrix_lr
    = 1 on the test base): the commands' tests train many points, each should be cheap."""
    cfg = yaml.safe_load(open("sweeps/smoke.yaml"))
    cfg["parameters"].update(num_iterations={"value": 10}, device_batch_size={"value": 4},
                             trainable_window_steps={"value": 3})
    path = tmp_path_factory.mktemp("parent") / "smoke_short.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def weierstrass(x: np.ndarray, hurst: float, base: float = 2.0, terms: int = 40) -> np.ndarray:
    """A Weierstrass-type function of Hölder exponent `hurst`: its graph has dimension 2 - hurst, and a
    level cuts it in a set of dimension 1 - hurst."""
    return sum(base ** (-hurst * k) * np.cos(base ** k * np.pi * x + k) for k in range(terms))


def test_smooth_line_has_flat_crossings_and_exponent_one():
    x = np.linspace(0, 1, N)
    r = 1 + 0.3 * np.sin(2 * np.pi * 3 * x)
    s = analyse_line(r < 1, r, step=1 / N)
    assert s.crossings[0] == s.crossings[5] == 5.0
    assert abs(s.line_dimension) < 0.02
    assert abs(s.roughness_exponent - 1) < 0.01
    assert s.crossover is not None  # smooth down to the finest spacing


@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.7])
def test_weierstrass_line_gives_its_known_exponents(hurst):
    w = weierstrass(np.linspace(0, 1, N), hurst)
    s = analyse_line(w < np.median(w), w, step=1 / N)
    assert abs(s.roughness_exponent - hurst) < 0.03
    assert abs(s.line_dimension - (1 - hurst)) < 0.08
    assert s.interval[0] < 1 - hurst + 0.08 and s.interval[1] > 1 - hurst - 0.08
    assert s.crossover is None  # rough at the finest spacing


def test_references_bracket_a_rough_line():
    w = weierstrass(np.linspace(0, 1, 1024), 0.5)
    t = analyse_transect(w < np.median(w), w, step=1 / 1024, threshold=float(np.median(w)))
    assert abs(t.noise.line_dimension - 1) < 0.1 and abs(t.noise.roughness_exponent) < 0.1
    assert abs(t.smooth.roughness_exponent - 1) < 0.05
    d = t.to_dict()
    assert d["border_dimension"] == pytest.approx(1 + d["line_dimension"])
    assert d["crossings"][0][0] == pytest.approx(1 / 1024)


def test_through_outside_the_window_is_refused():
    spec = load_sweep("sweeps/smoke.yaml")
    along, held = axes_for(spec, "matrix_lr")
    with pytest.raises(ZoomError, match=r"outside the parent sweep's window, matrix_lr in \[0.001, 1000\]"):
        parse_through("1e9,1e9", along, held)
    assert parse_through("unembedding_lr=0.5", along, held) == {"unembedding_lr": 0.5}
    with pytest.raises(TransectError, match="not an axis"):
        parse_through("seed=1", along, held)
    with pytest.raises(ZoomError, match="outside the parent sweep's window"):
        plan_sequence("sweeps/smoke.yaml", "1e9,1e9", None, "0:1", 8)


def test_plan_is_centred_evenly_spaced_and_holds_the_other_axis():
    t, cfg = plan_transect("sweeps/smoke.yaml", "matrix_lr", (1.0, 0.03), span=0.5, points=64)
    values = np.log10(cfg["parameters"]["matrix_lr"]["values"])
    assert len(values) == 64 and np.allclose(np.diff(values), 0.5 / 63)
    assert values.mean() == pytest.approx(0.0, abs=1e-12)
    assert cfg["parameters"]["unembedding_lr"] == {"value": 0.03}
    with pytest.raises(TransectError, match="--points=8"):
        plan_transect("sweeps/smoke.yaml", "matrix_lr", (1.0, 0.03), span=0.5, points=8)


def test_transect_runs_resumes_and_reports(tiny_base, short_smoke, tmp_path, capsys):
    out = tmp_path / "line"
    args = ["transect", str(short_smoke), "--through", "1,0.03", "--along", "matrix_lr", "--span", "0.3",
            "--points", "32", "--out", str(out), "--workers", "1"]
    assert cli(args + ["--limit", "20"]) == 0
    assert cli(["report", "--local", str(out), "--out", str(tmp_path / "r0")]) == 2  # 12 points still missing
    assert "12 of 32 points have no result yet" in capsys.readouterr().err
    assert cli(args) == 0
    assert "ran 12 of 32 points" in capsys.readouterr().out
    assert cli(["report", "--local", str(out), "--out", str(tmp_path / "r")]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    t = report["transect"]
    assert report["kind"] == "transect" and report["points"] == 32
    assert [round(s, 6) for s, _ in t["crossings"]] == [round(0.3 / 31 * 2 ** k, 6) for k in range(5)]
    assert set(t) >= {"line_dimension", "interval", "roughness_exponent", "crossover", "smooth_reference",
                      "shuffled_labels"}
    assert (tmp_path / "r" / "line.png").exists() and (tmp_path / "r" / "scaling.png").exists()
    assert read_transect(out).through == (1.0, 0.03)


def test_through_one_coordinate_bisects_the_other(tiny_base, short_smoke, tmp_path, capsys):
    out = tmp_path / "line"
    args = ["transect", str(short_smoke), "--through", "matrix_lr=1", "--along", "matrix_lr", "--span", "0.3",
            "--points", "32", "--out", str(out), "--bisect-steps", "2", "--limit", "1", "--workers", "1"]
    assert cli(args) == 0
    first = read_transect(out).through
    runs = capsys.readouterr().out.count("unembedding_lr=")
    assert first[0] == 1.0 and 0.001 < first[1] < 3000
    assert runs >= 11  # a scan of 9 values, two halvings
    assert cli(args) == 0  # a re-run keeps the line where it was and trains no bisection point again
    assert read_transect(out).through == first
    assert "loss ratio" not in capsys.readouterr().out.split("transect:")[0].replace("bisecting", "")


def test_uncertainty_exponent_tells_smooth_from_riddled():
    rng = np.random.default_rng(0)
    eps = [1e-3, 3e-3, 1e-2, 3e-2]
    xy = rng.uniform(-0.5, 0.5, size=(4000, 2))
    step = rng.choice([-1, 1], size=(4000, 2))
    smooth_class = lambda p: (p.sum(axis=-1) > 0).astype(float)  # noqa: E731 (a straight border)
    moved = np.stack([smooth_class(xy + e * step) for e in eps], axis=1)
    u = uncertainty_exponent(eps, smooth_class(xy), moved)
    assert abs(u["alpha"] - 1) < 0.15 and u["interval"][0] < 1 < u["interval"][1] + 0.15
    assert abs(u["dimension"] - 1) < 0.15
    noise = rng.integers(0, 2, size=(4000, len(eps) + 1)).astype(float)  # a riddled border: flips at every eps
    assert abs(uncertainty_exponent(eps, noise[:, 0], noise[:, 1:])["alpha"]) < 0.05


def test_precision_floor_is_the_largest_spacing_rounding_reaches():
    structure = [[0.001, 0.0004], [0.002, 0.001], [0.004, 0.003]]
    floor = precision_floor([1.0, 1.01], [1.0008, 1.0092], [1, 0], [1, 0], structure)
    assert floor["mean_change"] == pytest.approx(0.0008) and floor["floor"] == 0.002 and floor["flips"] == 0
    assert precision_floor([1.0], [1.0], [1], [0], structure) | {"floor": None, "flips": 1} == \
        precision_floor([1.0], [1.0], [1], [0], structure)


def test_perturb_runs_part_of_a_study_and_resumes(tiny_base, short_smoke, tmp_path, capsys):
    line = tmp_path / "line"
    assert cli(["transect", str(short_smoke), "--through", "1,0.03", "--along", "matrix_lr", "--span", "0.3",
                "--points", "32", "--out", str(line), "--limit", "1", "--workers", "1"]) == 0
    study = tmp_path / "study"
    args = ["perturb", str(line), "--out", str(study), "--points", "8", "--eps", "1e-6,1e-2", "--rounding-sample",
            "2", "--limit", "3", "--workers", "1"]
    assert cli(args) == 0
    first = json.loads((study / "uncertainty.json").read_text())
    assert first["runs"] == 8 * 3 + 2 * 2 and first["finished"] == 3
    assert cli(args) == 0
    assert json.loads((study / "uncertainty.json").read_text())["finished"] == 6
    assert "alpha" in (study / "uncertainty.md").read_text()
    double = load_sweep(study / "float64" / "sweep.yaml")
    assert double.fixed["dtype"] == "float64" and len(double.points) == 2
    assert cli(args[:-4] + ["--seed", "1"]) == 2  # another study in the same --out: refused before any run
    assert "another perturbation study" in capsys.readouterr().err


def test_through_from_a_reports_zoom_box_and_the_scope_it_holds_for(tiny_base, short_smoke, tmp_path, capsys):
    report_dir = tmp_path / "smoke_report"
    report_dir.mkdir()
    boxes = [{"rank": 2, "x_range": [0.01, 0.1], "y_range": [0.1, 1.0]},
             {"rank": 1, "x_range": [1.0, 4.0], "y_range": [0.01, 0.04]}]
    (report_dir / "report.json").write_text(json.dumps({"zoom": boxes}))
    out = tmp_path / "line"
    assert cli(["transect", str(short_smoke), "--through-from", str(report_dir), "--along", "matrix_lr",
                "--span", "0.3", "--points", "32", "--out", str(out), "--limit", "1", "--workers", "1"]) == 0
    assert read_transect(out).through == pytest.approx((2.0, 0.02))
    assert cli(["transect", str(short_smoke), "--along", "matrix_lr", "--span", "0.3", "--out", str(out)]) == 2
    assert "one of --through and --through-from" in capsys.readouterr().err


def test_a_paper_mode_line_through_a_fractal_border(tmp_path, one_torch_thread):
    """Sohl-Dickstein's tanh one-point border (D 1.41 in the paper, 1.36 on its tile here, docs/paper.md): a
    512-point line through the centre of its zoom sequence, 1 decade of lr_input, 500 steps of GD."""
    parent = tmp_path / "paper.yaml"
    assert cli(["paper", "tanh-one-point", "--write-yaml", str(parent), "--res", "32", "--frames", "10:10"]) == 0
    centre = f"{10 ** 1.6839376040!r},{10 ** 1.2602310346!r}"  # the sequence's centre (plans in log10 units)
    line = tmp_path / "line"
    assert cli(["transect", str(parent), "--through", centre, "--along", "lr_input", "--span", "1",
                "--points", "512", "--out", str(line), "--workers", "1"]) == 0
    assert cli(["report", "--local", str(line), "--out", str(tmp_path / "r")]) == 0
    t = json.loads((tmp_path / "r" / "report.json").read_text())["transect"]
    assert 0.25 < t["line_dimension"] < 0.5  # measured 0.32: D = 1.32
    assert t["interval"][0] > 0.1 and t["interval"][1] < 0.7  # rough, and far from noise's 1
    smooth = t["smooth_reference"]["line_dimension"]  # None: the smoothed ratio crosses no more (no border)
    assert (smooth is None or abs(smooth) < 0.1) and t["shuffled_labels"]["line_dimension"] > 0.8
