"""`fractal-llm agent SWEEP`: one in-process W&B sweep agent in the foreground, the W&B worker.

It is what a scheduler runs (one per SLURM array task or Kubernetes pod and GPU: examples/slurm,
examples/k8s) and what `fractal-llm agents` starts detached, one per GPU (fractal_llm/runners/agents.py). It calls
wandb.agent(sweep, function=agent_function): the runs share this process, so the base model and the
tokenized data are loaded once, not once per run. It logs to stdout; its last line starts with AGENT_EXIT
and says why it ended.

Exit codes (EXIT_CODES, also in --help): 0 when wandb.agent returns (the sweep is done, or --count runs ran);
2 when it refuses before claiming a run (offline mode, no credentials, a key the server rejects, a sweep the
server does not have or that fails `sweep check`, a placeholder, a missing model or dataset); 75 when the W&B
server stays unreachable (timeouts, connection errors, HTTP 5xx) for --retry-for seconds of retries with
backoff: trouble, not a refusal, so the schedulers' examples start the worker again; 1 when it ends on failed
runs (--max-failures in a row, or wandb's own checks); 3 after an accelerator error that poisons the process;
143 after SIGTERM or SIGUSR1 (a run in flight is marked preempting: W&B requeues it).

In-process agent caveats (docs/design.md, "What W&B does for us") and what we do about them:
- WANDB_AGENT_DISABLE_FLAPPING=true makes wandb.agent(function=...) stop at the *first* failed run, so the
  worker removes it from its environment; wandb's default checks (3 failures in the first 60 s, ...) stay.
- A diverged run returns normally (agent_function raises only for `error`), so divergence never counts as a
  failure; agent_function frees GPU memory after each run.
- Sweeps need online mode: the worker refuses WANDB_MODE=offline/disabled.
"""

import argparse
import os
import re
import signal
import sys
import time
from functools import partial

from rich.console import Console

from fractal_llm import train

from fractal_llm.runners import point
from fractal_llm.config import ConfigError, TrainConfig
from fractal_llm.errors import FractalLLMError
from fractal_llm.records import RunRecord, error_summary, record_name, run_name
from fractal_llm.sweep import SweepError, SweepSpec, check_sweep, expand_grid, parse_sweep_path, sweep_map

AGENT_EXIT = "agent exit:"  # the last line a worker prints when it ends; `fractal-llm agents --status` shows it
DEFAULT_MAX_FAILURES = 5  # consecutive failed runs after which an agent stops (a broken host, not a bad point)
PLACEHOLDER = re.compile(r"<[A-Za-z][\w-]*>")  # <entity>, <hf-owner>: what the seed-study YAMLs ask to fill in
ACCELERATOR_POISON = ("CUDA error", "device-side assert", "CUBLAS_STATUS", "cuDNN error", "NCCL error",
                      "illegal memory access", "CUDA driver error")
SERVER_TROUBLE_EXIT = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, try again later
DEFAULT_RETRY_S = 600.0  # how long a worker retries an unreachable W&B server before it exits 75
RETRY_FIRST_WAIT_S = 2.0  # backoff between tries: 2, 4, 8, ... s, at most RETRY_MAX_WAIT_S
RETRY_MAX_WAIT_S = 60.0
RETRY_STATUSES = (408, 429)  # besides 5xx: the server's "try again later" answers
EXIT_CODES = {0: "the sweep is done, or --count runs ran",
              1: "stopped after --max-failures consecutive failed runs",
              2: "refused before claiming a run: bad sweep, no credentials, key rejected, sweep not found",
              3: "an accelerator error poisoned this process (start the agent again)",
              SERVER_TROUBLE_EXIT: "the W&B server stayed unreachable for --retry-for seconds (start it again)",
              point.STOPPED_EXIT: "stopped by SIGTERM or SIGUSR1 (the run in flight ends preempting)"}


class SweepRefused(FractalLLMError):
    """A sweep this worker will not run, or a host that cannot run one: the message says which and why."""


class ServerTrouble(Exception):
    """The W&B server did not answer (timeouts, connection errors, HTTP 5xx) through every retry: not the
    user's error, so not a FractalLLMError; the worker exits SERVER_TROUBLE_EXIT."""


# ---------------------------------------------------------------------------------------------- the W&B server

def api_status(exc: BaseException) -> tuple[bool, int | None]:
    """(whether exc is a failure to talk to the W&B server, its HTTP status if the server answered one),
    read from the exception and what it wraps. wandb 0.31 sends API calls through wandb-core, which raises
    WandbApiFailedError with the response's http_status (0 or no response: no answer in time, or no
    connection); wandb.Api() wraps it in AuthenticationError (__cause__), other calls in CommError (.exc)."""
    from wandb.sdk.lib.service.service_connection import WandbApiFailedError
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, WandbApiFailedError):
            return True, (exc.response.http_status or None) if exc.response is not None else None
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True, None
        exc = getattr(exc, "exc", None) or exc.__cause__ or exc.__context__
    return False, None


def is_server_trouble(exc: BaseException) -> bool:
    """No answer (a timeout, no connection) or a server-side failure (5xx, 408, 429): worth retrying. A key
    the server rejects (401/403) or a sweep it does not have (404) is a refusal."""
    talked, status = api_status(exc)
    return talked and (status is None or status >= 500 or status in RETRY_STATUSES)


def refusal_reason(exc: BaseException) -> str:
    status = api_status(exc)[1]
    if status in (401, 403):
        return (f"the server rejected the W&B key (HTTP {status}): check WANDB_API_KEY or run `wandb login` "
                "(with --host for a W&B Server)")
    if status == 404:
        return "the server has no such sweep (HTTP 404): check ENTITY/PROJECT/SWEEP_ID"
    return f"{type(exc).__name__}: {exc}"


def with_retries(call, what: str, retry_s: float):
    """call() until it answers; server trouble is retried with exponential backoff for retry_s seconds, then
    ServerTrouble. Anything else is raised at once (a refusal is the caller's to word)."""
    deadline, wait = time.monotonic() + retry_s, RETRY_FIRST_WAIT_S
    while True:
        try:
            return call()
        except Exception as e:
            if not is_server_trouble(e):
                raise
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerTrouble(f"{what}: no answer from the W&B server for {retry_s:g} s of retries "
                                    f"(--retry-for); last: {type(e).__name__}: {e}") from None
            print(f"agent: {what}: W&B server trouble ({type(e).__name__}: {e}); retrying in "
                  f"{min(wait, left):.3g} s", flush=True)
            time.sleep(min(wait, left))
            wait = min(2 * wait, RETRY_MAX_WAIT_S)


# ---------------------------------------------------------------------------------------------- before the first run

def refuse_offline_mode() -> None:
    """Sweeps need a server: an offline run in a sweep is never acknowledged, so W&B hands its point out again."""
    mode = os.environ.get("WANDB_MODE", "")
    if mode in ("offline", "disabled", "dryrun"):
        raise SweepRefused(f"WANDB_MODE={mode!r}: sweep agents need a W&B server (online mode; offline runs are "
                           "never acknowledged and get re-issued); without one use `fractal-llm local SWEEP.yaml`")


def refuse_without_credentials() -> None:
    if not point.wandb_credentials_found():
        raise SweepRefused("no W&B credentials found on this host (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, "
                           "~/.netrc or $NETRC, wandb settings): run `wandb login` (with --host for a W&B Server)")


def check_server_sweep(sweep_config: dict) -> SweepSpec:
    """What a worker checks before claiming its first run: the sweep as the server holds it passes `sweep
    check`, has no placeholder left (<entity>, <hf-owner>, ...), and its fixed inputs exist (train preflight:
    model source, dataset), so a bad sweep fails here once instead of as an error record per point."""
    from fractal_llm.gpt.data import DatasetError
    try:
        spec = check_sweep(sweep_config)
    except SweepError as e:
        raise SweepRefused(f"the sweep on the server does not pass `fractal-llm sweep check`: {e}") from None
    for key, value in spec.fixed.items():
        if isinstance(value, str) and PLACEHOLDER.search(value):
            raise SweepRefused(f"parameters.{key}.value={value!r}: unfilled placeholder "
                               f"{PLACEHOLDER.search(value).group(0)!r}; edit the YAML and create the sweep again")
    try:
        train.preflight(TrainConfig(**expand_grid(spec)[0]))
    except (ValueError, DatasetError) as e:  # ConfigError is a ValueError
        raise SweepRefused(f"the sweep's fixed values fail before any run: {e}") from None
    return spec


def check_before_claiming(sweep: str, retry_s: float = DEFAULT_RETRY_S
                          ) -> tuple[tuple[str, str, str], SweepSpec]:
    """Every refusal, in order, before any point is claimed: the sweep path, offline mode, credentials, and
    the sweep as the server holds it (fetched with retries: ServerTrouble when the server never answers).
    Returns ((entity, project, sweep id), the checked sweep)."""
    try:
        path = parse_sweep_path(sweep)
    except SweepError as e:
        raise SweepRefused(f"SWEEP: {e}") from None
    refuse_offline_mode()
    refuse_without_credentials()
    import wandb
    from wandb.sdk.lib.service.service_connection import WandbApiFailedError
    name = "/".join(path)
    try:
        sweep_config = with_retries(lambda: dict(wandb.Api().sweep(name).config), f"W&B sweep {name}", retry_s)
    except (ValueError, wandb.errors.Error, WandbApiFailedError) as e:  # no such sweep (ValueError), a rejected key
        raise SweepRefused(f"W&B sweep {name}: {refusal_reason(e)}") from None
    return path, check_server_sweep(sweep_config)


# ---------------------------------------------------------------------------------------------- one run

_failed_in_a_row = 0  # consecutive failed runs of this process (wandb.agent stops at --max-failures of them)


def poisons_process(record: RunRecord) -> bool:
    """An accelerator error after which this process's CUDA context is unusable: every later run in it would
    fail in seconds (an out-of-memory error is not one: the next run may fit)."""
    error = record.summary.get("error") or ""
    return record.verdict == "error" and any(marker in error for marker in ACCELERATOR_POISON)


def release_accelerator_memory() -> None:
    import torch
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def agent_function(axis_names: tuple[str, ...] = (), axes: tuple = (), group: str | None = None) -> None:
    """The function handed to wandb.agent: one sweep run in this (long-lived) process, named by its point
    (the values of `axis_names`; every value of the run when none are given): its record by the exact values,
    its W&B run by the short ones (records.run_name over the sweep's `axes`), in the W&B group of its map.

    A diverged run returns normally; an error finishes the run with exit code 1 and raises (the agent marks
    it failed and goes on). An accelerator error that poisons the process, or SIGTERM, ends the worker after
    finishing the run: its next runs could only fail (or must not start)."""
    global _failed_in_a_row
    run = point.start_run(group=group)
    try:
        values = point.sweep_values(run.config)
        config = TrainConfig.from_dict(values)
    except ConfigError as exc:
        _failed_in_a_row += 1
        run.summary.update(error_summary(str(exc), 0.0))
        run.finish(exit_code=1)
        raise
    point_values = {k: values[k] for k in axis_names if k in values} or values
    name = record_name(point_values)
    run.name = run_name(point_values, axes)
    try:
        record = point.execute(train.train, config, name, point.default_record_dir(run.sweep_id), run)
    except point.RunStopped as stop:
        if point.STOP.is_set():  # a stop signal: non-zero after mark_preempting, so W&B requeues the point
            if point.tell_wandb(run.finish, exit_code=point.STOPPED_EXIT) and not stop.wandb_gone:
                _exit_worker(point.STOPPED_EXIT, f"{stop}; run {run.id} finished as preempting")
            _exit_worker(point.STOPPED_EXIT, f"{stop}; wandb-core was already gone (the signal reached it "
                                             f"too), so run {run.id} could not be marked preempting: W&B marks "
                                             "it crashed and `fractal-llm refill` lists its point")
        run.finish(exit_code=0)
        return  # a W&B-side stop: the agent moves on
    run.finish(exit_code=point.exit_code(record))
    release_accelerator_memory()
    if poisons_process(record):
        _exit_worker(3, f"accelerator error in run {run.id}, this process's CUDA context cannot be reused; "
                        f"start the agent again (first line: {record.summary['error'].splitlines()[0]})")
    if record.verdict == "error":
        _failed_in_a_row += 1
        raise RuntimeError(record.summary["error"])  # the agent marks the run failed and goes on
    _failed_in_a_row = 0


def _server_trouble(e: ServerTrouble) -> int:
    Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
    print(f"{AGENT_EXIT} server trouble (exit {SERVER_TROUBLE_EXIT}, start the agent again): {e}", flush=True)
    return SERVER_TROUBLE_EXIT


def _exit_worker(code: int, reason: str) -> None:
    """End this agent process now, from the run's thread (the run is finished and synced); the last line of
    the log says why, for `fractal-llm agents --status`."""
    print(f"{AGENT_EXIT} {reason}", flush=True)
    sys.stderr.flush()
    os._exit(code)


def agent_kwargs(max_failures: int) -> dict:
    """max_consecutive_failed_runs where wandb.agent takes it (wandb >= 0.31): after its first success the
    in-process agent otherwise never stops on failures, and a full disk or expired credentials would mark
    every remaining grid point failed in seconds (a grid never re-issues a point that has a run)."""
    import inspect

    import wandb
    if "max_consecutive_failed_runs" in inspect.signature(wandb.agent).parameters:
        return {"max_consecutive_failed_runs": max_failures}
    print(f"warning: wandb {wandb.__version__} has no max_consecutive_failed_runs; failures never stop this "
          "agent (upgrade wandb)", flush=True)
    return {}


# ---------------------------------------------------------------------------------------------- CLI

def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fractal-llm agent", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="One W&B sweep agent in the foreground (in-process: the model loads once), logging to "
                    "stdout:\nwhat a SLURM task or a Kubernetes pod runs. SIGTERM or SIGUSR1 stops it: the run "
                    "in flight ends preempting.",
        epilog="exit codes:\n" + "\n".join(f"  {code:<4} {what}" for code, what in sorted(EXIT_CODES.items())))
    parser.add_argument("sweep", help="ENTITY/PROJECT/SWEEP_ID")
    parser.add_argument("--count", type=int, help="runs to do, then exit 0 (default: until the sweep is done)")
    parser.add_argument("--max-failures", type=int, default=DEFAULT_MAX_FAILURES,
                        help=f"stop after this many consecutive failed runs (default {DEFAULT_MAX_FAILURES})")
    parser.add_argument("--retry-for", type=float, default=DEFAULT_RETRY_S, metavar="SECONDS",
                        help="retry an unreachable W&B server (timeouts, connection errors, 5xx) with backoff "
                             f"this long, then exit {SERVER_TROUBLE_EXIT} (default {DEFAULT_RETRY_S:g})")
    parser.add_argument("--check", action="store_true",
                        help="only check (credentials, the sweep on the server) and exit: 0 = an agent may start")
    return parser


def main(argv: list[str]) -> int:
    global _failed_in_a_row
    args = _build_parser().parse_args(argv)
    try:
        if args.max_failures < 1:
            raise SweepRefused(f"--max-failures={args.max_failures}: must be >= 1")
        if args.count is not None and args.count < 1:
            raise SweepRefused(f"--count={args.count}: must be >= 1")
        if not args.retry_for >= 0:
            raise SweepRefused(f"--retry-for={args.retry_for:g}: must be >= 0 seconds")
        (entity, project, sweep_id), spec = check_before_claiming(args.sweep, args.retry_for)
    except SweepRefused as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        print(f"{AGENT_EXIT} refused: {e}", flush=True)
        return 2
    except ServerTrouble as e:
        return _server_trouble(e)
    if args.check:
        print(f"agent check: sweep {entity}/{project}/{sweep_id} ({spec.name}) may be run from this host", flush=True)
        return 0
    # With this set, wandb.agent(function=...) stops at the first failed run; without it the agent goes on.
    os.environ.pop("WANDB_AGENT_DISABLE_FLAPPING", None)
    import wandb
    signal.signal(signal.SIGTERM, point.on_sigterm)  # finish the run in flight as preempting, then exit
    signal.signal(signal.SIGUSR1, point.on_sigterm)  # the same for SLURM's time-limit warning (examples/slurm)
    print(f"agent: sweep {entity}/{project}/{sweep_id} count={args.count} max_failures={args.max_failures} "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')!r} pid={os.getpid()}", flush=True)
    _failed_in_a_row = 0
    try:
        function = partial(agent_function, tuple(spec.axis_names), tuple(spec.axes), sweep_map(spec.raw))
        wandb.agent(sweep_id, function=function, entity=entity,
                    project=project, count=args.count, **agent_kwargs(args.max_failures))
    except SystemExit as exit_:  # a stop signal between runs
        print(f"{AGENT_EXIT} stopped by {point.STOP_SIGNAL['name']} between runs", flush=True)
        return int(exit_.code or 0)
    except Exception as e:  # registering the agent talks to the server (the heartbeat rides out blips itself)
        if not is_server_trouble(e):
            raise
        return _server_trouble(ServerTrouble(f"wandb.agent: {type(e).__name__}: {e}"))
    if _failed_in_a_row:  # --max-failures, or wandb's own checks (3 failures in the first 60 s, ...)
        print(f"{AGENT_EXIT} stopped after {_failed_in_a_row} consecutive failed run(s) (--max-failures "
              f"{args.max_failures}, or wandb's own failure checks): see the errors above", flush=True)
        return 1
    print(f"{AGENT_EXIT} wandb.agent returned: the sweep is done, or --count runs ran", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
