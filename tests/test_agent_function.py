"""agent_function as W&B drives it: wandb's own in-process agent (wandb.agent(function=...), its threads,
wandb.teardown() between runs, the sweep config delivered through WANDB_SWEEP_PARAM_PATH) with the real client
in offline mode. Fakes only where a server must answer: agent registration, the heartbeat that hands out
runs, and wandb.Api (which would verify the key against the server)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fractal_llm.gpt import finetune

from fractal_llm.runners import point

from fractal_llm.runners import agent as worker
from fractal_llm.config import TrainConfig
from fractal_llm.records import read_records
from wandb_offline import offline_runs

SHORT = dict(max_seq_len=192, device_batch_size=4, num_iterations=6, trainable_window_steps=3)
FAKE_KEY = "a" * 40  # wandb.agent logs in first: any well-formed key, never sent anywhere


# The server boundary, patched into a fresh interpreter or this one: registration, the heartbeat (which hands
# out the queued jobs, or stops a run when `stop_when` says so) and wandb.Api.
SERVER = '''
import json, os, time
import wandb
import wandb.apis.public.sweeps as sweeps_api
from wandb.agents import pyagent

def serve(jobs, stop_when=None, sweep_config=None, exit_when_done=False):
    """jobs: [(run_id, params)]; stop_when(run_status) -> run_id to stop, or None; sweep_config: the sweep as
    wandb.Api().sweep(path).config returns it; exit_when_done: `exit` once every job ran (W&B's answer when a
    grid is exhausted)."""
    pyagent.Agent.HEARTBEAT_SLEEP_SECONDS = 0.05
    queue = [{"type": "run", "run_id": rid, "args": {k: {"value": v} for k, v in params.items()}}
             for rid, params in jobs]
    sent_stop = []
    def heartbeat(api, agent_id, metrics, run_status):
        if stop_when is not None and not sent_stop:
            victim = stop_when(run_status)
            if victim:
                sent_stop.append(victim)
                return [{"type": "stop", "run_id": victim}]
        if queue:
            return [queue.pop(0)]
        return [{"type": "exit"}] if exit_when_done and not run_status else []
    class Sweep:
        config = sweep_config or {}
    class Api:
        def __init__(self, *args, **kwargs):
            pass
        def sweep(self, path):
            return Sweep()
    sweeps_api._register_agent = lambda api, host, **kw: {"id": "agent-test"}
    sweeps_api._agent_heartbeat = heartbeat
    wandb.Api = Api
'''


@pytest.fixture
def agent_env(tmp_path, monkeypatch, tiny_base):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("FRACTAL_LLM_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(SERVER, namespace)  # noqa: S102  (the fake server, same text as the subprocess tests use)
    return namespace["serve"], tmp_path


def broken_checkpoint(tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "model_000001.pt").write_bytes(b"not a checkpoint")
    (broken / "checkpoints" / "meta_000001.json").write_text("{}")
    return broken


def test_runs_in_one_process_diverged_is_a_result_and_an_error_is_a_failure(agent_env):
    import wandb
    serve, tmp_path = agent_env
    jobs = [("r0", {"matrix_lr": 0.01, **SHORT}),
            ("r1", {"matrix_lr": 1e30, "unembedding_lr": 1e30, **SHORT}),  # diverges
            ("r2", {"matrix_lr": 0.02, **SHORT}),
            ("r3", {"matrix_lr": 0.01, "model_id": str(broken_checkpoint(tmp_path)), **SHORT}),  # error
            ("r4", {"matrix_lr": 0.03, **SHORT})]
    serve(jobs)
    # max_consecutive_failed_runs=1: the agent stops at the first failed run. The diverged run must not count
    # as one; the error must (so r4 never runs).
    wandb.agent("sw1", function=worker.agent_function, entity="e", project="p", count=5,
                max_consecutive_failed_runs=1)
    records = {r.run_id: r for r in read_records(tmp_path / "runs")}
    assert set(records) == {"r0", "r1", "r2", "r3"}
    assert records["r1"].verdict == "diverged"
    assert records["r0"].verdict in ("trainable", "not_trainable") and records["r0"].config["matrix_lr"] == 0.01
    assert records["r2"].verdict in ("trainable", "not_trainable") and records["r2"].config["matrix_lr"] == 0.02
    error = records["r3"]
    assert error.verdict == "error" and "Traceback" in error.summary["error"]
    assert error.config["model_id"].endswith("broken")


def test_a_stop_from_wandb_is_recorded_as_stopped_not_as_an_error(agent_env, monkeypatch):
    import threading

    import wandb

    from fractal_llm import train
    serve, tmp_path = agent_env
    stepping = threading.Event()
    real_trainer = train.TRAINERS["gpt"]

    def trainer(config, on_step):
        def counted(step, row):
            on_step(step, row)
            if step >= 3:
                stepping.set()
        return real_trainer(config, counted)

    monkeypatch.setitem(train.TRAINERS, "gpt", trainer)

    def stop_when(run_status):
        # The run is training (a few steps done, so past every import): W&B's stop raises a bare Exception in
        # the run's thread there (one raised inside an import would leave a half-imported module behind).
        return "r0" if point.IN_FLIGHT.is_set() and stepping.is_set() else None

    serve([("r0", {"matrix_lr": 0.01, **{**SHORT, "num_iterations": 3000}}), ("r1", {"matrix_lr": 0.02, **SHORT})],
          stop_when)
    wandb.agent("sw1", function=worker.agent_function, entity="e", project="p", count=2,
                max_consecutive_failed_runs=1)
    records = read_records(tmp_path / "runs")
    assert [r.run_id for r in records] == ["r1"]  # r0 left no record (not done), and did not stop the agent
    wandb.teardown()  # the run files are written by wandb's service process: flushed when it shuts down
    stopped = offline_runs(tmp_path / "wandb")["r0"]
    # the user's stop: not marked preempting (W&B would requeue it), no verdict in W&B either
    assert not stopped["preempting"] and stopped["summary"]["stopped"] == "stopped from W&B"
    assert stopped["summary"]["verdict"] is None


def test_sigterm_finishes_the_run_as_preempting_and_ends_the_worker(tiny_base, tmp_path):
    script = SERVER + f'''
import signal
from fractal_llm.runners import point
from fractal_llm.runners import agent as worker
serve([("r0", {json.dumps({"matrix_lr": 0.01, **SHORT, "num_iterations": 5000})})])
signal.signal(signal.SIGTERM, point.on_sigterm)
print("agent ready", flush=True)
wandb.agent("sw1", function=worker.agent_function, entity="e", project="p", count=1)
print("agent returned", flush=True)
'''
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY, "WANDB_DIR": str(tmp_path),
           "FRACTAL_LLM_RUNS_DIR": str(tmp_path / "runs"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("wandb/offline-run-*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # wandb.init has run: the point is claimed
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, output
    assert "agent exit: stopped by SIGTERM" in output and "preempting" in output
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*.json"))  # not done
    # W&B's requeue contract (docs/design.md, "Preemption"): marked preempting, then a non-zero exit
    run = offline_runs(tmp_path / "wandb")["r0"]
    assert run["preempting"] and run["exit_code"] == 128 + signal.SIGTERM


def test_a_stop_that_reached_wandb_core_first_ends_143_and_leaves_a_hole_for_refill(tiny_base, tmp_path):
    """SLURM's scancel and preemption signal every process of the job step, wandb-core included, and
    wandb-core exits on SIGTERM. Here the signal reaches it first (the trainer stands in for the scheduler at
    step 3: it stops wandb-core, then signals the worker). The run cannot be marked preempting any more; the
    worker must still end as stopped (143, so the scheduler requeues its task), say why, and write no record:
    the point is not done, and not an error (W&B marks the run crashed: a hole `fractal-llm refill` lists)."""
    script = SERVER + f'''
import signal, subprocess
from fractal_llm import train
from fractal_llm.runners import point
from fractal_llm.runners import agent as worker

def gone(pid):
    try:
        return open(f"/proc/{{pid}}/stat").read().split(")")[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True

real_trainer = train.TRAINERS["gpt"]
def trainer(config, on_step):
    def step(i, row):
        if i == 3:
            ps = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True)
            cores = [int(line.split()[0]) for line in ps.stdout.splitlines() if "wandb-core" in line]
            assert cores, ps.stdout
            for pid in cores:
                os.kill(pid, signal.SIGTERM)
            while not all(gone(pid) for pid in cores):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)
            while not point.STOP.is_set():
                time.sleep(0.01)
        on_step(i, row)
    return real_trainer(config, step)
train.TRAINERS["gpt"] = trainer
serve([("r0", {json.dumps({"matrix_lr": 0.01, **SHORT, "num_iterations": 5000})})])
signal.signal(signal.SIGTERM, point.on_sigterm)
wandb.agent("sw1", function=worker.agent_function, entity="e", project="p", count=1)
print("agent returned", flush=True)
'''
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY, "WANDB_DIR": str(tmp_path),
           "FRACTAL_LLM_RUNS_DIR": str(tmp_path / "runs"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 128 + signal.SIGTERM, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("agent exit: stopped by SIGTERM at step 3") and "wandb-core was already gone" in last
    assert "fractal-llm refill" in last and "agent returned" not in out.stdout
    assert not list(tmp_path.glob("runs/*.json"))  # neither a result nor an `error` record for a stopped point


def test_an_accelerator_error_ends_the_worker_after_finishing_its_run(tiny_base, tmp_path):
    script = SERVER + f'''
from fractal_llm import train
from fractal_llm.runners import agent as worker
def poisoned(config, on_step):
    raise RuntimeError("CUDA error: device-side assert triggered")
train.TRAINERS["gpt"] = poisoned
serve([("r0", {json.dumps({"matrix_lr": 0.01, **SHORT})}), ("r1", {json.dumps({"matrix_lr": 0.02, **SHORT})})])
wandb.agent("sw1", function=worker.agent_function, entity="e", project="p", count=2)
print("agent returned", flush=True)
'''
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY, "WANDB_DIR": str(tmp_path),
           "FRACTAL_LLM_RUNS_DIR": str(tmp_path / "runs"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "agent exit: accelerator error in run r0" in out.stdout and "agent returned" not in out.stdout
    records = read_records(tmp_path / "runs")
    assert [r.run_id for r in records] == ["r0"] and records[0].verdict == "error"  # r1 never started here


def test_each_run_starts_without_gradients_left_by_a_failed_backward(tiny_base):
    config = TrainConfig(matrix_lr=0.01, **SHORT)
    base = finetune.get_base_model(config.model_id, torch.device("cpu"))
    # The first block's first matrix: backward reaches it last, so lm_head and the later blocks already hold
    # gradients when the hook raises.
    weight = [p for name, p in base.model.named_parameters() if p.dim() == 2 and ".0." in name][0]
    weight.requires_grad_(True)

    def fail(grad):
        raise RuntimeError("failed mid-backward")

    handle = weight.register_hook(fail)
    try:
        with pytest.raises(RuntimeError, match="mid-backward"):
            finetune.train_gpt(config)
    finally:
        handle.remove()
    assert any(p.grad is not None for p in base.model.parameters())  # what the failed run left behind
    model = finetune.fresh_model(base)
    assert all(p.grad is None for p in model.parameters())
    first = finetune.train_gpt(config).history["train/loss"]
    assert first == finetune.train_gpt(config).history["train/loss"]  # fresh optimizer state every run


def test_no_credentials_inside_a_sweep_run_exits_2_naming_wandb_login(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path), WANDB_SWEEP_ID="sw1", WANDB_RUN_ID="r0", WANDB_DIR=str(tmp_path),
               FRACTAL_LLM_RUNS_DIR=str(tmp_path / "runs"), WANDB_CONFIG_DIR=str(tmp_path / "cfg"))
    out = subprocess.run([sys.executable, "-m", "fractal_llm.train", "--model_family=mlp", "--num_iterations=5"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "wandb login" in out.stderr and "sw1" in out.stderr
    assert not (tmp_path / "runs").exists()


def test_no_credentials_is_a_users_error_like_any_bad_input(tmp_path, monkeypatch):
    from fractal_llm.errors import FractalLLMError
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw1")
    monkeypatch.setenv("WANDB_RUN_ID", "r0")
    import wandb
    wandb.teardown()
    with pytest.raises(FractalLLMError, match="sweep sw1: no W&B credentials found"):  # the CLI's one root
        point.default_wandb_mode()
    wandb.teardown()


def test_credentials_are_found_the_way_wandb_finds_them(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    import wandb
    wandb.teardown()
    assert not point.wandb_credentials_found()
    netrc = tmp_path / "elsewhere.netrc"  # a W&B Server host, in $NETRC: the old check saw neither
    netrc.write_text(f"machine wandb.example.org\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    wandb.teardown()
    assert point.wandb_credentials_found() and point.default_wandb_mode() == "online"
    wandb.teardown()


# ---------------------------------------------------------------------------------------------- a requeued point

def wandb_run(run_id: str, point: dict, state: str, verdict: str | None, minute: int):
    """A run as W&B's public API lists it (the attributes sources.record_from_wandb_run reads)."""
    from types import SimpleNamespace
    summary = {"verdict": verdict, "score": -1.0 if verdict == "trainable" else 1.0} if verdict else \
        {"stopped": "stopped by SIGTERM at step 7"}
    config = {"model_family": "mlp", **point, **({"verdict": verdict} if verdict else {})}
    return SimpleNamespace(id=run_id, name=run_id, config=config, summary_metrics=summary, state=state,
                           created_at=f"2026-12-05T07:{minute:02d}:00Z")


@pytest.mark.parametrize("runs, expected", [
    # preempted (marked preempting, ended non-zero), then W&B's requeue ran the point again in another run
    ([("a", "preempted", None, 1), ("b", "finished", "not_trainable", 2)], "not_trainable"),
    # the requeued run finished first; the preempted one is listed after it
    ([("b", "finished", "trainable", 2), ("a", "preempted", None, 1)], "trainable"),
    # still preempting when the report pulled, and a finished run of the same point
    ([("a", "preempting", None, 1), ("b", "finished", "trainable", 2)], "trainable"),
    # two finished runs of one point (a requeue that raced a refill sweep): the latest wins, one cell
    ([("a", "finished", "trainable", 1), ("b", "finished", "not_trainable", 2)], "not_trainable"),
])
def test_two_runs_of_one_point_give_one_cell(runs, expected):
    from fractal_llm.report.grid import build_grid
    from fractal_llm.report.sources import record_from_wandb_run
    sweep = {"name": "s", "method": "grid",
             "parameters": {"model_family": {"value": "mlp"}, "lr_input": {"values": [1.0, 2.0]},
                            "lr_output": {"values": [1.0, 2.0]}}}
    point = {"lr_input": 1.0, "lr_output": 2.0}
    listed = [wandb_run(rid, point, state, verdict, minute) for rid, state, verdict, minute in runs]
    other = wandb_run("c", {"lr_input": 2.0, "lr_output": 1.0}, "finished", "trainable", 3)
    records = [record_from_wandb_run(r, "e", "p", ["lr_input", "lr_output"]) for r in [*listed, other]]
    grid = build_grid(sweep, records)
    assert grid.verdicts[1, 0] == expected  # row: lr_output=2.0, column: lr_input=1.0
    assert sum(grid.counts.values()) == 4 and grid.counts["missing"] == 2  # one cell per point, never two
