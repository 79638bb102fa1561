"""Sources: local directories and the W&B public API (against counting fakes with wandb.apis.public's shapes)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from fractal_llm.report.grid import build_grid
from fractal_llm.report.plots import boundary_pairs
from fractal_llm.records import RunRecord, file_name, record_name, write_record
from fractal_llm.report.report import main as run_main
from fractal_llm.report.report import run as run_report
from fractal_llm.report.writer import write_report
from fractal_llm.report.sources import ApiSettings, SourceError, local_source, parse_timestamp, wandb_source
from fractal_llm.sweep import MODULE_COMMAND, axis_values
from test_report import offline_wandb, table_rows  # noqa: F401  (a fixture, used by name)

N = 64
STEPS = 30


class Calls:
    def __init__(self):
        self.sweep = 0
        self.pages = 0
        self.history = 0
        self.runs_kwargs = []


class FakeRun:
    """wandb.apis.public.Run as a non-lazy listing gives it: id, name, config, summary_metrics (plain dict),
    summary (wrapper), state, created_at (ISO string), scan_history(keys=...). history() is the sampled,
    expensive path and must never be called."""

    def __init__(self, calls: Calls, run_id: str, config: dict, summary: dict, state: str, created_at: str,
                 losses: list[float]):
        self._calls, self._losses = calls, losses
        self.id, self.name, self.config, self.state, self.created_at = run_id, f"run-{run_id}", config, state, \
            created_at
        self.summary_metrics = summary
        self.lastHistoryStep = len(losses) - 1
        self._updated_at = created_at  # the server's updatedAt column (filterable, not in the run fragment)

    @property
    def summary(self):  # HTTPSummary in wandb; we read summary_metrics (same data, a plain dict)
        return dict(self.summary_metrics)

    def history(self, *args, **kwargs):
        raise AssertionError("run.history() samples 500 points and costs a query per run: never use it")

    def scan_history(self, keys=None, page_size=1000, min_step=0, max_step=None):
        self._calls.history += 1
        assert keys == ["train/loss"]
        return iter([{"train/loss": v, "_step": i} for i, v in enumerate(self._losses)])


class FakeRuns:
    """Paginator: each page of per_page runs is one API call."""

    def __init__(self, calls: Calls, runs: list[FakeRun], per_page: int):
        self._calls, self._runs, self._per_page = calls, runs, per_page

    def __iter__(self):
        for start in range(0, len(self._runs), self._per_page):
            self._calls.pages += 1
            yield from self._runs[start:start + self._per_page]


class FakeSweep:
    def __init__(self, config: dict):
        self.config, self.state, self.expected_run_count = config, "FINISHED", N * N

    @property
    def runs(self):
        raise AssertionError("sweep.runs pages 10 runs at a time: use api.runs(..., filters={'sweep': id})")


class FakeApi:
    """The server's side of wandb.Api: sweep configs by id (one config serves every id when given a dict
    with "parameters"), run listings filtered as the server filters them ({"sweep": id}, or that and an
    updatedAt $gt ISO time)."""

    def __init__(self, sweep_config: dict, runs_by_sweep: dict[str, list[FakeRun]], calls: Calls):
        self._config, self._runs, self.calls = sweep_config, runs_by_sweep, calls

    def sweep(self, path=""):
        self.calls.sweep += 1
        configs = self._config if "parameters" not in self._config else {}
        return FakeSweep(configs.get(path.split("/")[-1], self._config))

    def runs(self, path=None, filters=None, order="+created_at", per_page=50, include_sweeps=False, lazy=True):
        self.calls.runs_kwargs.append(dict(path=path, filters=filters, per_page=per_page, lazy=lazy,
                                           include_sweeps=include_sweeps))
        parts = filters.get("$and", [filters])
        runs = self._runs[parts[0]["sweep"]]
        for part in parts[1:]:
            since = parse_timestamp(part["updatedAt"]["$gt"])
            runs = [run for run in runs if parse_timestamp(run._updated_at) > since]
        return FakeRuns(self.calls, runs, per_page)


def fake_sweep_config(n: int = N) -> dict:
    return {"name": "fake", "method": "grid", "command": list(MODULE_COMMAND),
            "metric": {"name": "score", "goal": "minimize"},
            "parameters": {"matrix_lr": {"values": axis_values(1e-4, 1.0, n)},
                           "unembedding_lr": {"values": axis_values(1e-5, 0.1, n)},
                           "num_tokens": {"value": 20000}}}


def fake_runs(calls: Calls, cfg: dict, skip=lambda i, j: False) -> list[FakeRun]:
    xs, ys = cfg["parameters"]["matrix_lr"]["values"], cfg["parameters"]["unembedding_lr"]["values"]
    runs = []
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            if skip(i, j):
                continue
            trainable = i + j + 3 * math.sin(i / 3) < len(xs)
            losses = [3.0 * (0.95 ** t if trainable else 1.01 ** t) for t in range(STEPS)]
            summary = {"verdict": "trainable" if trainable else "not_trainable", "score": -1.0 if trainable else 1.0,
                       "loss_last": losses[-1], "_runtime": 3.0, "_step": STEPS - 1}
            config = {"matrix_lr": x, "unembedding_lr": y, "num_tokens": 20000, "seed": 0}
            runs.append(FakeRun(calls, f"r{i:02d}{j:02d}", config, summary, "finished",
                                "2026-11-20T10:00:00Z", losses))
    return runs


def test_64x64_sweep_costs_a_handful_of_calls_and_no_history():
    calls = Calls()
    cfg = fake_sweep_config()
    api = FakeApi(cfg, {"sw123": fake_runs(calls, cfg)}, calls)
    sweep_config, records, history_of = wandb_source("ent/proj/sw123", api=api)
    assert len(records) == N * N
    # One sweep query and one listing (non-lazy: config and summary come with each page) at the settings'
    # page size, read through once; no history.
    assert calls.sweep == 1 and len(calls.runs_kwargs) == 1 and calls.history == 0
    kwargs = calls.runs_kwargs[0]
    assert kwargs["path"] == "ent/proj" and kwargs["filters"] == {"sweep": "sw123"}
    assert kwargs["lazy"] is False and kwargs["per_page"] == ApiSettings().page_size
    first = records[0]
    assert first.source == "wandb" and first.history is None and first.path == "ent/proj/r0000"
    assert first.name == "matrix_lr=0.0001,unembedding_lr=1e-05"
    assert first.created_at == parse_timestamp("2026-11-20T10:00:00+00:00")
    grid = build_grid(sweep_config, records)
    assert grid.counts["missing"] == 0 and grid.counts["trainable"] > 0 and grid.counts["not_trainable"] > 0
    assert calls.history == 0


def test_history_is_fetched_unsampled_only_for_plotted_runs(tmp_path):
    calls = Calls()
    cfg = fake_sweep_config(16)
    api = FakeApi(cfg, {"s": fake_runs(calls, cfg)}, calls)
    sweep_config, records, history_of = wandb_source("e/p/s", api=api)
    grid = build_grid(sweep_config, records)
    plotted = {grid.record_index[p] for pair in boundary_pairs(grid, grid.record_index >= 0, 3) for p in pair}
    write_report(grid, tmp_path / "out", title="t", sweep_config=sweep_config, history_of=history_of, zoom_k=1)
    assert calls.history == len(plotted) and 0 < calls.history <= 6  # each plotted run once (cached)
    fetched = [r for r in records if r.history is not None]
    assert len(fetched) == len(plotted)
    assert len(fetched[0].history["train/loss"]) == STEPS  # every row, not a sample


def test_run_states_pending_and_holes_named_in_the_report(tmp_path):
    """running/pending without a verdict: pending; crashed/failed/killed/preempted without one: holes whose
    state report.md names; a running run that already wrote its verdict keeps it."""
    calls = Calls()
    cfg = fake_sweep_config(4)
    runs = fake_runs(calls, cfg)
    states = ["running", "pending", "crashed", "failed", "killed", "preempted"]
    for run, state in zip(runs, states):
        run.state, run.summary_metrics = state, {"_runtime": 1.0}
    runs[6].state = "running"  # already wrote its verdict
    runs[7].state = "failed"  # an exception in the run: an error verdict, and W&B's state beside it
    runs[7].summary_metrics = {**runs[7].summary_metrics, "verdict": "error", "error": "Traceback ...\nOOM"}
    api = FakeApi(cfg, {"s": runs}, calls)
    report = run_report(["e/p/s", "--out", str(tmp_path / "out"), "--zoom", "0"], api=api)
    assert report["counts"]["pending"] == 2 and report["counts"]["missing"] == 4 and report["counts"]["error"] == 1
    assert report["counts"]["trainable"] + report["counts"]["not_trainable"] == 9
    assert sorted(h["state"] for h in report["holes"]) == ["crashed", "failed", "failed", "killed", "preempted"]
    assert {h["outcome"] for h in report["holes"] if h["state"] == "failed"} == {"error", "missing"}
    text = (tmp_path / "out" / "report.md").read_text()
    assert "| pending | 2 |" in text
    for state, run in zip(states[2:], runs[2:6]):
        assert f"| missing | {state} | `e/p/{run.id}` |" in text
    # A W&B grid never hands a point out again: the report says how to refill, not "a re-run retries them".
    assert "fractal-llm refill e/p/s -o refill.yaml" in text and "re-run" not in text
    assert "`fractal-llm report e/p/s NEW_SWEEP_PATH`" in text and "generate_report" not in text


def test_bad_sweep_path():
    with pytest.raises(SourceError, match="ENTITY/PROJECT/SWEEP_ID"):
        wandb_source("just-an-id", api=object())


def test_local_source_reads_sweep_yaml_and_records(tmp_path):
    with pytest.raises(SourceError, match="sweep.yaml"):
        local_source(tmp_path)
    cfg = fake_sweep_config(4)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    record = RunRecord(name="p", config={"matrix_lr": 1e-4, "unembedding_lr": 1e-5},
                       summary={"verdict": "trainable"}, history={"train/loss": [1.0]}, created_at=1.0)
    write_record(record, tmp_path)
    sweep_config, records = local_source(tmp_path)
    assert sweep_config["parameters"]["num_tokens"] == {"value": 20000}
    assert len(records) == 1 and records[0].source == "local" and records[0].history == {"train/loss": [1.0]}


def test_wandb_and_local_sources_merge_into_one_grid(tmp_path):
    """A refill: the W&B sweep lacks the top rows, a local directory holds them."""
    calls = Calls()
    cfg = fake_sweep_config(8)
    api = FakeApi(cfg, {"s": fake_runs(calls, cfg, skip=lambda i, j: i >= 6)}, calls)
    local = tmp_path / "refill"
    local.mkdir()
    (local / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    for run in fake_runs(calls, cfg, skip=lambda i, j: i < 6):
        write_record(RunRecord(name=run.id, config=run.config, summary=run.summary_metrics,
                               history={"train/loss": run._losses}, created_at=5.0), local)
    report = run_report(["e/p/s", "--local", str(local), "--out", str(tmp_path / "out"), "--zoom", "0"], api=api)
    assert report["counts"]["missing"] == 0 and sum(report["counts"].values()) == 64
    assert np.isfinite(report["trainable_fraction"])
    assert calls.sweep == 1 and calls.pages == 1


# ---------------------------------------------------------------- robust listing


def api_error(status: int):
    """What wandb's public API raises for a failed query (status 0: no HTTP response came back)."""
    from wandb.proto.wandb_api_pb2 import ApiErrorResponse
    from wandb.sdk.lib.service.service_connection import WandbApiFailedError
    return WandbApiFailedError(f"HTTP {status}", ApiErrorResponse(message="boom", http_status=status))


class FlakyRuns(FakeRuns):
    """A listing whose page `fail_at` raises `error` the first `times` times it is fetched."""

    def __init__(self, calls, runs, per_page, error, fail_at, times):
        super().__init__(calls, runs, per_page)
        self._error, self._fail_at, self._left = error, fail_at, times

    def __iter__(self):
        for page, start in enumerate(range(0, len(self._runs), self._per_page)):
            if page == self._fail_at and self._left[0] > 0:
                self._left[0] -= 1
                raise self._error
            self._calls.pages += 1
            yield from self._runs[start:start + self._per_page]


class FlakyApi(FakeApi):
    def __init__(self, *args, error, fail_at=1, times=1):
        super().__init__(*args)
        self._error, self._fail_at, self._left = error, fail_at, [times]

    def runs(self, path=None, filters=None, per_page=50, lazy=True, **kwargs):
        listing = super().runs(path, filters, per_page=per_page, lazy=lazy)
        return FlakyRuns(self.calls, listing._runs, per_page, self._error, self._fail_at, self._left)


@pytest.mark.parametrize("status", [0, 429, 503])
def test_a_transient_failure_mid_listing_is_retried_without_losing_or_doubling_runs(status):
    calls = Calls()
    cfg = fake_sweep_config(8)
    api = FlakyApi(cfg, {"s": fake_runs(calls, cfg)}, calls, error=api_error(status), fail_at=1)
    _, records, _ = wandb_source("e/p/s", api=api, settings=ApiSettings(page_size=10, backoff_s=0.0))
    assert sorted(r.run_id for r in records) == sorted(f"r{i:02d}{j:02d}" for i in range(8) for j in range(8))
    assert len(calls.runs_kwargs) == 2  # the listing started again after the failed page


@pytest.mark.parametrize("error, tries", [(api_error(403), 1), (ValueError("Could not find sweep"), 1),
                                          (api_error(502), 3)])
def test_a_permanent_failure_or_the_last_try_names_the_sweep(error, tries, tmp_path, capsys, monkeypatch):
    calls = Calls()
    cfg = fake_sweep_config(4)
    api = FlakyApi(cfg, {"s": fake_runs(calls, cfg)}, calls, error=error, fail_at=0, times=99)
    with pytest.raises(SourceError, match=r"W&B sweep e/p/s: listing its runs failed") as info:
        wandb_source("e/p/s", api=api, settings=ApiSettings(retries=2, backoff_s=0.0))
    assert len(calls.runs_kwargs) == tries and str(error) in str(info.value)
    # The command line, default settings: exit 2 with the message, no traceback, after the backoff schedule.
    import wandb
    from fractal_llm.report import sources
    waits = []
    monkeypatch.setattr(sources.time, "sleep", waits.append)
    monkeypatch.setattr(wandb, "Api", lambda **kwargs: api)
    assert run_main(["e/p/s", "--out", str(tmp_path / "out")]) == 2
    assert "W&B sweep e/p/s" in capsys.readouterr().err
    assert waits == ([2.0, 4.0, 8.0, 16.0, 32.0] if tries > 1 else [])


def test_api_timeout_and_page_size_are_settings_passed_to_wandb(tmp_path, monkeypatch):
    calls = Calls()
    cfg = fake_sweep_config(4)
    made = []
    import wandb
    monkeypatch.setattr(wandb, "Api", lambda **kwargs: made.append(kwargs) or FakeApi(cfg, {"s": fake_runs(calls, cfg)},
                                                                                      calls))
    run_report(["e/p/s", "--out", str(tmp_path / "a"), "--zoom", "0", "--api-timeout", "90", "--page-size", "7"])
    assert made == [{"timeout": 90}] and calls.runs_kwargs[-1]["per_page"] == 7
    run_report(["e/p/s", "--out", str(tmp_path / "b"), "--zoom", "0"])
    defaults = ApiSettings()
    assert made[-1] == {"timeout": defaults.timeout_s} and calls.runs_kwargs[-1]["per_page"] == defaults.page_size
    with pytest.raises(SystemExit):
        run_report(["e/p/s", "--out", str(tmp_path / "c"), "--page-size", "0"])
    assert len(made) == 2  # a bad setting stops before any query


# ---------------------------------------------------------------- a bad record file


def test_a_truncated_record_file_is_a_hole_named_in_the_report(tmp_path):
    cfg = fake_sweep_config(4)
    local = tmp_path / "runs"
    local.mkdir()
    (local / "sweep.yaml").write_text(yaml.safe_dump(cfg))
    for run in fake_runs(Calls(), cfg):  # named as the local runner names them: by the point's values
        name = record_name({key: run.config[key] for key in ("matrix_lr", "unembedding_lr")})
        write_record(RunRecord(name=name, config=run.config, summary=run.summary_metrics,
                               history={"train/loss": run._losses}, created_at=5.0), local)
    xs, ys = cfg["parameters"]["matrix_lr"]["values"], cfg["parameters"]["unembedding_lr"]["values"]
    cut = local / file_name(record_name({"matrix_lr": xs[1], "unembedding_lr": ys[2]}))
    cut.write_text(cut.read_text()[:40])  # a record cut short (a full disk, a copy interrupted)
    (local / "notes.json").write_text("")  # a foreign file that names no point
    out = tmp_path / "out"
    assert run_main(["--local", str(local), "--out", str(out), "--zoom", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["missing"] == 1 and sum(report["counts"].values()) == 16
    (hole,) = report["holes"]
    assert hole["state"] == "unreadable record file" and (hole["x"], hole["y"]) == (xs[1], ys[2])
    assert "JSONDecodeError" in hole["error"] and hole["run"] == str(cut)
    assert any(s.startswith("notes:") for s in report["skipped_runs"])  # listed apart, not placed
    assert cut.name in (out / "report.md").read_text()


# ---------------------------------------------------------------- --watch


def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_watch_pulls_only_changed_runs_and_ctrl_c_keeps_the_last_report(tmp_path, monkeypatch, capsys):
    from datetime import datetime, timedelta, timezone
    from fractal_llm.report import report as report_module
    calls = Calls()
    cfg = fake_sweep_config(4)
    runs = fake_runs(calls, cfg)
    for run in runs:
        run._updated_at = "2020-01-01T00:00:00Z"
    for run in runs[8:]:
        run.state, run.summary_metrics = "running", {}
    done = {run.id: dict(runs[0].summary_metrics) for run in runs[8:]}
    server = {"s": runs[:12]}  # 4 points not started yet
    ticks = []

    def tick(seconds):  # the wait between refreshes: the sweep moves on meanwhile
        ticks.append(seconds)
        now = iso(datetime.now(timezone.utc) + timedelta(seconds=1))
        if len(ticks) == 1:
            for run in runs[8:12]:
                run.state, run.summary_metrics, run._updated_at = "finished", done[run.id], now
            for run in runs[12:]:
                run._updated_at = now
            server["s"] = runs
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(report_module.time, "sleep", tick)
    out = tmp_path / "live"
    report = run_report(["e/p/s", "--out", str(out), "--zoom", "0", "--watch", "30"], api=FakeApi(cfg, server, calls))
    assert ticks == [30.0, 30.0]
    first, second = calls.runs_kwargs[0]["filters"], calls.runs_kwargs[1]["filters"]
    assert first == {"sweep": "s"}
    assert second["$and"][0] == {"sweep": "s"} and set(second["$and"][1]) == {"updatedAt"}
    assert report["counts"]["pending"] == 4 and report["counts"]["missing"] == 0
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["counts"] == report["counts"] and not list(tmp_path.glob(".live.*"))
    lines = [line for line in capsys.readouterr().out.splitlines() if "finished" in line]
    assert "pending 4  missing 4" in lines[0] and "8/16 finished" in lines[0] and "12 runs pulled (all)" in lines[0]
    assert "12/16 finished, ETA" in lines[1] and "8 runs pulled (updated since the last pull)" in lines[1]


def test_watch_ctrl_c_while_writing_leaves_the_previous_report_whole(tmp_path, monkeypatch):
    from fractal_llm.report import report as report_module
    calls = Calls()
    cfg = fake_sweep_config(4)
    api = FakeApi(cfg, {"s": fake_runs(calls, cfg)}, calls)
    real_write = report_module.write_report
    writes = []

    def write_then_interrupt(grid, out_dir, **kwargs):
        writes.append(out_dir)
        if len(writes) == 2:  # halfway through the second refresh
            (Path(out_dir) / "report.json").parent.mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "report.json").write_text("{")
            raise KeyboardInterrupt
        return real_write(grid, out_dir, **kwargs)

    monkeypatch.setattr(report_module, "write_report", write_then_interrupt)
    monkeypatch.setattr(report_module.time, "sleep", lambda s: None)
    out = tmp_path / "live"
    run_report(["e/p/s", "--out", str(out), "--zoom", "1", "--zoom-res", "4", "--watch"], api=api)
    first = json.loads((out / "report.json").read_text())
    assert first["counts"]["trainable"] > 0 and (out / "score_map.png").is_file()
    assert writes[0] != out and not list(tmp_path.glob(".live.*"))  # written beside it, renamed into place
    # The report names the files where they ended up, never the staging directory.
    assert first["zoom"] and all(Path(box["yaml_path"]).parent == out / "zoom" for box in first["zoom"])
    assert str(writes[0]) not in (out / "report.md").read_text()


def test_watch_with_wandb_logs_one_run_and_a_report_version_when_points_finished(tmp_path, monkeypatch,
                                                                                offline_wandb):
    from datetime import datetime, timedelta, timezone
    from fractal_llm.report import report as report_command
    calls = Calls()
    cfg = fake_sweep_config(4)
    runs = fake_runs(calls, cfg)
    for run in runs[12:]:
        run.state, run.summary_metrics = "running", {}
    done = dict(runs[0].summary_metrics)
    ticks = []

    def tick(seconds):  # between the first and the second refresh two runs finish; then nothing changes
        ticks.append(seconds)
        if len(ticks) == 1:
            for run in runs[12:14]:
                run.state, run.summary_metrics = "finished", done
                run._updated_at = iso(datetime.now(timezone.utc) + timedelta(seconds=1))

    monkeypatch.setattr(report_command.time, "sleep", tick)
    report = run_report(["e/p/s", "--out", str(tmp_path / "live"), "--zoom", "0", "--watch", "5", "--wandb"],
                        api=FakeApi(cfg, {"s": runs}, calls), refreshes=3)
    assert report["counts"]["pending"] == 2 and len(ticks) == 2
    assert [a.type for a in offline_wandb] == ["report", "report"]  # refreshes 1 and 2; 3 changed nothing
    rows = table_rows(offline_wandb[-1])["data"]
    assert sorted(row[5] for row in rows) == sorted(run.id for run in runs)  # the run id of every point
    assert sum(row[2] == "pending" for row in rows) == 2
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1  # one run for the whole session


def test_watch_refuses_a_directory_that_is_not_a_report(tmp_path, capsys):
    calls = Calls()
    cfg = fake_sweep_config(4)
    busy = tmp_path / "home"
    busy.mkdir()
    (busy / "thesis.tex").write_text("precious")
    api = FakeApi(cfg, {"s": fake_runs(calls, cfg)}, calls)
    with pytest.raises(SourceError, match="holds files but no report.json"):
        run_report(["e/p/s", "--out", str(busy), "--watch", "5"], api=api)
    assert (busy / "thesis.tex").read_text() == "precious"


# ---------------------------------------------------------------- refill: holes -> a point-list sweep -> one map


def test_refill_lists_exactly_the_holes_and_the_merged_map_has_none(tmp_path, capsys):
    from fractal_llm.report import refill
    from fractal_llm.sweep import load_sweep
    calls = Calls()
    cfg = fake_sweep_config(8)
    runs = fake_runs(calls, cfg, skip=lambda i, j: (i, j) == (5, 0))  # one point never got a run
    runs[3].state, runs[3].summary_metrics = "crashed", {}
    runs[10].state, runs[10].summary_metrics = "failed", {"verdict": "error", "error": "RuntimeError: CUDA error"}
    runs[20].state, runs[20].summary_metrics = "preempted", {}
    runs[30].state, runs[30].summary_metrics = "running", {}  # in flight: not a hole
    api = FakeApi({"s": cfg}, {"s": runs}, calls)
    out = tmp_path / "refill.yaml"
    assert refill.main(["e/p/s", "-o", str(out)], api=api) == 0
    assert "4 points (crashed 1, failed 1, no run 1, preempted 1)" in capsys.readouterr().out
    spec = load_sweep(out)
    xs, ys = cfg["parameters"]["matrix_lr"]["values"], cfg["parameters"]["unembedding_lr"]["values"]
    holes = [(0, 3), (1, 2), (2, 4), (5, 0)]  # (i, j) of runs 3, 10, 20 and the point without a run
    assert spec.points == [{"matrix_lr": xs[j], "unembedding_lr": ys[i]} for i, j in holes]
    assert spec.fixed == {"num_tokens": 20000} and spec.name == "fake-refill"

    # The refill sweep on the server: each run's wandb.config holds grid_point as one dict, plus the fixed values.
    refill_runs = [FakeRun(calls, f"f{k}", {"grid_point": point, "num_tokens": 20000},
                           {"verdict": "trainable", "score": -1.0, "loss_last": 0.5}, "finished",
                           "2026-11-21T10:00:00Z", [3.0, 1.0]) for k, point in enumerate(spec.points)]
    api = FakeApi({"s": cfg, "f": yaml.safe_load(out.read_text())}, {"s": runs, "f": refill_runs}, calls)
    report = run_report(["e/p/s", "e/p/f", "--out", str(tmp_path / "merged"), "--zoom", "0"], api=api)
    assert report["counts"]["missing"] == 0 and report["counts"]["error"] == 0 and report["counts"]["pending"] == 1
    assert report["holes"] == [] and report["point_table"]["run"].count("e/p/f0") == 1
    assert refill.main(["e/p/s", "e/p/f", "-o", str(tmp_path / "again.yaml")], api=api) == 0
    assert "no holes" in capsys.readouterr().out and not (tmp_path / "again.yaml").exists()
    # The refill sweep alone is a map too: its lattice is its points' distinct values.
    alone = run_report(["e/p/f", "--out", str(tmp_path / "alone"), "--zoom", "0"], api=api)
    assert alone["counts"]["trainable"] == 4 and len(alone["axes"]["values"][0]) == 4


def test_merged_sweeps_must_share_the_axes(tmp_path):
    calls = Calls()
    cfg = fake_sweep_config(4)
    other = fake_sweep_config(4)
    other["parameters"]["embedding_lr"] = other["parameters"].pop("unembedding_lr")
    api = FakeApi({"s": cfg, "t": other}, {"s": fake_runs(calls, cfg), "t": []}, calls)
    with pytest.raises(SourceError, match="wandb:e/p/t: sweeps axes embedding_lr x matrix_lr, but wandb:e/p/s"):
        run_report(["e/p/s", "e/p/t", "--out", str(tmp_path / "out")], api=api)
