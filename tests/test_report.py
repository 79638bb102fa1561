"""The report: every file from a local sweep dir, report.json contents, compare, --wandb, big arrays."""

import json
from pathlib import Path

import numpy as np
import pytest

from fractal_llm.report.grid import GridError, build_grid, grid_from_arrays
from fractal_llm.verdict import from_trainable
from fractal_llm.records import RunRecord, error_summary, point_name, write_record
from fractal_llm.report.compare import compare_reports
from fractal_llm.report.writer import write_report
from fractal_llm.report.report import main, run
from fractal_llm.report.sources import local_source
from fractal_llm.sweep import MODULE_COMMAND, axis_values, dump_sweep_yaml, load_sweep
from fractal_llm.verdict import summarize_losses

STEPS = 25
IMAGES = ("score_map.png", "final_loss.png", "boundary.png", "box_counting.png", "loss_curves.png", "overview.png")


def write_local_sweep(directory: Path, n: int = 16, shift: float = 0.0, name: str = "local",
                      errors=(), missing=()) -> Path:
    """A local runner's directory: sweep.yaml + one record per point (real summaries of synthetic curves).
    Trainable below a wavy diagonal; `shift` moves it; `errors`/`missing` are (i, j) points."""
    cfg = {"name": name, "method": "grid", "command": list(MODULE_COMMAND),
           "metric": {"name": "score", "goal": "minimize"},
           "parameters": {"matrix_lr": {"values": axis_values(1e-4, 1.0, n)},
                          "unembedding_lr": {"values": axis_values(1e-5, 0.1, n)},
                          "num_tokens": {"value": 20000}}}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sweep.yaml").write_text(dump_sweep_yaml(cfg))
    xs, ys = cfg["parameters"]["matrix_lr"]["values"], cfg["parameters"]["unembedding_lr"]["values"]
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            if (i, j) in missing:
                continue
            margin = n - (i + j) + 2 * np.sin(i * 1.7) + shift * n
            t = np.arange(STEPS)
            if margin > 0:
                losses = list(3.0 * np.exp(-0.05 * t) + 0.3 / margin)
            elif margin > -3:
                losses = list(3.0 + 0.01 * t)
            else:
                losses = list(3.0 * 2.0 ** t[:8]) + [float("inf")]
            summary = summarize_losses(losses, STEPS)
            summary.update(tokens_seen=1000, runtime_s=0.1, error=None)
            if (i, j) in errors:
                summary = error_summary("RuntimeError: CUDA out of memory", 0.5)
            point = {"matrix_lr": x, "unembedding_lr": y}
            write_record(RunRecord(name=point_name(point), config={**point, "num_tokens": 20000, "seed": 0},
                                   summary=summary, history={"train/loss": losses}, created_at=100.0), directory)
    return directory


def test_report_from_local_dir_writes_every_file(tmp_path):
    sweep_dir = write_local_sweep(tmp_path / "sweep", errors={(0, 0), (5, 5)}, missing={(15, 15), (3, 9)})
    out = tmp_path / "out"
    assert main(["--local", str(sweep_dir), "--out", str(out), "--zoom", "2", "--zoom-res", "8"]) == 0
    for name in ("report.md", "report.json") + IMAGES:
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["error"] == 2 and report["counts"]["missing"] == 2
    assert sum(report["counts"].values()) == 256
    assert set(report["counts"]) == {"trainable", "not_trainable", "diverged", "error", "pending", "missing"}
    for key in ("dimension", "uncertainty", "too_coarse", "box_sizes", "counts", "local_slopes", "fit_range"):
        assert key in report["fractal"]
    assert report["fractal"]["too_coarse"] is True  # a 16x16 grid never gets a confident D
    assert report["axes"]["names"] == ["matrix_lr", "unembedding_lr"]
    assert len(report["axes"]["values"][0]) == 16 and report["fixed"] == {"num_tokens": 20000}
    assert len(report["point_table"]["verdict"]) == 256
    assert {h["error"] for h in report["holes"] if h["outcome"] == "error"} == {"RuntimeError: CUDA out of memory"}
    assert sorted(h["state"] for h in report["holes"]) == ["error", "error", "no run", "no run"]
    assert 0 < len(report["zoom"]) <= 2
    for box in report["zoom"]:
        assert load_sweep(box["yaml_path"]).name.startswith("local-zoom")
    text = (out / "report.md").read_text()
    assert "too coarse" in text and "score_map.png" in text and "zoom/local-zoom1.yaml" in text
    assert "| error | 2 |" in text and "CUDA out of memory" in text


def test_report_numbers_match_the_grid(tmp_path):
    sweep_dir = write_local_sweep(tmp_path / "sweep", n=12)
    cfg, records = local_source(sweep_dir)
    grid = build_grid(cfg, records)
    report = write_report(grid, tmp_path / "out", title="numbers", sweep_config=cfg, zoom_k=0)
    assert report["counts"] == grid.counts
    assert report["trainable_fraction"] == pytest.approx(grid.counts["trainable"] / 144)
    assert report["zoom"] == [] and not (tmp_path / "out" / "zoom").exists()


def test_an_adaptive_report_gives_the_maps_trainable_fraction_and_the_runs_apart(tmp_path):
    from fractal_llm.report.grid import apply_refinement
    from fractal_llm.refine.levels import RefinePlan, refine
    n = 17
    sweep_dir = write_local_sweep(tmp_path / "full", n=n)
    cfg, records = local_source(sweep_dir)
    full = build_grid(cfg, records)
    truth = full.verdicts
    known = refine(RefinePlan((n, n), levels=1, margin=0), lambda points: {p: truth[p] for p in points})
    ran = [records[full.record_index[p]] for p in known]
    grid = build_grid(cfg, ran)
    apply_refinement(grid, levels=1, margin=0)
    assert grid.counts["inferred"] > 0 and np.array_equal(grid.labels, full.labels)
    report = write_report(grid, tmp_path / "out", title="adaptive", sweep_config=cfg, zoom_k=0)
    assert report["trainable_fraction"] == pytest.approx(full.trainable_fraction())
    runs = report["trainable_fraction_of_runs"]
    assert runs == pytest.approx(grid.counts["trainable"] / len(ran)) != pytest.approx(report["trainable_fraction"])
    assert f"among the points that ran: {runs:.1%}" in (tmp_path / "out" / "report.md").read_text()
    assert "trainable_fraction_of_runs" not in write_report(full, tmp_path / "full_out", title="full", zoom_k=0)


def test_large_array_grid_reports_a_dimension(tmp_path):
    """Paper mode: arrays, no records, no sweep config; above the pcolormesh size (imshow path)."""
    n = 300
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    trainable = v < 0.5 + 0.15 * np.sin(9 * u) + 0.05 * np.sin(61 * u)
    scores = np.where(trainable, -100.0 * (1 + u), 50.0 * (1 + v))
    grid = grid_from_arrays("lr_input", "lr_output", np.logspace(-2, 2, n), np.logspace(-2, 2, n), from_trainable(trainable), scores)
    report = write_report(grid, tmp_path / "paper", title="paper mode", zoom_k=2)
    assert report["fractal"]["too_coarse"] is False and 0.9 < report["fractal"]["dimension"] < 1.6
    assert len(report["zoom"]) == 2 and all(box["yaml_path"] == "" for box in report["zoom"])
    assert all((tmp_path / "paper" / name).is_file() for name in IMAGES)
    text = (tmp_path / "paper" / "report.md").read_text()
    assert "D = " in text and "no sweep config" in text


def test_array_grid_draws_loss_curves_of_neighbours_across_the_boundary(tmp_path):
    """Paper mode has no records: the report asks curve_at(i, j) for the cells it plots."""
    trainable = np.zeros((8, 8), dtype=bool)
    trainable[:, :3] = True  # boundary between columns 2 and 3
    scores = np.where(trainable, -1.0, 1.0)
    grid = grid_from_arrays("lr_input", "lr_output", np.logspace(0, 1, 8), np.logspace(0, 1, 8), from_trainable(trainable), scores)
    asked = []

    def curve_at(i, j):
        asked.append((i, j))
        return [1.0, 0.5, 0.25] if trainable[i, j] else [1.0, 2.0, float("inf")]

    write_report(grid, tmp_path / "out", title="curves", curve_at=curve_at, zoom_k=0)
    assert len(asked) == 6  # three pairs, one trainable and one failing cell each
    assert {j for _, j in asked} == {2, 3} and sum(trainable[i, j] for i, j in asked) == 3


def test_compare_two_local_sweeps(tmp_path):
    a = build_grid(*local_source(write_local_sweep(tmp_path / "cosine", name="cosine")))
    b = build_grid(*local_source(write_local_sweep(tmp_path / "constant", shift=-0.3, name="constant")))
    result = compare_reports(a, b, tmp_path / "cmp", labels=("cosine", "constant"))
    for name in ("compare.json", "compare.md", "compare.png"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    assert result["delta_trainable_fraction"] == pytest.approx(b.trainable_fraction() - a.trainable_fraction())
    assert result["delta_trainable_fraction"] < 0  # the boundary moved towards fewer trainable points
    assert result["agreement"]["only cosine"] > 0 and result["agreement"]["only constant"] == 0
    assert "not meaningful" in result["delta_dimension_note"]  # 16x16: too coarse on both sides
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["cosine"]["counts"] == a.counts
    other_axes = grid_from_arrays("matrix_lr", "seed", a.x_values, a.y_values, from_trainable(a.labels == 1), a.scores)
    with pytest.raises(GridError, match="seed"):
        compare_reports(a, other_axes, tmp_path / "bad")


def test_compare_tells_two_deep_frames_apart(tmp_path):
    """Axis values 1e-9 apart (relative): a frame shifted by one value is not the same axes."""
    values = [0.3 * (1 + k * 1e-9) for k in range(9)]
    trainable = np.tri(8, dtype=bool)
    a = grid_from_arrays("matrix_lr", "unembedding_lr", values[:8], values[:8], from_trainable(trainable),
                         np.where(trainable, -1.0, 1.0))
    shifted = grid_from_arrays("matrix_lr", "unembedding_lr", values[1:], values[:8], from_trainable(trainable),
                               np.where(trainable, -1.0, 1.0))
    assert compare_reports(a, a, tmp_path / "same")["delta_trainable_fraction"] == 0
    with pytest.raises(GridError, match="the values must match"):
        compare_reports(a, shifted, tmp_path / "shifted")


def test_cli_compare_local(tmp_path):
    a = write_local_sweep(tmp_path / "a", n=8, name="a")
    b = write_local_sweep(tmp_path / "b", n=8, shift=0.2, name="b")
    report = run(["--local", str(a), "--compare-local", str(b), "--out", str(tmp_path / "out"), "--zoom", "0"])
    assert report["compare"]["labels"] == ["a", "b"]
    assert (tmp_path / "out" / "compare" / "compare.md").is_file()


def test_wandb_summary_run_offline(tmp_path, offline_wandb):
    sweep_dir = write_local_sweep(tmp_path / "sweep", n=8)
    run(["--local", str(sweep_dir), "--out", str(tmp_path / "out"), "--zoom", "0", "--wandb"])
    offline_runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 1 and list(offline_runs[0].glob("*.wandb"))


def test_no_source_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        run([])
    assert "at least one source" in capsys.readouterr().err


def test_the_command_names_itself_fractal_llm_report(capsys):
    from fractal_llm.cli import main as cli_main
    with pytest.raises(SystemExit):
        cli_main(["report", "--help"])
    assert capsys.readouterr().out.startswith("usage: fractal-llm report")


def test_default_out_dir_is_reports_out_name(tmp_path, monkeypatch):
    sweep_dir = write_local_sweep(tmp_path / "sweep", n=6, name="tiny-sweep")
    monkeypatch.chdir(tmp_path)
    run(["--local", str(sweep_dir), "--zoom", "0"])
    assert (tmp_path / "reports" / "out" / "tiny-sweep" / "report.json").is_file()


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """The real wandb client, offline, writing only under tmp_path; yields the artifacts runs log."""
    import wandb

    for key, sub in (("WANDB_DIR", ""), ("WANDB_DATA_DIR", "data"), ("WANDB_CACHE_DIR", "cache"),
                     ("WANDB_ARTIFACT_DIR", "artifacts"), ("WANDB_CONFIG_DIR", "config")):
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    logged = []
    real = wandb.sdk.wandb_run.Run.log_artifact

    def log_artifact(self, artifact, *args, **kwargs):
        logged.append(artifact)
        return real(self, artifact, *args, **kwargs)

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log_artifact", log_artifact)
    wandb.teardown()  # wandb reads its directories once per process setup: start one for this test's
    yield logged
    wandb.teardown()


def table_rows(artifact) -> dict:
    """The points table as it lies in the artifact (columns and rows of its JSON file)."""
    return json.loads(Path(artifact.manifest.entries["points.table.json"].local_path).read_text())


def offline_run_files(tmp_path) -> list[Path]:
    return list((tmp_path / "wandb").glob("offline-run-*/*.wandb"))


def test_wandb_report_is_an_artifact_with_the_directory_and_every_point(tmp_path, offline_wandb):
    sweep_dir = write_local_sweep(tmp_path / "sweep", n=6, name="tagged", missing={(0, 0)})
    report = run(["--local", str(sweep_dir), "--out", str(tmp_path / "out"), "--zoom", "0", "--wandb",
                  "--wandb-project", "proj"])
    (artifact,) = offline_wandb
    assert artifact.type == "report" and artifact.name.startswith("report-tagged")
    entries = set(artifact.manifest.entries)
    assert {"report.md", "report.json", *(f"{name}.png" for name in report["images"])} <= entries
    table = table_rows(artifact)
    assert table["columns"] == ["matrix_lr", "unembedding_lr", "verdict", "score", "final_loss", "run_id", "run"]
    assert len(table["data"]) == 36 and sum(row[2] == "missing" for row in table["data"]) == 1
    assert len(offline_run_files(tmp_path)) == 1  # one report run


def test_a_table_of_16384_points_goes_into_the_artifact_whole(tmp_path, offline_wandb):
    """run.log cut a wandb.Table at 10,000 rows: a 128x128 map came out with 10,000 of its 16,384."""
    from fractal_llm.report.report import WandbReport
    from fractal_llm.report.sources import Loaded
    n = 128
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n))
    trainable = v < 0.5 + 0.2 * np.sin(7 * u)
    grid = grid_from_arrays("lr_input", "lr_output", np.logspace(-2, 2, n), np.logspace(-2, 2, n),
                            from_trainable(trainable), np.where(trainable, -1.0, 1.0), name="big")
    report = write_report(grid, tmp_path / "out", title="big", zoom_k=0)
    wandb_report = WandbReport(Loaded({}, [], lambda record: {}, "big"), project="proj")
    artifact = wandb_report.log(report, tmp_path / "out", grid)
    wandb_report.finish()
    rows = table_rows(artifact)["data"]
    assert len(rows) == n * n and sum(row[2] == "trainable" for row in rows) == int(trainable.sum())


def test_a_map_above_the_artifact_table_limit_goes_in_as_a_whole_csv(tmp_path, offline_wandb, monkeypatch):
    import wandb
    monkeypatch.setattr(wandb.Table, "MAX_ARTIFACT_ROWS", 20)  # the real one is 200,000 (wandb 0.31)
    sweep_dir = write_local_sweep(tmp_path / "sweep", n=6, name="csv")
    run(["--local", str(sweep_dir), "--out", str(tmp_path / "out"), "--zoom", "0", "--wandb"])
    (artifact,) = offline_wandb
    assert "points.table.json" not in artifact.manifest.entries
    lines = Path(artifact.manifest.entries["points.csv"].local_path).read_text().splitlines()
    assert lines[0] == "matrix_lr,unembedding_lr,verdict,score,final_loss,run_id,run" and len(lines) == 1 + 36


def test_bad_local_dir_is_a_clean_error(tmp_path, capsys):
    assert main(["--local", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "no sweep.yaml" in capsys.readouterr().err
