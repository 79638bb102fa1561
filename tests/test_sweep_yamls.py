"""Every shipped sweep YAML runs as the plain `wandb agent` runs it: W&B's own grid engine (the `sweeps`
package the server runs) hands out the first run, the command line is built the way wandb's CLI agent builds
it (${env} ${interpreter} ${program} ${args}, with wandb's own argument builder), and the train entry point
runs it to a verdict. Only the budget shrinks, and the seed-study placeholders (<entity>, <hf-owner>) become
the embedded default's model and data, which is what a user fills in."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fractal_llm.config import GROUPS_2026_ONLY
from fractal_llm.records import read_record

ROOT = Path(__file__).resolve().parents[1]
YAMLS = sorted((ROOT / "sweeps").glob("*.yaml"))
LOCAL_STAND_INS = {"model_id": "tiny", "dataset_id": "docqa"}  # for values holding a <placeholder>
# (a 2026 sweep's model gets a tiny 2026-architecture stand-in: the tiny base is a Dec-2025 model)


def first_run_config(cfg: dict, grid_engine) -> dict:
    run = grid_engine.next_run(cfg, [], validate=True)
    assert run is not None
    return run.config


def cli_agent_command(cfg: dict, run_args: dict) -> list[str]:
    """The command wandb's CLI agent runs for a run (wandb_agent.Agent._command_run, on Linux)."""
    from wandb.sdk.launch.sweeps import utils as sweep_utils
    command = sweep_utils.create_sweep_command(list(cfg["command"]))
    sweep_vars = sweep_utils.create_sweep_command_args({"args": run_args})
    sweep_vars.update(interpreter=["python"], program=[cfg["program"]], env=["/usr/bin/env"])
    out: list[str] = []
    for chunk in map(str, command):
        out += (sweep_vars.get(chunk[2:-1]) or []) if chunk.startswith("${") and chunk.endswith("}") else [chunk]
    return out


@pytest.fixture(scope="module")
def tiny_2026(tiny_base, tmp_path_factory) -> str:
    """A 2026-architecture stand-in (random weights, the tiny base's tokenizer) for the 2026 sweep YAMLs."""
    import torch
    from nanochat.checkpoint import save_model
    from nanochat.gpt2026 import GPT2026, GPT2026Config
    from nanochat.tokenizer import Tokenizer
    tokenizer = Tokenizer.from_directory(tiny_base / "tokenizer")
    model = GPT2026(GPT2026Config(sequence_len=256, vocab_size=tokenizer.get_vocab_size(), n_layer=2, n_head=2,
                                  n_kv_head=2, n_embd=64, window_pattern="SL"))
    torch.manual_seed(0)
    model.init_weights()
    out = tmp_path_factory.mktemp("m2026")
    save_model(out, model, tokenizer)
    return str(out)


def needs_2026(cfg: dict) -> bool:
    groups = str(cfg["parameters"].get("trainable_param_groups", {}).get("value", ""))
    return any(group in groups for group in GROUPS_2026_ONLY) or "2026" in str(cfg.get("name", ""))


def shrunk(cfg: dict, model_2026: str) -> dict:
    params = cfg["parameters"]
    stand_ins = {**LOCAL_STAND_INS, "model_id": model_2026 if needs_2026(cfg) else LOCAL_STAND_INS["model_id"]}
    for key, spec in params.items():
        if "value" in spec and isinstance(spec["value"], str) and "<" in spec["value"]:
            params[key] = {"value": stand_ins[key]}
    params["num_iterations"] = {"value": 4}
    if params.get("model_family", {}).get("value") != "mlp":
        params.update(max_seq_len={"value": 192}, device_batch_size={"value": 2}, trainable_window_steps={"value": 2})
    return cfg


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_first_point_of_every_sweep_runs_under_the_cli_agents_command(path, tiny_base, tiny_2026, tmp_path,
                                                                      grid_engine):
    cfg = shrunk(yaml.safe_load(path.read_text()), tiny_2026)
    argv = cli_agent_command(cfg, first_run_config(cfg, grid_engine))
    assert argv[:4] == ["/usr/bin/env", "python", "-m", "fractal_llm.train"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "WANDB_MODE": "disabled",
           "FRACTAL_LLM_RUNS_DIR": str(tmp_path / "runs"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    record_line = out.stdout.strip().splitlines()[-1]
    assert record_line.startswith("record: ")
    record = read_record(record_line.removeprefix("record: "))
    assert record.verdict in ("trainable", "not_trainable", "diverged"), record.summary["error"]
