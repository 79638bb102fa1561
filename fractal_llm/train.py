"""The run glue around the one train function: W&B run, local record, CLI and the W&B agent function.

train(config) -> RunResult is what every sweep point calls, in-process (local runner, W&B agent function) or
through `python -m fractal_llm.train --name=value ...` (the `${args}` command). Each model family has its own
trainer (TRAINERS); this module never looks inside one.
"""

import os
import signal
import sys
import threading
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


class NoCredentials(RuntimeError):
    """A sweep run with no W&B credentials: it would log offline, never be acknowledged, and be re-issued."""


def wandb_credentials_found() -> bool:
    """wandb's own lookup, as wandb.init does it: WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, $NETRC or ~/.netrc
    for the configured host (a W&B Server's too), then wandb's settings. Never prompts."""
    import wandb
    from wandb.sdk.lib.wbauth import authenticate
    # _use_system_auth: the non-interactive half of wandb.login, with this signature from wandb 0.24.1 (the
    # floor) to 0.31; authenticate_session gained its no-prompt flag only later.
    host = authenticate.HostUrl(wandb.setup().settings.base_url)
    return authenticate._use_system_auth(host=host, source="fractal-llm") is not None


def in_sweep_run() -> bool:
    """True inside a run that a sweep agent started (both agents set these before the run starts)."""
    return bool(os.environ.get("WANDB_SWEEP_ID") and os.environ.get("WANDB_RUN_ID"))


def default_wandb_mode() -> str:
    """WANDB_MODE if set; else online when wandb finds credentials; else offline outside a sweep (said once),
    and NoCredentials inside one."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if wandb_credentials_found():
        return "online"
    if in_sweep_run():
        raise NoCredentials(f"sweep {os.environ['WANDB_SWEEP_ID']}: no W&B credentials found (WANDB_API_KEY, "
                            "WANDB_IDENTITY_TOKEN_FILE, ~/.netrc or $NETRC, wandb settings); an offline run is "
                            "never acknowledged and its point is handed out again. Run `wandb login` "
                            "(with --host for a W&B Server) on this host first.")
    _say_offline_once()
    return "offline"


@lru_cache(maxsize=1)
def _say_offline_once() -> None:
    from rich.console import Console
    Console(stderr=True).print("[yellow]no W&B credentials found: logging offline "
                               "(upload later with `wandb sync`)[/yellow]")


def default_record_dir(sweep_id: str | None = None) -> Path:
    if os.environ.get("FRACTAL_LLM_RUNS_DIR"):
        return Path(os.environ["FRACTAL_LLM_RUNS_DIR"])
    return paths.runs_dir() / (sweep_id or "adhoc")


class RunStopped(Exception):
    """The run was stopped before it finished (SIGTERM, or a stop sent from W&B): its point is not done, so
    no local record is written, and the W&B run is finished as preempting."""


_STOP = threading.Event()  # set by the SIGTERM handler; the training loop checks it at every step
_IN_FLIGHT = threading.Event()  # a run is training in this process


def on_sigterm(signum, frame) -> None:
    """Stop at the next step if a run is training (it is finished cleanly); else leave now."""
    _STOP.set()
    if not _IN_FLIGHT.is_set():
        raise SystemExit(128 + signum)


def is_wandb_stop(exc: BaseException) -> bool:
    """wandb's in-process agent stops a run by raising a bare `Exception()` in the run's thread."""
    return type(exc) is Exception and not exc.args


ACCELERATOR_POISON = ("CUDA error", "device-side assert", "CUBLAS_STATUS", "cuDNN error", "NCCL error",
                      "illegal memory access", "CUDA driver error")


def poisons_process(record: RunRecord) -> bool:
    """An accelerator error after which this process's CUDA context is unusable: every later run in it would
    fail in seconds (an out-of-memory error is not one: the next run may fit)."""
    error = record.summary.get("error") or ""
    return record.verdict == "error" and any(marker in error for marker in ACCELERATOR_POISON)


def execute(config: TrainConfig, name: str, record_dir: Path, run=None) -> RunRecord:
    """Train, stream each step to the W&B run (if any), write summary and local record.

    Never raises for the run's own failure: an exception becomes an `error` record. A stop (SIGTERM, W&B)
    raises RunStopped and writes no record: the point is not done."""
    t0 = time.perf_counter()
    log_s = 0.0

    def on_step(step: int, row: dict) -> None:
        nonlocal log_s
        if run is not None:
            t = time.perf_counter()
            run.log({"step": step, **row}, step=step)
            log_s += time.perf_counter() - t
        if _STOP.is_set():
            raise RunStopped(f"stopped by SIGTERM at step {step}")

    _IN_FLIGHT.set()
    try:
        result = train(config, on_step=on_step)
    except RunStopped as stop:
        _stopped(run, str(stop))
        raise
    except Exception as exc:  # recorded as an `error` outcome, kept apart from divergence
        if is_wandb_stop(exc):
            _stopped(run, "stopped from W&B")
            raise RunStopped("stopped from W&B") from None
        result = RunResult(config=config.resolved().to_dict(),
                           summary=error_summary(error_message(exc), time.perf_counter() - t0),
                           history={})
    finally:
        _IN_FLIGHT.clear()
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


def _stopped(run, reason: str) -> None:
    if run is not None:
        run.summary.update({"verdict": None, "stopped": reason})
        run.mark_preempting()


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
    """The function handed to wandb.agent: one sweep run in this (long-lived) process.

    A diverged run returns normally; an error finishes the run with exit code 1 and raises (the agent marks
    it failed and goes on). An accelerator error that poisons the process, or SIGTERM, ends the worker after
    finishing the run: its next runs could only fail (or must not start)."""
    import wandb
    run = wandb.init()
    try:
        values = sweep_values(run.config)
        config = TrainConfig.from_dict(values)
    except ConfigError as exc:
        run.summary.update(error_summary(str(exc), 0.0))
        run.finish(exit_code=1)
        raise
    try:
        record = execute(config, record_name(values), default_record_dir(run.sweep_id), run)
    except RunStopped as stop:
        run.finish(exit_code=128 + signal.SIGTERM if _STOP.is_set() else 0)
        if _STOP.is_set():
            _exit_worker(128 + signal.SIGTERM, f"{stop}; run {run.id} finished as preempting")
        return  # a W&B-side stop: the agent moves on
    run.finish(exit_code=1 if record.verdict == "error" else 0)
    release_accelerator_memory()
    if poisons_process(record):
        _exit_worker(3, f"accelerator error in run {run.id}, this process's CUDA context cannot be reused; "
                        f"start the agent again (first line: {record.summary['error'].splitlines()[0]})")
    if record.verdict == "error":
        raise RuntimeError(record.summary["error"])  # the agent marks the run failed and goes on


def _exit_worker(code: int, reason: str) -> None:
    """End this agent process now, from the run's thread (the run is finished and synced); the last line of
    the log says why, for `fractal-llm agents --status`."""
    from fractal_llm.agents import AGENT_EXIT
    print(f"{AGENT_EXIT} {reason}", flush=True)
    sys.stderr.flush()
    os._exit(code)


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
    try:
        mode = default_wandb_mode()
    except NoCredentials as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    signal.signal(signal.SIGTERM, on_sigterm)  # `wandb agent` stops a run with SIGTERM; so does a scheduler
    run = None if mode == "disabled" else init_wandb_run(config.to_dict(), mode)
    sweep_id = getattr(run, "sweep_id", None) if run is not None else None
    if run is not None and sweep_id:
        # Inside a sweep agent the sweep's values arrive through wandb.config: use the same resolved config.
        config = TrainConfig.from_dict(sweep_values(run.config))
    try:
        record = execute(config, record_name(overrides), default_record_dir(sweep_id), run)
    except RunStopped as stop:
        console.print(f"[yellow]{stop}[/yellow]: no record written (the point is not done)", soft_wrap=True)
        if run is not None:
            run.finish(exit_code=128 + signal.SIGTERM)
        return 128 + signal.SIGTERM
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
