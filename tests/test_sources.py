"""Sources: local directories and the W&B public API (against counting fakes with wandb.apis.public's shapes)."""

import math

import numpy as np
import pytest
import yaml

from fractal_llm.grid import build_grid
from fractal_llm.plots import boundary_pairs
from fractal_llm.records import RunRecord, write_record
from fractal_llm.report import run as run_report
from fractal_llm.report import write_report
from fractal_llm.sources import SourceError, local_source, parse_timestamp, wandb_source
from fractal_llm.sweep import MODULE_COMMAND, axis_values

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
    def __init__(self, sweep_config: dict, runs_by_sweep: dict[str, list[FakeRun]], calls: Calls):
        self._config, self._runs, self.calls = sweep_config, runs_by_sweep, calls

    def sweep(self, path=""):
        self.calls.sweep += 1
        return FakeSweep(self._config)

    def runs(self, path=None, filters=None, order="+created_at", per_page=50, include_sweeps=False, lazy=True):
        self.calls.runs_kwargs.append(dict(path=path, filters=filters, per_page=per_page, lazy=lazy,
                                           include_sweeps=include_sweeps))
        return FakeRuns(self.calls, self._runs[filters["sweep"]], per_page)


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
    assert calls.sweep == 1 and calls.pages == 9 and calls.history == 0  # 4096 runs / 500 per page
    kwargs = calls.runs_kwargs[0]
    assert kwargs["path"] == "ent/proj" and kwargs["filters"] == {"sweep": "sw123"}
    assert kwargs["lazy"] is False and kwargs["per_page"] == 500
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


def test_unfinished_runs_without_verdict_are_errors():
    calls = Calls()
    cfg = fake_sweep_config(4)
    runs = fake_runs(calls, cfg)
    runs[0].state, runs[0].summary_metrics = "crashed", {"_runtime": 1.0}
    runs[1].state = "running"  # still running but already wrote its verdict: keep it
    api = FakeApi(cfg, {"s": runs}, calls)
    _, records, _ = wandb_source("e/p/s", api=api)
    assert records[0].summary["verdict"] == "error" and "crashed" in records[0].summary["error"]
    assert records[1].summary["verdict"] in ("trainable", "not_trainable")
    assert build_grid(cfg, records).counts["error"] == 1


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
