import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import fractal_llm.gpt.data
import nanochat.checkpoint
from fractal_llm.gpt import finetune
from fractal_llm import train as train_module
from fractal_llm.runners import agent as worker
from fractal_llm.config import TrainConfig
from fractal_llm.records import SUMMARY_KEYS, read_record, record_name
from fractal_llm.gpt.finetune import lr_multiplier, planned_steps, steps_for_budget
from fractal_llm.train import train
from wandb_offline import offline_runs

SHORT = dict(max_seq_len=192, device_batch_size=4, num_iterations=6, trainable_window_steps=3)


def test_token_budget_gives_step_count():
    assert steps_for_budget(1000, batch_size=8, mean_supervised_tokens=12.5) == 10
    assert steps_for_budget(1001, batch_size=8, mean_supervised_tokens=12.5) == 11
    with pytest.raises(ValueError, match="supervised"):
        steps_for_budget(1000, batch_size=8, mean_supervised_tokens=0.0)


def test_token_budget_on_a_real_dataset(tiny_base):
    config = TrainConfig(max_seq_len=192, device_batch_size=4, num_tokens=500)
    from nanochat.tokenizer import Tokenizer
    dataset = finetune.get_dataset(config, "train", Tokenizer.from_directory(tiny_base / "tokenizer"))
    per_step = 4 * dataset.mean_supervised_tokens  # only assistant tokens count
    steps = planned_steps(config, dataset)
    assert (steps - 1) * per_step < 500 <= steps * per_step


def test_schedule_warmup_cosine_and_constant():
    cosine = TrainConfig(warmup_frac=0.1, final_lr_frac=0.0)
    values = [lr_multiplier(s, 100, cosine) for s in range(100)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[10] == pytest.approx(1.0) and values[99] < 0.01
    assert all(a >= b for a, b in zip(values[10:], values[11:]))
    constant = TrainConfig(warmup_frac=0.0, lr_schedule="constant", init_lr_frac=0.5)
    assert {lr_multiplier(s, 50, constant) for s in range(50)} == {0.5}


def test_same_seed_gives_identical_losses(tiny_base):
    config = TrainConfig(matrix_lr=0.01, unembedding_lr=0.01, seed=3, **SHORT)
    first = train(config)
    second = train(config)
    assert first.history["train/loss"] == second.history["train/loss"]
    assert len(first.history["train/loss"]) == 6
    other = train(TrainConfig(matrix_lr=0.01, unembedding_lr=0.01, seed=4, **SHORT))
    assert other.history["train/loss"] != first.history["train/loss"]


def test_second_call_does_not_reload_checkpoint_or_data(tiny_base, monkeypatch):
    finetune.clear_caches()
    calls = {"model": 0, "data": 0}
    real_load_model, real_load_tokenized = nanochat.checkpoint.load_model, fractal_llm.gpt.data.load_tokenized

    def counting_load_model(*args, **kwargs):
        calls["model"] += 1
        return real_load_model(*args, **kwargs)

    def counting_load_tokenized(*args, **kwargs):
        calls["data"] += 1
        return real_load_tokenized(*args, **kwargs)

    monkeypatch.setattr(nanochat.checkpoint, "load_model", counting_load_model)
    monkeypatch.setattr(fractal_llm.gpt.data, "load_tokenized", counting_load_tokenized)
    a = train(TrainConfig(matrix_lr=0.01, **SHORT))
    b = train(TrainConfig(matrix_lr=0.01, **SHORT))
    assert calls == {"model": 1, "data": 1}
    # each call starts from a fresh copy of the base weights
    assert a.history["train/loss"] == b.history["train/loss"]


def test_frozen_groups_and_lr_history(tiny_base):
    result = train(TrainConfig(matrix_lr=0.01, trainable_param_groups="lm_head", unembedding_lr=0.002,
                               warmup_frac=0.0, lr_schedule="constant", **SHORT))
    assert set(result.history) == {"train/loss", "train/tokens_seen", "lr/unembedding"}
    scale = (64 / 768) ** -0.5  # nanochat scales AdamW LRs by (n_embd / 768) ** -0.5
    assert result.history["lr/unembedding"][0] == pytest.approx(0.002 * scale)
    assert result.config["unembedding_lr"] == 0.002 and result.config["repro"]["torch"]


def test_absurd_learning_rate_diverges(tiny_base):
    result = train(TrainConfig(matrix_lr=1e30, unembedding_lr=1e30, **SHORT))
    assert result.summary["verdict"] == "diverged"
    step = result.summary["diverged_at_step"]
    assert step is not None and len(result.history["train/loss"]) == step + 1


def run_cli(args, tiny_base, tmp_path, mode="disabled"):
    env = dict(os.environ, WANDB_MODE=mode, FRACTAL_LLM_RUNS_DIR=str(tmp_path / "runs"), WANDB_DIR=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "fractal_llm.train", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_entry_point_offline_run_writes_wandb_dir_and_record(tiny_base, tmp_path):
    args = [f"--{k}={v}" for k, v in SHORT.items()] + ["--matrix_lr=0.01"]
    proc = run_cli(args, tiny_base, tmp_path, mode="offline")
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("record: ")
    record = read_record(last.removeprefix("record: "))
    assert set(SUMMARY_KEYS) <= set(record.summary)
    assert len(record.history["train/loss"]) == record.summary["steps"] == 6
    (run,) = offline_runs(tmp_path / "wandb").values()
    assert run["name"] == record.name and run["job_type"] == "train" and run["config"]["verdict"] == record.verdict
    assert run["metrics"]["train/loss"] == {"step_metric": "step", "summary": ["last", "min"]}
    assert run["summary"]["train/loss"]["min"] == min(record.history["train/loss"])
    assert "step 0  train/loss" in proc.stderr  # a progress line while it trains, before the verdict


def test_the_local_runners_point_is_a_named_run_in_its_maps_group(tmp_path, monkeypatch):
    """What `fractal-llm local` logs for `wandb sync`: named by the point, grouped by the map, the verdict in
    the config (the W&B UI groups by config), the same metric definitions as every other path."""
    import wandb

    from fractal_llm.runners import point
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    wandb.teardown()  # settings (WANDB_DIR) are read again from the environment, as the agent does per run
    out = tmp_path / "runs-dir"
    out.mkdir()
    (out / "sweep.yaml").write_text("name: my_map\n")
    name = record_name(POINT)
    record = point.run_point(train, TrainConfig(model_family="mlp", num_iterations=5, **POINT), name, out,
                             wandb_mode="offline")
    wandb.teardown()  # the run file is written by wandb's service process: flushed when it shuts down
    (run,) = offline_runs(tmp_path / "wandb").values()
    assert (run["name"], run["group"], run["job_type"]) == (name, "my_map", "train")
    assert run["config"]["verdict"] == record.verdict and run["config"]["lr_input"] == POINT["lr_input"]
    assert set(run["metrics"]) >= {"step", "train/*", "lr/*", "val/*", "train/loss"}


def test_a_point_without_wandb_runs_through_the_no_op_run(tmp_path):
    from fractal_llm.runners import point
    run = point.start_run({"a": 1}, mode="disabled")
    assert isinstance(run, point.NoRun) and run.id == "" and run.sweep_id is None
    record = point.execute(train, TrainConfig(model_family="mlp", num_iterations=5), "p", tmp_path, run)
    run.finish(exit_code=point.exit_code(record))
    assert run.summary["verdict"] == record.verdict == read_record(record.path).verdict
    assert run.config["verdict"] == record.verdict and record.run_id == ""
    assert not (tmp_path / "wandb").exists()


def test_help_describes_each_field_from_its_comment_in_config():
    text = train_module.usage()
    lines = {line.split("=", 1)[0].strip(): line for line in text.splitlines() if line.startswith("  --")}
    assert set(lines) == {f"--{name}" for name in TrainConfig().to_dict()}
    assert "<= 0: derived from learning_rate" in lines["--matrix_lr"]  # config.py's own comment
    assert "one of cosine|constant" in lines["--lr_schedule"] and "[0.0, 1.0)" in lines["--warmup_frac"]
    assert "[mlp family" in lines["--width"]
    assert "[both families]" in lines["--seed"] and "[both families]" in lines["--trainable_window_steps"]
    assert "2026 nanochat models only" in lines["--smear_lr"] and "2026" not in lines["--trainable_param_groups"]
    undocumented = [name for name, line in lines.items() if line.rstrip().endswith("family]") or "  # " not in line]
    assert not undocumented  # every field says what it is


def test_fractal_llm_version(capsys):
    from importlib.metadata import version

    from fractal_llm.cli import main
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"fractal-llm {version('fractal-llm')}"


def test_entry_point_exits_zero_on_divergence(tiny_base, tmp_path):
    args = [f"--{k}={v}" for k, v in SHORT.items()] + ["--matrix_lr=1e30", "--unembedding_lr=1e30"]
    proc = run_cli(args, tiny_base, tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(Path(proc.stdout.strip().splitlines()[-1].removeprefix("record: ")).read_text())
    assert record["summary"]["verdict"] == "diverged"


@pytest.mark.parametrize("args, needle", [
    (["--matrix_lr=-0.1", "--learning_rate=-1"], "matrix_lr"),
    (["--trainable_param_groups=matrix,heads"], "trainable_param_groups"),
    (["--matrx_lr=0.1"], "matrix_lr"),
    (["--dataset_id=/nonexistent/chat.jsonl"], "/nonexistent/chat.jsonl"),
    (["--model_id=/nonexistent/checkpoint"], "model_id"),
])
def test_bad_config_fails_before_training(args, needle, tiny_base, tmp_path):
    proc = run_cli(args, tiny_base, tmp_path)
    assert proc.returncode == 2
    assert needle in proc.stderr
    assert not (tmp_path / "runs").exists()  # nothing ran, nothing recorded


def test_evaluation_on_a_single_local_file_is_refused_before_training(tiny_base, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A."}]}] * 4
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "chats.jsonl").write_text(text)
    proc = run_cli([f"--dataset_id={tmp_path / 'chats.jsonl'}", "--eval_every=5"], tiny_base, tmp_path)
    assert proc.returncode == 2
    assert "chats.jsonl" in proc.stderr and "eval_every=5" in proc.stderr and "validation" in proc.stderr
    assert not (tmp_path / "runs").exists()
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    for name in ("train.jsonl", "validation.jsonl"):
        (split_dir / name).write_text(text)
    train_module.preflight(TrainConfig(dataset_id=str(split_dir), eval_every=5))  # a directory with both splits


def test_bad_checkpoint_is_an_error_outcome(tiny_base, tmp_path):
    broken = tmp_path / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "model_000001.pt").write_bytes(b"not a checkpoint")
    (broken / "checkpoints" / "meta_000001.json").write_text("{}")
    proc = run_cli([f"--model_id={broken}"] + [f"--{k}={v}" for k, v in SHORT.items()], tiny_base, tmp_path)
    assert proc.returncode == 1
    record = read_record(proc.stdout.strip().splitlines()[-1].removeprefix("record: "))
    assert record.verdict == "error" and record.summary["error"]


def test_samples_before_after_and_every(tiny_base):
    result = train(TrainConfig(matrix_lr=0.01, sample_before_after=True, sample_every=4, **SHORT))
    whens = [s["when"] for s in result.samples]
    assert whens.count("before") == 3 and whens.count("after") == 3
    assert whens.count("step 0") == 3 and whens.count("step 4") == 3
    assert all(isinstance(s["answer"], str) and s["question"] for s in result.samples)


def test_record_names_follow_the_overrides():
    assert record_name({}) == "defaults"
    assert record_name({"matrix_lr": 0.01, "seed": 1}) == "matrix_lr=0.01,seed=1"
    long = record_name({f"field_{i}": i for i in range(40)})
    assert len(long) <= 113 and long != record_name({f"field_{i}": i + 1 for i in range(40)})


def test_every_family_gives_one_record_shape_through_execute(tiny_base, tmp_path):
    """The mlp result once lacked repro.timing and crashed execute outside its try: both families now
    go through one path and one repro shape."""
    from fractal_llm.runners.point import NoRun, execute
    mlp_record = execute(train, TrainConfig(model_family="mlp", num_iterations=5), "mlp", tmp_path, NoRun())
    gpt_record = execute(train, TrainConfig(matrix_lr=0.01, **SHORT), "gpt", tmp_path, NoRun())
    for record in (mlp_record, gpt_record):
        assert record.verdict in ("trainable", "not_trainable", "diverged")
        assert set(record.config["repro"]) >= {"git_commit", "torch", "device", "host", "timing"}
        assert "log_s" in record.config["repro"]["timing"] and read_record(record.path).config == record.config


def test_an_exception_in_the_trainer_is_an_error_record_with_its_traceback(tmp_path, monkeypatch):
    from fractal_llm.runners import point
    from fractal_llm import train as glue

    def broken(config, on_step):
        raise ZeroDivisionError("our own bug")

    monkeypatch.setitem(glue.TRAINERS, "mlp", broken)
    record = point.execute(glue.train, TrainConfig(model_family="mlp", num_iterations=5), "broken", tmp_path,
                           point.NoRun())
    assert record.verdict == "error" and record.config["lr_input"] == 0.1
    assert record.summary["error"].startswith("ZeroDivisionError: our own bug")
    assert "Traceback" in record.summary["error"] and "in broken" in record.summary["error"]


def test_only_the_family_in_use_is_validated():
    from fractal_llm.config import ConfigError
    TrainConfig(model_family="mlp", learning_rate=0.0, model_id="", dataset_id="")  # no GPT group in an mlp run
    with pytest.raises(ConfigError, match="matrix_lr=0.0"):
        TrainConfig(learning_rate=0.0)
    with pytest.raises(ConfigError, match="dataset_size=-2"):
        TrainConfig(model_family="mlp", dataset_size=-2)
    TrainConfig(dataset_size=-2)  # an mlp field is not a GPT run's business


POINT = {"lr_input": 1.0, "lr_output": 10.0}


def test_entry_point_unpacks_a_point_list_sweeps_grid_point(tmp_path, monkeypatch, capsys):
    """What the CLI agent runs for a point-list sweep: --grid_point={...} (Python's str of the dict)."""
    monkeypatch.setenv("FRACTAL_LLM_RUNS_DIR", str(tmp_path))
    code = train_module.main(["--model_family=mlp", "--num_iterations=5", f"--grid_point={POINT!r}"])
    assert code == 0, capsys.readouterr().err
    record = read_record(capsys.readouterr().out.strip().splitlines()[-1].removeprefix("record: "))
    assert (record.config["lr_input"], record.config["lr_output"]) == (1.0, 10.0)
    assert record.name == record_name({"model_family": "mlp", "num_iterations": 5, **POINT})


def test_agent_function_unpacks_grid_point_from_the_sweep_config_file(tmp_path, monkeypatch):
    """The in-process agent writes the run's parameters to WANDB_SWEEP_PARAM_PATH (wandb's own writer) and
    wandb.init() reads them into run.config: grid_point arrives there as one dict."""
    import wandb
    from wandb.sdk.lib import config_util
    params = tmp_path / "config-run1.yaml"
    config_util.save_config_file_from_dict(str(params), {"grid_point": {"value": POINT},
                                                         "model_family": {"value": "mlp"},
                                                         "num_iterations": {"value": 5}})
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("FRACTAL_LLM_RUNS_DIR", str(tmp_path / "runs"))
    wandb.teardown()  # the agent does this before each run: settings are read again from the environment
    try:
        worker.agent_function()
    finally:
        wandb.teardown()
    (path,) = (tmp_path / "runs").glob("*.json")
    record = read_record(path)
    assert (record.config["lr_input"], record.config["lr_output"]) == (1.0, 10.0)
    assert record.verdict != "error" and "grid_point" not in record.config
