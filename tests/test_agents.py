"""`fractal-llm agents`: per-GPU environments and commands, pid files, --status/--stop, ssh hosts.

Fakes only at the boundaries: `nvidia-smi` and `ssh` stubs on PATH (the ssh stub runs the remote script
with bash on this machine, as the "remote host"), a stub interpreter (--python) in place of the real agent
process (which would need a W&B server), and, for the worker, wandb.Api (the sweep as the server holds it)
and wandb.agent patched in the real client.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from fractal_llm.runners import agents

from fractal_llm.runners import agent as worker
from fractal_llm.pool import usable_cores

NVIDIA_SMI = """#!/bin/bash
echo "nvidia-smi $* host=${STUB_HOST:-local}" >> "$STUB_LOG"
n=${STUB_GPUS:-2}
if [ -n "$STUB_HOST" ]; then n=$(printf '%s' "$STUB_HOST_GPUS" | tr ',' '\\n' | grep "^$STUB_HOST=" | cut -d= -f2); fi
for ((i=0; i<n; i++)); do echo "GPU $i: NVIDIA Stub (UUID: GPU-$i)"; done
"""

SSH = """#!/bin/bash
echo "ssh $*" >> "$STUB_LOG"
while [ "${1#-}" != "$1" ]; do shift 2; done   # ssh options (-o X ...)
host=$1; shift
[ "$host" = unreachable ] && { echo "ssh: connect to host unreachable: No route" >&2; exit 255; }
if [ "$host" = flaky ]; then  # answers the checks, then drops: its STUB_FLAKY_AFTER-th call fails
  n=$(( $(cat "$STUB_LOG.flaky" 2>/dev/null || echo 0) + 1 )); echo $n > "$STUB_LOG.flaky"
  [ "$n" -gt "${STUB_FLAKY_AFTER:-2}" ] && { echo "ssh: connection to flaky closed" >&2; exit 255; }
fi
STUB_HOST=$host exec bash -c "$*"
"""

# Stands in for `python`: answers the worker's --check (refusing when STUB_REFUSE says why), else records how
# it was started, then lives like an agent until signalled.
FAKE_PYTHON = """#!/bin/bash
case " $* " in *" --check "*)
  if [ -n "$STUB_REFUSE" ] && [ "${STUB_REFUSE_HOST:-${STUB_HOST:-local}}" = "${STUB_HOST:-local}" ]; then
    echo "error: $STUB_REFUSE" >&2; echo "agent exit: refused: $STUB_REFUSE"; exit 2; fi
  echo "agent check: ok"; exit 0;;
esac
printf '%s\\n' "{\\"argv\\": \\"$*\\", \\"cuda\\": \\"${CUDA_VISIBLE_DEVICES-unset}\\", \\"cwd\\": \\"$PWD\\", \
\\"host\\": \\"${STUB_HOST:-local}\\", \\"flapping\\": \\"${WANDB_AGENT_DISABLE_FLAPPING-unset}\\", \
\\"threads\\": \\"${OMP_NUM_THREADS-unset}\\", \\"t\\": $(date +%s.%N)}" >> "$STUB_STARTS"
sleep 60 &
wait
"""

# The worker with the real wandb client, patched where a server must answer: the sweep as the server holds it
# (wandb.Api().sweep(path).config) and wandb.agent, which records how it was called.
WORKER = '''
import json, os, sys
import wandb
class _Sweep:
    def __init__(self, path):
        self.config = json.loads(os.environ["STUB_SWEEP_CONFIG"])
class _Api:
    def __init__(self, *args, **kwargs):
        pass
    def sweep(self, path):
        if os.environ["STUB_SWEEP_CONFIG"] == "null":  # what wandb's public API raises for an unknown sweep
            raise ValueError(f"Could not find sweep <Sweep {path} (Unknown State)>")
        return _Sweep(path)
def agent(sweep_id, function=None, entity=None, project=None, count=None, max_consecutive_failed_runs=None):
    with open(os.environ["STUB_WANDB_LOG"], "w") as f:
        json.dump({"sweep_id": sweep_id, "entity": entity, "project": project, "count": count,
                   "function": f"{function.func.__module__}.{function.func.__name__}", "axes": list(function.args[0]),
                   "flapping": os.environ.get("WANDB_AGENT_DISABLE_FLAPPING"),
                   "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"), "max_failures": max_consecutive_failed_runs}, f)
wandb.Api, wandb.agent = _Api, agent
from fractal_llm.runners.agent import main
sys.exit(main(sys.argv[1:]))
'''
FAKE_KEY = "a" * 40  # a well-formed W&B key, never sent anywhere


def write_exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def stubs(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_exe(bin_dir / "nvidia-smi", NVIDIA_SMI)
    write_exe(bin_dir / "ssh", SSH)
    python = write_exe(tmp_path / "fakepython", FAKE_PYTHON)
    log, starts = tmp_path / "calls.log", tmp_path / "starts.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("STUB_LOG", str(log))
    monkeypatch.setenv("STUB_STARTS", str(starts))
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_AGENT_DISABLE_FLAPPING", "true")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    state = {"bin": bin_dir, "python": str(python), "log": log, "starts": starts, "logdir": tmp_path / "agents",
             "workdir": tmp_path / "work"}
    state["workdir"].mkdir()
    yield state
    kill_leftovers(state["logdir"])
    kill_leftovers(Path(os.environ["FRACTAL_LLM_HOME"]) / "agents")


def kill_leftovers(logdir: Path) -> None:
    for pid_file in logdir.glob("*.pid") if logdir.is_dir() else []:
        pid = int(pid_file.read_text())
        if agents.pid_is_agent(pid):
            os.killpg(pid, signal.SIGKILL)
        pid_file.unlink()


def wait_for_starts(path: Path, n: int) -> list[dict]:
    deadline = time.time() + 10
    while time.time() < deadline:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= n:
            return [json.loads(line) for line in lines]
        time.sleep(0.02)
    raise AssertionError(f"{n} agent starts expected, got {path.read_text() if path.exists() else 'none'}")


def run_agents(stubs, *args) -> int:
    return agents.main(["e/p/sw1", "--python", stubs["python"], "--logdir", str(stubs["logdir"]),
                        "--workdir", str(stubs["workdir"]), *args])


def local_pid_files(stubs) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in stubs["logdir"].glob("*.pid")}


def test_one_agent_per_detected_gpu_with_its_cuda_device(stubs, capsys):
    assert run_agents(stubs, "--count", "5") == 0
    starts = sorted(wait_for_starts(stubs["starts"], 2), key=lambda s: s["cuda"])
    assert [s["cuda"] for s in starts] == ["0", "1"]
    for s in starts:
        assert s["argv"] == f"-m fractal_llm.runners.agent e/p/sw1 --max-failures {worker.DEFAULT_MAX_FAILURES} --count 5"
        # the cores this process may use (its CPU affinity: taskset, a batch scheduler) shared out over 2 GPUs
        assert s["threads"] == str(max(1, usable_cores() // 2))
        assert s["cwd"] == str(stubs["workdir"])
        assert s["flapping"] == "unset"  # would stop the in-process agent at its first failed run
    assert "nvidia-smi -L" in stubs["log"].read_text()
    host = agents.LOCAL
    pids = local_pid_files(stubs)
    assert set(pids) == {f"agent-{host}-gpu0", f"agent-{host}-gpu1"}
    assert all(agents.pid_is_agent(pid) for pid in pids.values())
    assert (stubs["logdir"] / f"agent-{host}-gpu0.log").exists()
    assert "started" in capsys.readouterr().out


def test_status_restart_and_stop(stubs, capsys):
    assert run_agents(stubs, "--gpus", "0,1") == 0
    wait_for_starts(stubs["starts"], 2)
    pids = local_pid_files(stubs)
    capsys.readouterr()
    assert run_agents(stubs, "--gpus", "0,1") == 0  # a live agent per GPU: nothing new starts
    assert capsys.readouterr().out.count("running") == 2 and local_pid_files(stubs) == pids
    assert run_agents(stubs, "--status") == 0
    assert capsys.readouterr().out.count("running") == 2
    assert run_agents(stubs, "--stop") == 0
    assert capsys.readouterr().out.count("stopped") == 2
    deadline = time.time() + 5
    while time.time() < deadline and any(agents.pid_is_agent(p) for p in pids.values()):
        time.sleep(0.02)
    assert not any(agents.pid_is_agent(p) for p in pids.values())
    assert run_agents(stubs, "--status") == 0
    assert "no agents found" in capsys.readouterr().out


def test_status_reports_dead_agent(stubs, capsys):
    assert run_agents(stubs, "--gpus", "3") == 0
    wait_for_starts(stubs["starts"], 1)
    pid = local_pid_files(stubs)[f"agent-{agents.LOCAL}-gpu3"]
    os.killpg(pid, signal.SIGKILL)
    deadline = time.time() + 5
    while time.time() < deadline and agents.pid_is_agent(pid):
        time.sleep(0.02)
    capsys.readouterr()
    assert run_agents(stubs, "--status") == 0
    assert "dead" in capsys.readouterr().out


def test_explicit_gpus_skip_detection(stubs):
    assert run_agents(stubs, "--gpus", "1,3") == 0
    assert sorted(s["cuda"] for s in wait_for_starts(stubs["starts"], 2)) == ["1", "3"]
    assert not stubs["log"].exists()  # nvidia-smi not asked


def test_cpu_host_gets_one_agent_without_gpus(stubs, monkeypatch):
    (stubs["bin"] / "nvidia-smi").unlink()
    monkeypatch.setenv("PATH", f"{stubs['bin']}:/usr/bin:/bin")
    assert run_agents(stubs) == 0
    starts = wait_for_starts(stubs["starts"], 1)
    assert len(starts) == 1 and starts[0]["cuda"] == ""
    assert set(local_pid_files(stubs)) == {f"agent-{agents.LOCAL}-cpu"}


def test_respects_cuda_visible_devices_of_the_shell(stubs, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert run_agents(stubs) == 0
    assert sorted(s["cuda"] for s in wait_for_starts(stubs["starts"], 2)) == ["2", "5"]


def test_offline_mode_is_refused_before_starting(stubs, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert run_agents(stubs) == 2
    err = capsys.readouterr().err
    assert "WANDB_MODE='offline'" in err and "fractal-llm local" in err
    assert not stubs["starts"].exists()


def test_bad_sweep_path_and_gpus(stubs, capsys):
    assert agents.main(["e/p", "--python", stubs["python"]]) == 2
    assert "SWEEP: sweep path 'e/p': expected ENTITY/PROJECT/SWEEP_ID" in capsys.readouterr().err
    assert run_agents(stubs, "--gpus", "0,x") == 2
    assert "--gpus='0,x'" in capsys.readouterr().err


def test_hosts_over_ssh(stubs, monkeypatch, capsys):
    monkeypatch.setenv("STUB_HOST_GPUS", "h1=2,h2=1")
    common = ["--hosts", "h1,h2", "--ssh", "ssh -o BatchMode=yes", "--workdir", str(stubs["workdir"])]
    assert agents.main(["e/p/sw1", "--python", stubs["python"], *common]) == 0
    starts = wait_for_starts(stubs["starts"], 3)
    assert sorted((s["host"], s["cuda"]) for s in starts) == [("h1", "0"), ("h1", "1"), ("h2", "0")]
    assert all(s["argv"].endswith("-m fractal_llm.runners.agent e/p/sw1 --max-failures 5") for s in starts)
    assert all(s["cwd"] == str(stubs["workdir"]) for s in starts)
    calls = stubs["log"].read_text().splitlines()
    assert "ssh -o BatchMode=yes h1 nvidia-smi -L" in calls and "ssh -o BatchMode=yes h2 nvidia-smi -L" in calls
    remote_logs = Path(os.environ["FRACTAL_LLM_HOME"]) / "agents"  # the "remote" default logdir
    assert {p.stem for p in remote_logs.glob("*.pid")} == {"agent-h1-gpu0", "agent-h1-gpu1", "agent-h2-gpu0"}
    capsys.readouterr()
    assert agents.main(["--status", *common]) == 0
    assert capsys.readouterr().out.count("running") == 3
    assert agents.main(["--stop", "--hosts", "h2", "--workdir", str(stubs["workdir"])]) == 0
    assert capsys.readouterr().out.count("stopped") == 1
    assert {p.stem for p in remote_logs.glob("*.pid")} == {"agent-h1-gpu0", "agent-h1-gpu1"}


def test_every_host_is_checked_before_any_agent_starts(stubs, monkeypatch, capsys):
    """With --hosts good,bad: `good` used to get its agents before `bad` refused, and the command did not say."""
    monkeypatch.setenv("STUB_HOST_GPUS", "good=2,bad=1")
    monkeypatch.setenv("STUB_REFUSE", "no W&B credentials found on this host")
    monkeypatch.setenv("STUB_REFUSE_HOST", "bad")
    code = agents.main(["e/p/sw1", "--python", stubs["python"], "--hosts", "good,bad", "--workdir",
                        str(stubs["workdir"])])
    err = capsys.readouterr().err
    assert code == 2 and "no agent started on any host: bad: the worker's check failed" in err, err
    assert not stubs["starts"].exists()  # not even on `good`
    code = agents.main(["e/p/sw1", "--python", stubs["python"], "--hosts", "good,unreachable", "--workdir",
                        str(stubs["workdir"])])
    assert code == 2 and "no agent started on any host: unreachable: ssh failed" in capsys.readouterr().err
    assert not stubs["starts"].exists()


def test_a_host_that_fails_while_starting_names_the_agents_already_started(stubs, monkeypatch, capsys):
    monkeypatch.setenv("STUB_HOST_GPUS", "h1=2,flaky=1")
    monkeypatch.setenv("STUB_FLAKY_AFTER", "2")  # flaky answers nvidia-smi and the check, then drops
    code = agents.main(["e/p/sw1", "--python", stubs["python"], "--hosts", "h1,flaky", "--workdir",
                        str(stubs["workdir"])])
    err = " ".join(capsys.readouterr().err.split())
    starts = wait_for_starts(stubs["starts"], 2)
    pids = {p.stem: int(p.read_text()) for p in (Path(os.environ["FRACTAL_LLM_HOME"]) / "agents").glob("*.pid")}
    assert code == 2 and "flaky: ssh failed" in err, err
    assert sorted(s["host"] for s in starts) == ["h1", "h1"]
    for label in ("agent-h1-gpu0", "agent-h1-gpu1"):
        assert f"{label} (pid {pids[label]})" in err, err
    assert "stop them with `fractal-llm agents --stop --hosts h1`" in err


def test_unreachable_host_is_a_clear_error(stubs, capsys):
    assert agents.main(["e/p/sw1", "--hosts", "unreachable"]) == 2
    assert "unreachable: ssh failed" in capsys.readouterr().err


def run_worker(tmp_path, sweep_config: dict, *args: str, env_changes: dict | None = None
               ) -> tuple[subprocess.CompletedProcess, Path]:
    log = tmp_path / "wandb.json"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "STUB_WANDB_LOG": str(log), "WANDB_MODE": "online",
           "WANDB_API_KEY": FAKE_KEY, "WANDB_AGENT_DISABLE_FLAPPING": "true", "CUDA_VISIBLE_DEVICES": "3",
           "STUB_SWEEP_CONFIG": json.dumps(sweep_config), **(env_changes or {})}
    env = {k: v for k, v in env.items() if v is not None}
    out = subprocess.run([sys.executable, "-c", WORKER, "ent/proj/abc123", *args], env=env, capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    return out, log


def smoke_sweep() -> dict:
    return yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / "smoke.yaml").read_text())


def test_worker_calls_wandb_agent_with_the_train_function(tmp_path):
    out, log = run_worker(tmp_path, smoke_sweep(), "--count", "7")
    assert out.returncode == 0, out.stderr
    called = json.loads(log.read_text())
    assert called == {"sweep_id": "abc123", "entity": "ent", "project": "proj", "count": 7,
                      "function": "fractal_llm.runners.agent.agent_function", "axes": ["matrix_lr", "unembedding_lr"],
                      "flapping": None, "cuda": "3", "max_failures": worker.DEFAULT_MAX_FAILURES}
    assert "agent exit: wandb.agent returned" in out.stdout


@pytest.mark.parametrize("key, value, needle", [
    ("model_id", "wandb:<entity>/fractal-llm/nanochat-d20:latest", "unfilled placeholder '<entity>'"),
    ("model_id", "/no/such/dir", "model_id='/no/such/dir': no such directory"),
    ("matrix_lr", "fast", "does not pass `fractal-llm sweep check`"),
])
def test_worker_checks_the_servers_sweep_before_claiming_a_run(tmp_path, key, value, needle):
    cfg = smoke_sweep()
    cfg["parameters"][key] = {"value": value}
    out, log = run_worker(tmp_path, cfg)
    assert out.returncode == 2 and needle in out.stderr, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("agent exit: refused:")  # what --status shows
    assert not log.exists()  # wandb.agent never called: no point claimed


@pytest.mark.parametrize("env_changes, needle", [
    ({"WANDB_MODE": "offline"}, "sweep agents need a W&B server (online mode"),
    ({"WANDB_MODE": None, "WANDB_API_KEY": None}, "no W&B credentials found on this host"),
])
def test_worker_refuses_offline_mode_and_a_host_without_credentials(tmp_path, env_changes, needle):
    no_home = {"HOME": str(tmp_path), "WANDB_CONFIG_DIR": str(tmp_path / "cfg"), "NETRC": str(tmp_path / "none")}
    out, log = run_worker(tmp_path, smoke_sweep(), env_changes={**no_home, **env_changes})
    assert out.returncode == 2 and needle in out.stderr, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("agent exit: refused:") and needle in last
    assert not log.exists()


def test_worker_refuses_a_sweep_the_server_does_not_have(tmp_path):
    out, log = run_worker(tmp_path, None)
    assert out.returncode == 2 and "W&B sweep ent/proj/abc123: ValueError: Could not find sweep" in out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("agent exit: refused:") and not log.exists()


def test_worker_check_exits_before_the_agent(tmp_path):
    out, log = run_worker(tmp_path, smoke_sweep(), "--check")
    assert out.returncode == 0 and "agent check: sweep ent/proj/abc123" in out.stdout, out.stderr
    assert not log.exists()


def no_credentials_env(tmp_path, monkeypatch) -> None:
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("NETRC", str(tmp_path / "no.netrc"))


def test_a_host_without_credentials_starts_no_agent(stubs, tmp_path, monkeypatch, capsys):
    """What `fractal-llm agents` did on such a host: exit 0, "started", and a worker that died at once."""
    no_credentials_env(tmp_path, monkeypatch)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    code = agents.main(["e/p/sw1", "--gpus", "0,1", "--python", sys.executable, "--logdir", str(stubs["logdir"]),
                        "--workdir", str(stubs["workdir"])])
    err = capsys.readouterr().err
    assert code == 2 and "no agent started" in err and "no W&B credentials found" in err, err
    assert not local_pid_files(stubs) if stubs["logdir"].exists() else True


def test_a_refusing_check_over_ssh_starts_no_agent(stubs, monkeypatch, capsys):
    monkeypatch.setenv("STUB_HOST_GPUS", "h1=2")
    monkeypatch.setenv("STUB_REFUSE", "no W&B credentials found on this host")
    code = agents.main(["e/p/sw1", "--python", stubs["python"], "--hosts", "h1", "--workdir", str(stubs["workdir"])])
    err = capsys.readouterr().err
    assert code == 2 and "no agent started on any host: h1" in err and "no W&B credentials" in err, err
    assert not stubs["starts"].exists()


def test_agents_started_together_are_staggered(stubs, monkeypatch):
    assert run_agents(stubs, "--gpus", "0,1,2") == 0
    times = sorted(s["t"] for s in wait_for_starts(stubs["starts"], 3))
    assert all(b - a >= 0.8 * agents.STAGGER_S for a, b in zip(times, times[1:])), times
    monkeypatch.setenv("STUB_HOST_GPUS", "h1=2")
    stubs["starts"].unlink()
    assert agents.main(["e/p/sw1", "--python", stubs["python"], "--hosts", "h1", "--workdir",
                        str(stubs["workdir"])]) == 0
    times = sorted(s["t"] for s in wait_for_starts(stubs["starts"], 2))
    assert times[1] - times[0] >= 0.8 * agents.STAGGER_S, times


def test_status_says_why_a_dead_agent_ended(stubs, capsys):
    logdir = stubs["logdir"]
    logdir.mkdir(parents=True, exist_ok=True)
    label = f"agent-{agents.LOCAL}-gpu0"
    (logdir / f"{label}.pid").write_text("999999\n")  # no such process
    (logdir / f"{label}.log").write_text("agent: sweep e/p/sw1\n...\nagent exit: accelerator error in run r1, "
                                         "this process's CUDA context cannot be reused\n")
    assert agents.main(["--status", "--logdir", str(logdir)]) == 0
    out = capsys.readouterr().out
    assert "dead" in out and "accelerator error in run r1" in out
    rows = agents.parse_script_output("agent-h1-gpu0 dead 42 agent exit: stopped by SIGTERM between runs\n"
                                      "agent-h1-gpu1 running 43\n")
    assert rows == [("agent-h1-gpu0", "dead", 42, "agent exit: stopped by SIGTERM between runs"),
                    ("agent-h1-gpu1", "running", 43, "")]


def test_bad_max_failures_is_refused(stubs, capsys):
    assert run_agents(stubs, "--max-failures", "0") == 2
    assert "--max-failures=0: must be >= 1" in capsys.readouterr().err
