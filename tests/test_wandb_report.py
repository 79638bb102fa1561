"""`fractal-llm report --wandb`: the W&B Report (report/wandb_report.py) built offline from the package's own
objects (never saved: that needs a server), the dimension a too-coarse map does not log, and --watch's
artifact versions (only when points changed, at most every --wandb-every minutes, and the last state)."""

import numpy as np
import wandb
import wandb_workspaces.reports.v2 as wr

from fractal_llm.report import report as report_command
from fractal_llm.report.fractal import estimate_dimension
from fractal_llm.report.report import map_of, run
from fractal_llm.report.sources import load_sources
from fractal_llm.report.wandb_report import build_report, interval_sentence
from fractal_llm.report.writer import write_report
from test_report import offline_wandb, table_rows, write_local_sweep  # noqa: F401 (a fixture)
from wandb_offline import offline_runs


def test_the_report_holds_the_boundary_the_runs_by_verdict_neighbours_and_the_dimension(tmp_path):
    sweep_dir = write_local_sweep(tmp_path / "sweep", n=8, name="wavy")
    loaded = load_sources([], [str(sweep_dir)])
    grid = map_of(loaded, loaded.sweep_config, False)
    for k, record in enumerate(grid.records):  # as the W&B runs of a synced map have
        record.run_id = f"run{k}"
    report = write_report(grid, tmp_path / "out", title="Trainability report: wavy", zoom_k=0)
    page = build_report(report, grid, entity="ent", project="proj", report_run_id="rep1", map_group="wavy")
    assert (page.entity, page.project, page.title) == ("ent", "proj", "Trainability report: wavy")
    grids = [b for b in page.blocks if isinstance(b, wr.PanelGrid)]
    boundary, scatter, curves = grids
    (media,) = boundary.panels
    assert isinstance(media, wr.MediaBrowser) and media.media_keys == ["report/boundary"]  # what WandbReport logs
    assert boundary.runsets[0].filters == "Metric(\"ID\") == 'rep1'"
    (plot,) = scatter.panels
    assert isinstance(plot, wr.ScatterPlot) and plot.log_x and plot.log_y
    assert (plot.x, plot.y) == (wr.Config("resolved.matrix_lr"), wr.Config("resolved.unembedding_lr"))
    (runs,) = scatter.runsets
    assert runs.groupby == ["config.verdict"] and "Metric(\"Group\") == 'wavy'" in runs.filters
    assert {key.keys[0].value for key in scatter.custom_run_colors} >= {"trainable", "not_trainable", "diverged"}
    (lines,) = curves.panels
    assert isinstance(lines, wr.LinePlot) and lines.y == ["train/loss"] and lines.x == "step"
    neighbours = [i.strip(" '") for i in curves.runsets[0].filters.split(" in ")[1].strip("[]").split(",")]
    verdicts = {r.run_id: r.verdict for r in grid.records}
    assert len(neighbours) == 6 and [verdicts[i] == "trainable" for i in neighbours] == [True, False] * 3
    headings = [b.text for b in page.blocks if isinstance(b, wr.H2)]
    assert headings[-1] == "Fractal dimension of the boundary"
    assert page.blocks[-1].text.startswith("too coarse to estimate a dimension")  # an 8x8 map


def test_the_dimension_comes_with_its_interval():
    u, v = np.meshgrid(np.linspace(0, 1, 96), np.linspace(0, 1, 96))
    fractal = estimate_dimension((v < 0.5 + 0.2 * np.sin(9 * u)).astype(float)).to_dict()
    d, unc = fractal["dimension"], fractal["uncertainty"]
    assert not fractal["too_coarse"]
    assert interval_sentence({"fractal": fractal}) == f"D = {d:.3f} ± {unc:.3f}; interval {d - unc:.3f} to {d + unc:.3f}"


def test_a_too_coarse_map_logs_no_dimension_and_the_report_needs_a_server(tmp_path, offline_wandb, capsys):
    """Before: fractal/dimension was logged as 0 (the rough hint of a 6x6 map)."""
    sweep_dir = write_local_sweep(tmp_path / "sweep", n=6, name="small")
    report = run(["--local", str(sweep_dir), "--out", str(tmp_path / "out"), "--zoom", "0", "--wandb"])
    assert report["fractal"]["too_coarse"]
    wandb.teardown()  # the run file is written by wandb's service process: whole once it shuts down
    (logged,) = offline_runs(tmp_path / "wandb").values()
    assert logged["summary"]["fractal/too_coarse"] is True and logged["group"] == "small"  # the map's group
    assert "fractal/dimension" not in logged["summary"] and "fractal/uncertainty" not in logged["summary"]
    assert offline_wandb[0].metadata["dimension"] is None
    assert "W&B Report: not created (offline" in capsys.readouterr().out


def watch_local(tmp_path, monkeypatch, *flags) -> list:
    """--watch --wandb on a local map whose missing points get records one per refresh (4 refreshes)."""
    row = [(3, j) for j in range(4)]
    sweep_dir = write_local_sweep(tmp_path / "sweep", n=4, name="live", missing=set(row))
    ticks = []

    def tick(seconds):  # between refreshes one more point finishes
        ticks.append(seconds)
        write_local_sweep(sweep_dir, n=4, name="live", missing=set(row[len(ticks):]))

    monkeypatch.setattr(report_command.time, "sleep", tick)
    run(["--local", str(sweep_dir), "--out", str(tmp_path / "out"), "--zoom", "0", "--watch", "5", "--wandb",
         *flags], refreshes=4)
    return ticks


def test_watch_versions_the_artifact_at_most_every_n_minutes_and_logs_the_last_state(tmp_path, monkeypatch,
                                                                                     offline_wandb):
    """Before: a new version at every refresh where a point finished (here 4 of 4)."""
    assert len(watch_local(tmp_path, monkeypatch)) == 3  # default --wandb-every: 10 minutes
    assert len(offline_wandb) == 2  # the first refresh, and the last state when the session ends
    assert [sum(row[2] == "missing" for row in table_rows(a)["data"]) for a in offline_wandb] == [4, 1]


def test_watch_with_wandb_every_0_versions_each_refresh_where_points_changed(tmp_path, monkeypatch, offline_wandb):
    watch_local(tmp_path, monkeypatch, "--wandb-every", "0")
    assert [sum(row[2] == "missing" for row in table_rows(a)["data"]) for a in offline_wandb] == [4, 3, 2, 1]
