"""`fractal-llm local`: records per point, resume, error retry, workers, Ctrl-C."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fractal_llm import cli

from fractal_llm.runners import local as runner
from fractal_llm.records import file_name, point_name, read_record, read_records
from fractal_llm.sweep import AxisArg, dump_sweep_yaml, new_sweep

ROOT = Path(__file__).resolve().parents[1]


def write_sweep(path: Path, axes: list[AxisArg], fixed: dict) -> Path:
    path.write_text(dump_sweep_yaml(new_sweep(axes, fixed, name=path.stem)))
    return path


def mlp_sweep(tmp_path: Path, n: int = 3, steps: int = 50, name: str = "mlp3") -> Path:
    # The paper's tanh window: wide enough that the 3x3 grid holds more than one verdict.
    return write_sweep(tmp_path / f"{name}.yaml",
                       [AxisArg("lr_input", 1.0, 1e4, n), AxisArg("lr_output", 1.0, 1e3, n)],
                       {"model_family": "mlp", "num_iterations": steps})


def mtimes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in directory.glob("*.json")}


def test_mlp_grid_writes_one_record_per_point_and_resumes(tmp_path, capsys):
    sweep = mlp_sweep(tmp_path)
    out = tmp_path / "runs"
    assert runner.main([str(sweep), "--out", str(out)]) == 0
    records = read_records(out)
    assert len(records) == 9
    assert (out / "sweep.yaml").exists()
    expected = {point_name({"lr_input": r.config["lr_input"], "lr_output": r.config["lr_output"]}) for r in records}
    assert {r.name for r in records} == expected
    verdicts = {r.verdict for r in records}
    assert verdicts <= {"trainable", "not_trainable", "diverged"} and len(verdicts) >= 2
    assert all(r.config["num_iterations"] == 50 and r.config["model_family"] == "mlp" for r in records)
    first = capsys.readouterr().out
    assert "running 9" in first and f"report: fractal-llm report --local {out}" in first
    before = mtimes(out)
    assert runner.main([str(sweep), "--out", str(out)]) == 0
    assert "running 0" in capsys.readouterr().out
    assert mtimes(out) == before  # nothing re-run, nothing rewritten


def test_default_out_dir_is_named_after_the_sweep(tmp_path):
    sweep = mlp_sweep(tmp_path, n=2, steps=5, name="named_default")
    assert runner.main([str(sweep)]) == 0
    from fractal_llm import paths
    assert len(read_records(paths.runs_dir() / "named_default")) == 4


def test_limit_runs_a_prefix_in_wandb_order_then_the_rest(tmp_path, capsys):
    sweep = mlp_sweep(tmp_path, steps=5)
    out = tmp_path / "runs"
    assert runner.main([str(sweep), "--out", str(out), "--limit", "4", "--mlp-chunk", "3"]) == 0
    names = sorted(p.stem for p in out.glob("*.json"))
    lr_in = sorted({read_record(out / f"{n}.json").config["lr_input"] for n in names})
    assert len(names) == 4 and lr_in == [1.0, 100.0]  # lr_input is the slow axis: 3 + 1 points
    assert "5 point(s) not run yet" in capsys.readouterr().out
    assert runner.main([str(sweep), "--out", str(out)]) == 0
    assert "running 5" in capsys.readouterr().out
    assert len(read_records(out)) == 9


def test_two_worker_processes_match_this_process(tmp_path, capsys):
    sweep = mlp_sweep(tmp_path, steps=30)
    pooled, here = tmp_path / "pooled", tmp_path / "here"
    assert runner.main([str(sweep), "--out", str(pooled), "--workers", "2", "--mlp-chunk", "2"]) == 0
    assert "with 2 worker(s)" in capsys.readouterr().out
    assert runner.main([str(sweep), "--out", str(here), "--workers", "1"]) == 0
    assert "with 1 worker(s)" in capsys.readouterr().out
    curves = [{r.name: r.history["train/loss"] for r in read_records(out)} for out in (pooled, here)]
    assert len(curves[0]) == 9 and curves[0] == curves[1]


def test_bad_yaml_fails_before_any_work(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(dump_sweep_yaml(new_sweep([AxisArg("lr_input", 1, 10, 2), AxisArg("lr_output", 1, 10, 2)],
                                             {"model_family": "mlp"})).replace("lr_output", "lr_outptu"))
    out = tmp_path / "runs"
    assert cli.main(["local", str(bad), "--out", str(out)]) == 2
    assert "lr_outptu: not a train-config field; did you mean 'lr_output'?" in capsys.readouterr().err
    assert not out.exists()


def test_out_dir_of_another_sweep_is_refused(tmp_path, capsys):
    out = tmp_path / "runs"
    assert runner.main([str(mlp_sweep(tmp_path, n=2, steps=5)), "--out", str(out)]) == 0
    other = mlp_sweep(tmp_path, n=2, steps=6, name="other")
    assert cli.main(["local", str(other), "--out", str(out)]) == 2
    assert "num_iterations: 5 -> 6" in capsys.readouterr().err


def test_failing_points_leave_others_intact_and_are_retried(tmp_path, tiny_base, capsys):
    # max_seq_len=2 passes config validation but fails at data loading (no supervised token fits): a real
    # error for half of the points, on the gpt tiny family.
    sweep = write_sweep(tmp_path / "gpt.yaml", [AxisArg("max_seq_len", 2, 256, 2, "lin"),
                                                 AxisArg("matrix_lr", 1e-3, 1e-2, 2)],
                        {"num_iterations": 2, "device_batch_size": 2, "device": "cpu"})
    out = tmp_path / "runs"
    assert runner.main([str(sweep), "--out", str(out)]) == 1
    records = {r.name: r for r in read_records(out)}
    assert len(records) == 4
    bad = {n for n, r in records.items() if r.verdict == "error"}
    assert bad == {point_name({"matrix_lr": lr, "max_seq_len": 2}) for lr in (1e-3, 1e-2)}
    assert all("max_seq_len=2" in records[n].summary["error"] for n in bad)
    assert all(r.verdict in ("trainable", "not_trainable", "diverged") for n, r in records.items() if n not in bad)
    assert "2 point(s) ended in error" in capsys.readouterr().out
    before = mtimes(out)
    assert runner.main([str(sweep), "--out", str(out)]) == 1
    assert "running 2" in capsys.readouterr().out
    after = mtimes(out)
    for name in records:
        changed = after[file_name(name)] != before[file_name(name)]
        assert changed == (name in bad)  # error points re-run, finished ones untouched


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_cleanly_and_keeps_finished_records(tmp_path, workers):
    sweep = mlp_sweep(tmp_path, n=4, steps=400, name="interrupt")
    out = tmp_path / "runs"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "fractal_llm.runners.local", str(sweep), "--out", str(out),
                             "--mlp-chunk", "1", "--workers", str(workers)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env,
                            # as in a terminal, whatever this test runs under (nohup and background jobs ignore it)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 40
    finished = lambda: [p for p in out.glob("*.json") if not p.name.startswith(".tmp-")]  # noqa: E731
    while time.time() < deadline and not finished():
        time.sleep(0.05)
    assert finished(), "no record appeared"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130, output
    assert "run the same command again to resume" in output
    records = read_records(out)  # every file on disk is a complete record
    assert 1 <= len(records) < 16
    assert not list(out.glob(".tmp-*"))


def test_invalid_worker_count(tmp_path, capsys):
    assert cli.main(["local", str(mlp_sweep(tmp_path)), "--workers", "0"]) == 2
    assert "--workers=0" in capsys.readouterr().err


def test_a_missing_model_is_refused_before_any_point(tmp_path, capsys):
    cfg = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    cfg["parameters"]["model_id"] = {"value": "/no/such/dir"}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli.main(["local", str(path), "--out", str(tmp_path / "out"), "--wandb", "disabled"]) == 2
    assert "model_id='/no/such/dir': no such directory" in capsys.readouterr().err
    assert not list(tmp_path.glob("out/*.json"))


def test_cpu_workers_never_run_more_threads_than_cores():
    assert runner.cpu_workers(1, 2) == (1, 2)
    assert runner.cpu_workers(2, 2) == (2, 1)
    assert runner.cpu_workers(8, 2) == (2, 1)  # capped: 8 single-threaded workers would share 2 cores
    assert runner.cpu_workers(3, 16) == (3, 5)


def test_a_point_list_sweep_runs_exactly_its_points(tmp_path):
    """A refill-style sweep: three listed points of a 3x3 grid, nothing else."""
    points = [{"lr_input": 1.0, "lr_output": 1.0}, {"lr_input": 100.0, "lr_output": 1.0},
              {"lr_input": 100.0, "lr_output": 1000.0}]
    cfg = {"name": "mlp_points", "method": "grid", "command": ["${env}", "${interpreter}", "-m", "fractal_llm.train",
                                                                "${args}"],
           "parameters": {"grid_point": {"values": points}, "model_family": {"value": "mlp"},
                          "num_iterations": {"value": 20}}}
    sweep = tmp_path / "points.yaml"
    sweep.write_text(dump_sweep_yaml(cfg))
    out = tmp_path / "runs"
    assert runner.main([str(sweep), "--out", str(out)]) == 0
    records = read_records(out)
    assert sorted(r.name for r in records) == sorted(point_name(p) for p in points)
    assert all(r.config["num_iterations"] == 20 and r.verdict != "error" for r in records)
    assert {(r.config["lr_input"], r.config["lr_output"]) for r in records} == {tuple(p.values()) for p in points}


def test_a_log_that_is_not_a_terminal_gets_plain_progress_lines(tmp_path, monkeypatch):
    import io

    from rich.console import Console
    from fractal_llm import progress
    monkeypatch.setattr(progress, "PLAIN_LINE_S", 0.0)
    path = write_sweep(tmp_path / "mlp.yaml", [AxisArg("lr_input", 0.5, 2.0, 2), AxisArg("lr_output", 0.5, 2.0, 2)],
                       {"model_family": "mlp", "num_iterations": 5})
    log = io.StringIO()
    spec = runner.load_sweep(path)
    assert runner.run_sweep(spec, tmp_path / "out", workers=1, wandb_mode="disabled", mlp_chunk=1,
                            console=Console(file=log, force_terminal=False, width=200)) == 0
    lines = [line for line in log.getvalue().splitlines() if line.startswith("mlp: ") and "/4" in line]
    assert [line.split()[1] for line in lines] == ["1/4", "2/4", "3/4", "4/4"]


# A runner process whose batched trainer logs each point it trains (to the file in argv[1]): the log, not the
# runner's own account, says who ran what. Its first point waits until both runners have reached theirs, and
# each point takes its time, so that the two overlap however late one of them starts.
LOGGED_RUNNER = """
import pathlib, sys, time
from fractal_llm import cli
from fractal_llm.paper import mlp
train_many = mlp.train_many
log = pathlib.Path(sys.argv[1])
def logged(configs, *args, **kwargs):
    log.with_suffix(".started").touch()
    deadline = time.time() + 120
    while len(list(log.parent.glob("*.started"))) < 2 and time.time() < deadline:
        time.sleep(0.05)
    with open(log, "a") as f:
        f.writelines(f"{c.lr_input!r},{c.lr_output!r}\\n" for c in configs)
    time.sleep(0.3 * len(configs))
    return train_many(configs, *args, **kwargs)
mlp.train_many = logged
sys.exit(cli.main(["local", *sys.argv[2:]]))
"""


def run_two_runners(tmp_path: Path, sweep: Path, out: Path, *args: str) -> list[tuple[list[str], str]]:
    """Start two runner processes on one --out together; (points each trained, its output) when both ended."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = []
    for k in range(2):
        log = tmp_path / f"trained{k}.log"
        procs.append((log, subprocess.Popen([sys.executable, "-c", LOGGED_RUNNER, str(log), str(sweep), "--out",
                                             str(out), "--workers", "1", "--mlp-chunk", "1", "--wandb", "disabled",
                                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                            env=env)))
    results = []
    for log, proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
        results.append((log.read_text().splitlines() if log.exists() else [], output))
    return results


def test_two_runners_on_one_directory_split_its_points(tmp_path):
    sweep = write_sweep(tmp_path / "two.yaml", [AxisArg("lr_input", 1.0, 1e4, 4), AxisArg("lr_output", 1.0, 1e3, 4)],
                        {"model_family": "mlp", "num_iterations": 20})
    out = tmp_path / "runs"
    (a, out_a), (b, out_b) = run_two_runners(tmp_path, sweep, out)
    assert len(a + b) == len(set(a + b)) == 16  # every point trained, none twice
    assert a and b, (out_a, out_b)  # both took a share
    assert out_a.strip().splitlines()[-1] == f"ran {len(a)} of 16 points"
    assert out_b.strip().splitlines()[-1] == f"ran {len(b)} of 16 points"
    assert len(read_records(out)) == 16 and not list(out.glob("*.claim"))  # every claim released


def test_two_adaptive_runners_split_each_level_and_run_what_one_would(tmp_path):
    sweep = write_sweep(tmp_path / "adapt.yaml", [AxisArg("lr_input", 1.0, 1e4, 9), AxisArg("lr_output", 1.0, 1e3, 9)],
                        {"model_family": "mlp", "num_iterations": 20})
    alone = tmp_path / "alone"
    assert runner.run_adaptive(runner.load_sweep(sweep), alone, levels=2, margin=1, workers=1,
                               wandb_mode="disabled") == 0
    expected = {(r.config["lr_input"], r.config["lr_output"]) for r in read_records(alone)}
    (a, out_a), (b, out_b) = run_two_runners(tmp_path, sweep, tmp_path / "shared", "--adaptive", "--levels", "2")
    trained = [tuple(float(v) for v in line.split(",")) for line in a + b]
    assert len(trained) == len(set(trained)) and set(trained) == expected, (out_a, out_b)
    assert a and b
    assert out_a.strip().splitlines()[-1] == f"ran {len(a)} of 81 points"


def test_a_log_that_is_not_a_terminal_ends_with_the_whole_last_progress_line(tmp_path):
    """Under nohup rich drew its bar once, at the end, squeezed into 80 columns: `16/… 0:0… ETA 0:00…`."""
    import io

    from rich.console import Console
    path = write_sweep(tmp_path / "a_long_sweep_name_as_users_write_them.yaml",
                       [AxisArg("lr_input", 0.5, 2.0, 4), AxisArg("lr_output", 0.5, 2.0, 4)],
                       {"model_family": "mlp", "num_iterations": 5})
    log = io.StringIO()
    assert runner.run_sweep(runner.load_sweep(path), tmp_path / "out", workers=1, wandb_mode="disabled",
                            console=Console(file=log, force_terminal=False, width=80)) == 0
    text = log.getvalue()
    assert "…" not in text
    assert "a_long_sweep_name_as_users_write_them: 16/16  trainable" in text
    assert text.strip().splitlines()[-1] == "ran 16 of 16 points"


def test_an_out_dir_that_cannot_be_made_is_one_error_line(tmp_path, capsys):
    """Before: `--out /proc/nope` ended in a FileNotFoundError traceback."""
    assert cli.main(["local", str(mlp_sweep(tmp_path)), "--out", "/proc/nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --out /proc/nope: cannot create the record directory") and len(err.splitlines()) == 1
