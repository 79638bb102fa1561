"""`fractal-llm local --adaptive` and the report of an adaptive map, on a hand-made label image (a disk)
through a fake batched trainer that looks the label up: levels, resume, inferred pixels, one dimension."""

import math

import pytest

from fractal_llm import cli

from fractal_llm.paper import mlp

from fractal_llm.report import report as report_command

from fractal_llm.runners import local as runner
from fractal_llm.records import RunResult, SUMMARY_KEYS
from fractal_llm.sweep import AxisArg, dump_sweep_yaml, load_sweep, new_sweep

N = 33  # lattice side: levels 3 -> level 0 is every 8th value (5 x 5 points)


def disk_trainable(lr_input: float, lr_output: float) -> bool:
    x, y = math.log10(lr_input), math.log10(lr_output)
    return (x - 0.1) ** 2 + (y + 0.2) ** 2 < 0.6 ** 2  # centre and radius in decades (0.6 = 9.6 cells)


@pytest.fixture
def disk_trainer(monkeypatch):
    calls: list[tuple[float, float]] = []

    def train_many(configs, chunk_size=mlp.DEFAULT_CHUNK):
        results = []
        for c in configs:
            calls.append((c.lr_input, c.lr_output))
            trainable = disk_trainable(c.lr_input, c.lr_output)
            summary = {key: None for key in SUMMARY_KEYS}
            summary.update(verdict="trainable" if trainable else "not_trainable", trainable=trainable, stable=True,
                           score=-1.0 if trainable else 1.0, steps=5, runtime_s=0.0)
            results.append(RunResult(config=c.resolved().to_dict(), summary=summary, history={}))
        return results

    monkeypatch.setattr(mlp, "train_many", train_many)
    return calls


def disk_sweep(tmp_path):
    axes = [AxisArg("lr_input", 0.1, 10.0, N), AxisArg("lr_output", 0.1, 10.0, N)]
    path = tmp_path / "disk.yaml"
    path.write_text(dump_sweep_yaml(new_sweep(axes, {"model_family": "mlp", "num_iterations": 5}, name="disk")))
    return load_sweep(path)


def test_adaptive_run_resumes_and_its_report_equals_the_full_map(tmp_path, disk_trainer):
    spec = disk_sweep(tmp_path)
    full, adaptive = tmp_path / "full", tmp_path / "adaptive"
    assert runner.run_sweep(spec, full, workers=1, wandb_mode="disabled") == 0
    assert len(disk_trainer) == N * N
    disk_trainer.clear()
    assert runner.run_adaptive(spec, adaptive, levels=3, margin=1, workers=1, wandb_mode="disabled") == 0
    ran = list(disk_trainer)
    assert len(ran) == len(set(ran)) < 0.6 * N * N  # each point at most once, far fewer than the full grid

    # An interruption: the last points' records never got written. The re-run runs exactly those.
    records = sorted(adaptive.glob("lr_*.json"), key=lambda p: p.stat().st_mtime_ns)
    for path in records[-5:]:
        path.unlink()
    disk_trainer.clear()
    assert runner.run_adaptive(spec, adaptive, levels=3, margin=1, workers=1, wandb_mode="disabled") == 0
    assert len(disk_trainer) == 5

    a = report_command.run(["--local", str(full), "--out", str(tmp_path / "r_full"), "--zoom", "0"])
    b = report_command.run(["--local", str(adaptive), "--out", str(tmp_path / "r_adaptive"), "--zoom", "0"])
    assert b["counts"]["inferred"] == N * N - len(ran) and b["runs_used"] == len(ran) and b["points"] == N * N
    assert b["counts"]["missing"] == 0
    assert b["fractal"]["counts"] == a["fractal"]["counts"]  # box counts: the same full-resolution boundary
    assert b["fractal"]["dimension"] == a["fractal"]["dimension"]
    assert "inferred" in (tmp_path / "r_adaptive" / "report.md").read_text()
    # --compare-local fills the adaptive map as its own report does: no pixel differs from the full map
    c = report_command.run(["--local", str(full), "--compare-local", str(adaptive), "--out", str(tmp_path / "r_cmp"),
                            "--zoom", "0"])["compare"]
    assert c["delta_trainable_fraction"] == 0 and c["delta_dimension"] == 0


def test_bad_levels_are_refused_before_any_run(tmp_path, capsys, disk_trainer):
    spec = disk_sweep(tmp_path)
    path = tmp_path / "disk.yaml"
    assert cli.main(["local", str(path), "--adaptive", "--levels", "9", "--out", str(tmp_path / "o"),
                     "--wandb", "disabled"]) == 2
    assert "levels=9" in capsys.readouterr().err and disk_trainer == [] and spec.n_points == N * N
