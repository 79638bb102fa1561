"""The run glue around the one train function: W&B run, local record, CLI and the W&B agent function.

train(config) -> RunResult is what every sweep point calls, in-process (local runner, W&B agent function) or
through `python -m fractal_llm.train --name=value ...` (the `${args}` command). Each model family has its own
trainer (TRAINERS); this module never looks inside one.
"""

import os
import sys
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

from fractal_llm import paths
from fractal_llm.config import ConfigError, TrainConfig, field_names
from fractal_llm.records import RunRecord, RunResult, error_message, error_summary, record_from_result, record_name, write_record
from fractal_llm.sweep import run_overrides, unpack_point

OnStep = Callable[[int, dict], None]


def _train_gpt(config: TrainConfig, on_step: OnStep | None) -> RunResult:
    from fractal_llm.finetune import train_gpt  # torch + nanochat: loaded by the family that needs them
    return train_gpt(config, on_step)


def _train_mlp(config: TrainConfig, on_step: OnStep | None) -> RunResult:
    from fractal_llm.mlp import train_one
    return train_one(config)


TRAINERS: dict[str, Callable[[TrainConfig, OnStep | None], RunResult]] = {"gpt": _train_gpt, "mlp": _train_mlp}


def train(config: TrainConfig, on_step: OnStep | None = None) -> RunResult:
    """Train one grid point with its family's trainer. Raises on errors; divergence is a verdict."""
    return TRAINERS[config.model_family](config, on_step)


def preflight(config: TrainConfig) -> None:
    """Cheap checks of the inputs on disk (gpt: dataset, model directory), before W&B or any model work."""
    if config.model_family == "gpt":
        from fractal_llm.finetune import preflight as gpt_preflight
        gpt_preflight(config)


# ----------------------------------------------------------------------------------------------
# W&B + local record: one point from start to finished record


def default_wandb_mode() -> str:
    """WANDB_MODE if set; otherwise online only when an API key is configured, else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    if not has_key:
        _say_offline_once()
        return "offline"
    return "online"


@lru_cache(maxsize=1)
def _say_offline_once() -> None:
    from rich.console import Console
    Console(stderr=True).print("[yellow]no W&B API key configured: logging offline "
                               "(upload later with `wandb sync`)[/yellow]")


def default_record_dir(sweep_id: str | None = None) -> Path:
    if os.environ.get("FRACTAL_LLM_RUNS_DIR"):
        return Path(os.environ["FRACTAL_LLM_RUNS_DIR"])
    return paths.runs_dir() / (sweep_id or "adhoc")


def execute(config: TrainConfig, name: str, record_dir: Path, run=None) -> RunRecord:
    """Train, stream each step to the W&B run (if any), write summary and local record.

    Never raises for the run's own failure: an exception becomes an `error` record."""
    t0 = time.perf_counter()
    log_s = 0.0

    def on_step(step: int, row: dict) -> None:
        nonlocal log_s
        if run is not None:
            t = time.perf_counter()
            run.log({"step": step, **row}, step=step)
            log_s += time.perf_counter() - t

    try:
        result = train(config, on_step=on_step)
    except Exception as exc:  # recorded as an `error` outcome, kept apart from divergence
        result = RunResult(config=config.resolved().to_dict(),
                           summary=error_summary(error_message(exc), time.perf_counter() - t0),
                           history={})
    t_log = time.perf_counter()
    if run is not None:
        run.summary.update(result.summary)
        if result.samples:
            import wandb
            columns = ["when", "index", "question", "answer"]
            run.log({"samples": wandb.Table(columns=columns, data=[[s[c] for c in columns] for s in result.samples])})
        run.config.update({"resolved": result.config}, allow_val_change=True)
    if "repro" in result.config:
        result.config["repro"]["timing"]["log_s"] = log_s + time.perf_counter() - t_log
    record = record_from_result(result, name, run_id=run.id if run is not None else "")
    write_record(record, record_dir)
    return record


def init_wandb_run(config_values: dict | None, mode: str | None = None):
    import wandb
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fractal-llm"), config=config_values,
                     mode=mode or default_wandb_mode())
    run.define_metric("step")
    for prefix in ("train/*", "lr/*", "val/*"):
        run.define_metric(prefix, step_metric="step")
    return run


def run_point(config: TrainConfig, name: str, record_dir: Path, wandb_mode: str | None = None) -> RunRecord:
    """The local runner's path: one point in this process, a W&B run in `wandb_mode` (default: offline)."""
    mode = wandb_mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled":
        return execute(config, name, record_dir)
    run = init_wandb_run(config.to_dict(), mode)
    record = execute(config, name, record_dir, run)
    run.finish(exit_code=1 if record.verdict == "error" else 0)
    return record


def release_accelerator_memory() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sweep_values(run_config) -> dict:
    """The train-config values of a sweep run's wandb.config (a point-list sweep's grid_point spread out)."""
    return {k: v for k, v in unpack_point(dict(run_config)).items() if k in field_names()}


def agent_function() -> None:
    """The function handed to wandb.agent: one sweep run in this (long-lived) process."""
    import wandb
    run = wandb.init()
    try:
        values = sweep_values(run.config)
        config = TrainConfig.from_dict(values)
    except ConfigError as exc:
        run.summary.update(error_summary(str(exc), 0.0))
        run.finish(exit_code=1)
        raise
    record = execute(config, record_name(values), default_record_dir(run.sweep_id), run)
    run.finish(exit_code=1 if record.verdict == "error" else 0)
    release_accelerator_memory()
    if record.verdict == "error":
        raise RuntimeError(record.summary["error"])  # the agent marks the run failed and goes on


def usage() -> str:
    defaults = TrainConfig().to_dict()
    lines = ["usage: python -m fractal_llm.train [--name=value ...]   (no arguments: a short embedded-default run)",
             "", "fields (default):"]
    lines += [f"  --{name}={value!r}" for name, value in defaults.items()]
    lines += ["", "WANDB_MODE=online|offline|disabled (default: offline without an API key);",
              "local record under $FRACTAL_LLM_RUNS_DIR (default: the cache's runs/adhoc or runs/<sweep id>)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from rich.console import Console
    console = Console(stderr=True)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    from fractal_llm.data import DatasetError
    try:
        overrides = run_overrides(argv)
        config = TrainConfig.from_dict(overrides)
        preflight(config)
    except (ConfigError, DatasetError) as exc:
        console.print(f"[red]config error:[/red] {exc}", soft_wrap=True)
        return 2
    mode = default_wandb_mode()
    run = None if mode == "disabled" else init_wandb_run(config.to_dict(), mode)
    sweep_id = getattr(run, "sweep_id", None) if run is not None else None
    if run is not None and sweep_id:
        # Inside a sweep agent the sweep's values arrive through wandb.config: use the same resolved config.
        config = TrainConfig.from_dict(sweep_values(run.config))
    record = execute(config, record_name(overrides), default_record_dir(sweep_id), run)
    summary = record.summary
    console.print(f"verdict: [bold]{summary['verdict']}[/bold]  loss {summary['loss_first']} -> "
                  f"{summary['loss_last']}  steps {summary['steps']}  {summary['runtime_s']:.2f}s", soft_wrap=True)
    if summary["error"]:
        console.print(f"[red]error:[/red] {summary['error']}", soft_wrap=True)
    exit_code = 1 if record.verdict == "error" else 0
    if run is not None:
        run.finish(exit_code=exit_code)
    print(f"record: {record.path}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
