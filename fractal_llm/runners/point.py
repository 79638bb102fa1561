"""One point from start to finished record: its W&B run, each step streamed to it, the summary, the local
record, and a stop (SIGTERM, or a stop sent from W&B) in the middle.

Every path that runs a point goes through `execute`: the local runner (`run_point`), the train CLI
(`python -m fractal_llm.train`) and the W&B worker's agent callback (fractal_llm/runners/agent.py). The trainer is
passed in (`train.train`, the dispatch over model families), so this module never imports one.
"""

import os
import signal
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable

import yaml

from fractal_llm import paths
from fractal_llm.config import TrainConfig, field_names
from fractal_llm.errors import FractalLLMError
from fractal_llm.records import RunRecord, RunResult, error_message, error_summary, record_from_result, write_record
from fractal_llm.sweep import unpack_point

TrainFn = Callable[[TrainConfig, Callable[[int, dict], None] | None], RunResult]
OnStep = Callable[[int, dict], None]
JOB_TYPE = "train"  # every point's W&B run: the UI can tell them from report runs


# ---------------------------------------------------------------------------------------------- W&B mode

class NoCredentials(FractalLLMError):
    """A sweep run with no W&B credentials: it would log offline, never be acknowledged, and be re-issued. A
    user's error like any bad input: one `error:` line, exit 2."""


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


# ---------------------------------------------------------------------------------------------- the W&B run

class NoRun:
    """The W&B run of a point that logs nowhere (W&B disabled): every call does nothing, so the code that
    streams a point never asks whether it has a run (nanochat's DummyWandb)."""
    id = ""
    name = ""
    sweep_id = None

    def __init__(self):
        self.summary: dict = {}
        self.config = _NoConfig()

    def log(self, *args, **kwargs) -> None:
        pass

    def define_metric(self, *args, **kwargs) -> None:
        pass

    def mark_preempting(self) -> None:
        pass

    def finish(self, *args, **kwargs) -> None:
        pass


class _NoConfig(dict):
    def update(self, values=(), allow_val_change: bool = False, **kwargs) -> None:
        super().update(values, **kwargs)


def define_metrics(run) -> None:
    """The same metric definitions on every path (local runner, train CLI, in-process agent): the per-step
    keys plot against `step`, and train/loss also keeps its minimum, so a diverged run's summary is not just
    NaN."""
    run.define_metric("step")
    for prefix in ("train/*", "lr/*", "val/*"):
        run.define_metric(prefix, step_metric="step")
    run.define_metric("train/loss", step_metric="step", summary="min,last")


def start_run(config_values: dict | None = None, mode: str | None = None, name: str | None = None,
              group: str | None = None):
    """wandb.init for one point (NoRun when disabled), named by its point, job_type train, metrics defined.
    Inside a sweep agent config_values is None: the sweep's values arrive through wandb.config."""
    mode = mode or default_wandb_mode()
    if mode == "disabled":
        return NoRun()
    import wandb
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fractal-llm"), config=config_values, mode=mode,
                     name=name or None, group=group, job_type=JOB_TYPE)
    define_metrics(run)
    return run


def sweep_values(run_config) -> dict:
    """The train-config values of a sweep run's wandb.config (a point-list sweep's grid_point spread out)."""
    return {k: v for k, v in unpack_point(dict(run_config)).items() if k in field_names()}


def map_name(record_dir: Path) -> str:
    """The map a local record directory holds, as the report names it: the `name` of the sweep.yaml the
    runner keeps beside the records, else the directory's name (the W&B group of its runs, for `wandb sync`)."""
    sweep_file = Path(record_dir) / "sweep.yaml"
    config = yaml.safe_load(sweep_file.read_text()) if sweep_file.is_file() else None
    name = config.get("name") if isinstance(config, dict) else None
    return str(name or Path(record_dir).resolve().name)


# ---------------------------------------------------------------------------------------------- a stop

class RunStopped(Exception):
    """The run was stopped before it finished (SIGTERM, or a stop sent from W&B): no local record is written.
    After SIGTERM (a scheduler's preemption, `fractal-llm agents --stop`) the W&B run is marked preempting and
    ends non-zero, so W&B requeues its point; a stop sent from W&B is the user's: the run just ends
    (docs/design.md, "Preemption"). `wandb_gone`: wandb's service process (wandb-core) was gone when the run
    was to be marked preempting, so it could not be (tell_wandb)."""

    def __init__(self, message: str, wandb_gone: bool = False):
        super().__init__(message)
        self.wandb_gone = wandb_gone


STOP = threading.Event()  # set by the stop-signal handler; the training loop checks it at every step
IN_FLIGHT = threading.Event()  # a run is training in this process
STOPPED_EXIT = 128 + signal.SIGTERM  # the exit code after a stop signal (SIGTERM or SIGUSR1): 143
STOP_SIGNAL = {"name": "SIGTERM"}  # which one came, for the messages


def on_sigterm(signum, frame) -> None:
    """Stop at the next step if a run is training (it is finished cleanly); else leave now. The agent also
    takes SIGUSR1 here: SLURM's warning before a time limit (examples/slurm), which wandb-core ignores, so
    the run can still be marked preempting. Either signal exits 143."""
    STOP_SIGNAL["name"] = signal.Signals(signum).name
    STOP.set()
    if not IN_FLIGHT.is_set():
        raise SystemExit(STOPPED_EXIT)


def tell_wandb(call, *args, **kwargs) -> bool:
    """A W&B call made at a stop; False when wandb's service process (wandb-core) is already gone, which
    happens when a scheduler signals every process of the job step (SLURM's scancel or preemption): wandb-core
    exits on SIGTERM, and every later call raises ConnectionResetError. The run can then no longer be marked
    preempting: the server marks it crashed once its heartbeat stops, and `fractal-llm refill` lists its point
    as a hole (docs/design.md, "What a stop leaves behind")."""
    try:
        call(*args, **kwargs)
    except ConnectionError:
        return False
    return True


def is_wandb_stop(exc: BaseException) -> bool:
    """wandb's in-process agent stops a run by raising a bare `Exception()` in the run's thread."""
    return type(exc) is Exception and not exc.args


def _stopped(run, reason: str, preempted: bool) -> bool:
    """Tell W&B the run stopped (preempted: mark it preempting, so W&B requeues it); False when wandb-core was
    gone (tell_wandb)."""
    told = tell_wandb(run.summary.update, {"verdict": None, "stopped": reason})
    return (tell_wandb(run.mark_preempting) if preempted else True) and told


# ---------------------------------------------------------------------------------------------- one point

def execute(train_fn: TrainFn, config: TrainConfig, name: str, record_dir: Path, run,
            progress: OnStep | None = None) -> RunRecord:
    """Train (a sweep's run on the sweep's pinned inputs: runners/pins.py), stream each step to the W&B run,
    write summary, verdict and local record.

    `run` is a W&B run or NoRun(); `progress(step, row)` is called after each step is logged (the CLI's
    progress line). Never raises for the run's own failure: an exception becomes an `error` record. A stop
    (SIGTERM, W&B) raises RunStopped and writes no record."""
    t0 = time.perf_counter()
    log_s = 0.0

    def on_step(step: int, row: dict) -> None:
        nonlocal log_s
        # The stop first: a scheduler that signals the whole job step has stopped wandb-core too, and logging
        # this step would raise ConnectionResetError, which would record the point as an error.
        if STOP.is_set():
            raise RunStopped(f"stopped by {STOP_SIGNAL['name']} at step {step}")
        t = time.perf_counter()
        run.log({"step": step, **row}, step=step)
        log_s += time.perf_counter() - t
        if progress is not None:
            progress(step, row)

    IN_FLIGHT.set()
    try:
        if run.sweep_id:  # a sweep's run trains on the sweep's pinned model and data, requeued days later too
            from fractal_llm.runners.pins import pin_sweep_inputs
            pin_sweep_inputs(run, config, run.sweep_id)
        result = train_fn(config, on_step)
    except RunStopped as stop:
        if not _stopped(run, str(stop), preempted=True):
            raise RunStopped(str(stop), wandb_gone=True) from None
        raise
    except Exception as exc:  # recorded as an `error` outcome, kept apart from divergence
        if is_wandb_stop(exc):
            _stopped(run, "stopped from W&B", preempted=False)
            raise RunStopped("stopped from W&B") from None
        result = RunResult(config=config.resolved().to_dict(),
                           summary=error_summary(error_message(exc), time.perf_counter() - t0),
                           history={})
    finally:
        IN_FLIGHT.clear()
    t_log = time.perf_counter()
    run.summary.update(result.summary)
    if result.samples:
        import wandb
        columns = ["when", "index", "question", "answer"]
        run.log({"samples": wandb.Table(columns=columns, data=[[s[c] for c in columns] for s in result.samples])})
    # The verdict goes into the config too: the W&B UI groups and filters runs by config values, not summary.
    run.config.update({"resolved": result.config, "verdict": result.summary["verdict"]}, allow_val_change=True)
    if "repro" in result.config:
        result.config["repro"]["timing"]["log_s"] = log_s + time.perf_counter() - t_log
    record = record_from_result(result, name, run_id=run.id)
    write_record(record, record_dir)
    return record


def exit_code(record: RunRecord) -> int:
    """A run's exit code: 1 for an error (W&B marks it failed), 0 for every verdict (divergence is a result)."""
    return 1 if record.verdict == "error" else 0


def run_point(train_fn: TrainFn, config: TrainConfig, name: str, record_dir: Path,
              wandb_mode: str | None = None, run_name: str | None = None) -> RunRecord:
    """The local runner's path: one point in this process, a W&B run in `wandb_mode` (default: offline),
    named by the point (run_name: its short form, records.run_name) and grouped by the map, so runs synced
    later read as one map in the W&B UI."""
    mode = wandb_mode or os.environ.get("WANDB_MODE") or "offline"
    run = start_run(config.to_dict(), mode, name=run_name or name,
                    group=map_name(record_dir) if mode != "disabled" else None)
    record = execute(train_fn, config, name, record_dir, run)
    run.finish(exit_code=exit_code(record))
    return record
