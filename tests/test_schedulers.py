"""The scheduler route: `fractal-llm agent` in the foreground, as examples/slurm/agents.sbatch and
examples/k8s/agents-job.yaml run it.

The agent is wandb's real in-process agent with the real client (runs logged offline); fakes only where a
server must answer (the stand-in of tests/test_agent_function.py: registration, the heartbeat, the sweep as
the server holds it). The command tested is the one the sbatch script runs: the script itself is run under
bash with a stub `fractal-llm` that prints its arguments.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from fractal_llm.records import read_records, record_name, run_name
from fractal_llm.sweep import check_sweep
from test_agent_function import FAKE_KEY, SERVER
from wandb_offline import offline_runs

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "examples" / "slurm" / "agents.sbatch"
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
    return json.loads(out.stdout)


def test_the_sbatch_script_runs_one_foreground_agent_per_gpu_task(tmp_path):
    assert subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True).returncode == 0
    directives = [line.split(None, 1)[1] for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH")]
    assert "--gres=gpu:1" in directives and "--requeue" in directives
    assert any(d.startswith("--array=") for d in directives)
    assert sbatch_argv(tmp_path) == ["agent", SWEEP, "--max-failures", "5"]
    assert sbatch_argv(tmp_path, COUNT="3", MAX_FAILURES="2") == ["agent", SWEEP, "--max-failures", "2",
                                                                 "--count", "3"]


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


def test_the_kubernetes_job_is_a_valid_indexed_job_of_one_agent_per_gpu():
    import kubernetes_validate  # the [dev] extra (schemas inside the package: no network)
    job = yaml.safe_load(K8S_JOB.read_text())
    kubernetes_validate.validate(job, kubernetes_validate.latest_version(), strict=True)
    assert job["kind"] == "Job" and job["spec"]["completionMode"] == "Indexed"
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    env = {e["name"]: e for e in container["env"]}
    assert env["WANDB_API_KEY"]["valueFrom"]["secretKeyRef"]["key"]
    assert 'exec fractal-llm agent "$SWEEP" --max-failures 5' in " ".join(container["args"])
