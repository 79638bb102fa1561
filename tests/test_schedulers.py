"""The scheduler route: `fractal-llm agent` in the foreground, as examples/slurm/agents.sbatch and
examples/k8s/agents-job.yaml run it.

The agent is wandb's real in-process agent with the real client (runs logged offline); fakes only where a
server must answer (the stand-in of tests/test_agent_function.py: registration, the heartbeat, the sweep as
the server holds it). The command tested is the one the sbatch script runs: the script itself is run under
bash with stand-ins on PATH for `fractal-llm` (prints its arguments, or lives like an agent and logs the
signals it gets), `scontrol` and `srun` (which start the step's tasks here and forward signals to them).
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

from fractal_llm.records import read_records, record_name, run_name
from fractal_llm.sweep import check_sweep
from fractal_llm.runners import agent as worker
from test_agent_function import FAKE_KEY, SERVER
from wandb_offline import offline_runs

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "examples" / "slurm" / "agents.sbatch"
SBATCH_NODE = ROOT / "examples" / "slurm" / "agents-node.sbatch"
K8S_JOB = ROOT / "examples" / "k8s" / "agents-job.yaml"
SWEEP = "ent/proj/sw1"

# A small paper-mode grid: four points of a few steps each, no base model to build.
SWEEP_CONFIG = {"name": "fg", "method": "grid", "program": "fractal_llm/train.py",
                "command": ["${env}", "${interpreter}", "-m", "fractal_llm.train", "${args}"],
                "parameters": {"model_family": {"value": "mlp"}, "num_iterations": {"value": 5},
                               "lr_input": {"values": [0.1, 1.0]}, "lr_output": {"values": [0.1, 1.0]}}}
POINTS = [{"lr_input": x, "lr_output": y} for x in (0.1, 1.0) for y in (0.1, 1.0)]
FIXED = {"model_family": "mlp", "num_iterations": 5}  # W&B hands out every parameter of a run, fixed ones too


def sbatch_argv(tmp_path: Path, **env: str) -> list[str]:
    """What the sbatch script runs after `fractal-llm`, as it runs it (bash, the script's own expansions)."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "fractal-llm"
    stub.write_text(f"#!/bin/sh\nexec {sys.executable} -c 'import json, sys; print(json.dumps(sys.argv[1:]))' \"$@\"\n")
    stub.chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "activate").write_text("")
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "SWEEP": SWEEP, "VENV": str(venv),
               "WORKDIR": str(tmp_path), "SLURM_ARRAY_TASK_ID": "0", "SLURM_CPUS_PER_TASK": "4", **env}
    out = subprocess.run(["bash", str(SBATCH)], env=run_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_sbatch_script_runs_one_foreground_agent_per_gpu_task(tmp_path):
    assert subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True).returncode == 0
    directives = [line.split(None, 1)[1] for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "--gres=gpu:1" in directives and "--requeue" in directives
    assert any(d.startswith("--array=") for d in directives)
    assert sbatch_argv(tmp_path) == ["agent", SWEEP, "--max-failures", "5", "--retry-for", "600"]
    assert sbatch_argv(tmp_path, COUNT="3", MAX_FAILURES="2", RETRY_FOR="60") == [
        "agent", SWEEP, "--max-failures", "2", "--retry-for", "60", "--count", "3"]


# ---------------------------------------------------------------------------------------------- signals, requeue

# Lives like an agent: logs its start and the signals it gets, and ends as the agent does on a stop (143).
AGENT_STUB = """#!/bin/bash
echo "start ${SLURM_LOCALID:-} $*" >> "$STUB_LOG"
[ -n "${STUB_EXIT:-}" ] && exit "$STUB_EXIT"
trap 'echo "USR1 ${SLURM_LOCALID:-}" >> "$STUB_LOG"; kill $SLEEP; exit 143' USR1
trap 'echo "TERM ${SLURM_LOCALID:-}" >> "$STUB_LOG"; kill $SLEEP; exit 143' TERM
sleep 60 & SLEEP=$!
wait $SLEEP
"""
SCONTROL_STUB = """#!/bin/bash
echo "scontrol $*" >> "$STUB_LOG"
"""
# Starts the step's tasks here (STUB_TASKS of them, SLURM_LOCALID set) and forwards USR1/TERM to them.
SRUN_STUB = """#!/bin/bash
echo "srun $*" >> "$STUB_LOG"
while [ "${1#--}" != "$1" ]; do shift; done
pids=()
for ((i=0; i<${STUB_TASKS:-2}; i++)); do SLURM_LOCALID=$i "$@" & pids+=($!); done
finish() { code=0; for p in "${pids[@]}"; do wait "$p"; c=$?; [ "$c" -gt "$code" ] && code=$c; done; exit "$code"; }
trap 'kill -USR1 "${pids[@]}"; finish' USR1
trap 'kill -TERM "${pids[@]}"; finish' TERM
finish
"""


def start_batch(tmp_path: Path, script: Path, **env: str) -> tuple[subprocess.Popen, Path]:
    """The batch script under bash as SLURM starts it, with the stand-ins on PATH; returns it and the log."""
    bin_dir = tmp_path / "slurm-bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("fractal-llm", AGENT_STUB), ("scontrol", SCONTROL_STUB), ("srun", SRUN_STUB)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    (venv / "bin" / "activate").write_text("")
    log = tmp_path / "stub.log"
    run_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "SWEEP": SWEEP, "VENV": str(venv),
               "WORKDIR": str(tmp_path), "SLURM_JOB_ID": "80", "SLURM_CPUS_PER_TASK": "4", "STUB_LOG": str(log),
               **env}
    proc = subprocess.Popen(["bash", str(script)], env=run_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return proc, log


def stub_log(log: Path) -> list[str]:
    return [line.strip() for line in log.read_text().splitlines()] if log.exists() else []


def log_lines(log: Path, wanted: str, n: int) -> list[str]:
    """The stub log's lines, once n of them start with `wanted` (the agents are up)."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = stub_log(log)
        if sum(line.startswith(wanted) for line in lines) >= n:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"{n} x {wanted!r} expected in {log.read_text() if log.exists() else 'nothing'}")


def directives(script: Path) -> list[str]:
    return [line.split(None, 1)[1] for line in script.read_text().splitlines() if line.startswith("#SBATCH")]


def test_a_time_limit_stops_the_agent_then_requeues_its_array_task(tmp_path):
    assert {"--requeue", "--signal=B:USR1@120", "--open-mode=append"} <= set(directives(SBATCH))
    proc, log = start_batch(tmp_path, SBATCH, SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="0")
    log_lines(log, "start", 1)
    proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 sends to the batch shell
    output, _ = proc.communicate(timeout=30)
    lines = stub_log(log)
    # the agent got the stop (not SIGKILL, and before the requeue), then the task requeued itself
    assert lines[1:] == ["USR1", "scontrol requeue 77_0"], lines
    assert proc.returncode == 143 and "requeueing task 77_0" in output, output


def test_preemption_stops_the_agent_and_leaves_the_requeue_to_slurm(tmp_path):
    proc, log = start_batch(tmp_path, SBATCH, SLURM_ARRAY_JOB_ID="77", SLURM_ARRAY_TASK_ID="0")
    log_lines(log, "start", 1)
    proc.send_signal(signal.SIGTERM)  # preemption or scancel: --requeue (or nothing) is SLURM's decision
    proc.communicate(timeout=30)
    assert stub_log(log)[1:] == ["TERM"] and proc.returncode == 143


@pytest.mark.parametrize("code, requeued", [(75, True), (0, False), (2, False), (1, False)])
def test_server_trouble_requeues_the_task_and_nothing_else_does(tmp_path, code, requeued):
    proc, log = start_batch(tmp_path, SBATCH, STUB_EXIT=str(code))  # no array: the job's own id
    proc.communicate(timeout=30)
    assert proc.returncode == code
    assert ("scontrol requeue 80" in stub_log(log)) == requeued


def test_the_whole_node_variant_runs_one_agent_per_gpu_and_requeues_at_the_time_limit(tmp_path):
    assert subprocess.run(["bash", "-n", str(SBATCH_NODE)], capture_output=True).returncode == 0
    assert {"--ntasks-per-node=8", "--gpus-per-task=1", "--exclusive", "--requeue", "--signal=B:USR1@120",
            "--open-mode=append"} <= set(directives(SBATCH_NODE))
    proc, log = start_batch(tmp_path, SBATCH_NODE, STUB_TASKS="2", COUNT="4")
    lines = log_lines(log, "start", 2)
    (srun,) = [line for line in lines if line.startswith("srun")]
    assert "--ntasks-per-node=8 --gpus-per-task=1" in srun
    assert sorted(line for line in lines if line.startswith("start")) == [
        f"start {i} agent {SWEEP} --max-failures 5 --retry-for 600 --count 4" for i in (0, 1)]
    proc.send_signal(signal.SIGUSR1)
    output, _ = proc.communicate(timeout=30)
    lines = stub_log(log)
    assert sorted(line for line in lines if line.startswith("USR1")) == ["USR1 0", "USR1 1"]  # every agent
    assert lines[-1] == "scontrol requeue 80" and proc.returncode == 143, output


def run_foreground_agent(tmp_path: Path, argv: list[str], sweep_config: dict) -> subprocess.CompletedProcess:
    """`fractal-llm <argv>` in a fresh interpreter, behind the stand-in server; the runs log offline (there
    is no server to take them), everything else is the real client."""
    script = SERVER + f'''
import sys
_init = wandb.init
wandb.init = lambda *args, **kwargs: _init(*args, **{{**kwargs, "mode": "offline"}})
serve({[(f"r{i}", {**FIXED, **p}) for i, p in enumerate(POINTS)]!r}, sweep_config={sweep_config!r},
      exit_when_done=True)
from fractal_llm.cli import main
sys.exit(main({argv!r}))
'''
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_API_KEY=FAKE_KEY, WANDB_DIR=str(tmp_path), WANDB_SILENT="true",
               FRACTAL_LLM_RUNS_DIR=str(tmp_path / "runs"), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_foreground_agent_runs_the_sweep_to_its_end_and_exits_0(tmp_path):
    check_sweep(SWEEP_CONFIG)  # the stand-in serves a sweep that passes `sweep check`
    out = run_foreground_agent(tmp_path, sbatch_argv(tmp_path), SWEEP_CONFIG)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("agent exit: wandb.agent returned"), out.stdout
    records = {r.run_id: r for r in read_records(tmp_path / "runs")}
    assert set(records) == {"r0", "r1", "r2", "r3"}
    names = {f"r{i}": record_name(p) for i, p in enumerate(POINTS)}
    assert {rid: r.name for rid, r in records.items()} == names  # named by the point, as a local run is
    assert all(r.config["model_family"] == "mlp" and r.verdict != "error" for r in records.values())
    runs = offline_runs(tmp_path / "wandb")
    assert set(runs) == set(names)
    short = {f"r{i}": run_name(p, {"lr_input": [0.1, 1.0], "lr_output": [0.1, 1.0]}) for i, p in enumerate(POINTS)}
    for rid, run in runs.items():
        assert run["name"] == short[rid] and run["job_type"] == "train" and run["group"] == "fg"
        assert run["config"]["verdict"] == records[rid].verdict  # the UI groups by config
        assert run["metrics"]["train/loss"] == {"step_metric": "step", "summary": ["last", "min"]}
        assert run["metrics"]["lr/*"]["step_metric"] == "step"


def test_the_foreground_agent_refuses_a_bad_sweep_with_exit_2_and_its_reason(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(SWEEP_CONFIG))
    bad["parameters"]["width"] = {"value": "<width>"}
    out = run_foreground_agent(tmp_path, ["agent", SWEEP], bad)
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("agent exit: refused:"), out.stdout
    assert not (tmp_path / "runs").exists()  # no point claimed


OLDEST_KUBERNETES = "1.29.0"  # README: backoffLimitPerIndex is beta and on by default from 1.29


def k8s_documents() -> tuple[dict, dict]:
    job, claim = yaml.safe_load_all(K8S_JOB.read_text())
    return job, claim


def test_the_kubernetes_job_is_a_valid_indexed_job_of_one_agent_per_gpu():
    import kubernetes_validate  # the [dev] extra (schemas inside the package: no network)
    job, claim = k8s_documents()
    for version in (kubernetes_validate.latest_version(), OLDEST_KUBERNETES):
        for document in (job, claim):
            kubernetes_validate.validate(document, version, strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):  # the check can fail: 1.27 has no such fields
        kubernetes_validate.validate(job, "1.27.0", strict=True)
    assert f"Kubernetes {OLDEST_KUBERNETES.rsplit('.', 1)[0]} or later" in (ROOT / "README.md").read_text()
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"]["key"]
    assert 'exec fractal-llm agent "$SWEEP" --max-failures 5' in " ".join(container["args"])


def test_the_kubernetes_job_contains_a_bad_index_and_retries_server_trouble():
    job, claim = k8s_documents()
    spec = job["spec"]
    # per index, not one budget for the Job: one GPU that keeps failing uses up its own index only
    assert "backoffLimit" not in spec and spec["backoffLimitPerIndex"] >= 1
    assert 1 <= spec["maxFailedIndexes"] < spec["completions"]
    actions = {}
    for rule in spec["podFailurePolicy"]["rules"]:
        for code in rule.get("onExitCodes", {}).get("values", []):
            actions[code] = rule["action"]
    assert actions == {2: "FailJob", worker.SERVER_TROUBLE_EXIT: "Ignore"}  # refused: stop all; trouble: retry
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    # the cache volume holds what fractal-llm and the hub download (paths.home(), HF_HOME)
    (mount,) = container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FRACTAL_LLM_HOME"].startswith(mount["mountPath"] + "/")
    assert env["HF_HOME"].startswith(mount["mountPath"] + "/")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every pod of the Job mounts it


def test_the_image_the_job_names_is_built_by_the_dockerfile_from_the_projects_install():
    job, _ = k8s_documents()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"docker build -t {container['image']} ." in dockerfile + K8S_JOB.read_text()
    steps = [line.split(None, 1) for line in dockerfile.splitlines() if line and not line.startswith("#")]
    assert steps[0][0] == "FROM" and "python:3.11" in steps[0][1]  # pyproject: requires-python >= 3.11
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip install -e \".[hf]\"" in runs  # the project's own install (README; scripts/setup_cpu.sh)
    assert "COPY . ." in dockerfile
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".venv/" in ignored and ".git" not in ignored  # the commit is recorded in every run (repro)
