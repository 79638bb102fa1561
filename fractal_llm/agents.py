"""`fractal-llm agents SWEEP`: one long-lived W&B agent process per GPU, on this host or over ssh.

Each agent is `PYTHON -m fractal_llm.agents worker SWEEP`, started with CUDA_VISIBLE_DEVICES=i, which calls
wandb.agent(sweep, function=fractal_llm.train.agent_function): the runs of one agent share its process, so
the base model and the tokenized data are loaded once per GPU, not once per run.

In-process agent caveats (docs/design.md, "What W&B does for us") and what we do about them:
- WANDB_AGENT_DISABLE_FLAPPING=true makes wandb.agent(function=...) stop at the *first* failed run, so the
  worker removes it from its environment; wandb's default checks (3 failures in the first 60 s, ...) stay.
- A diverged run returns normally (agent_function raises only for `error`), so divergence never counts as a
  failure; agent_function frees GPU memory after each run.
- Sweeps need online mode: the worker refuses WANDB_MODE=offline/disabled.
- A CPU-only host (no nvidia-smi, or no GPU listed) gets one agent with CUDA_VISIBLE_DEVICES="" (explicit:
  torch sees no GPU), named "cpu".

Each agent logs to LOGDIR/agent-<host>-gpu<i>.log, its pid is in LOGDIR/agent-<host>-gpu<i>.pid. The agent
runs in its own session (setsid), so --stop signals the whole process group. With --hosts everything
(GPU detection, start, status, stop) runs as one shell script per host over `SSH HOST SCRIPT`; logs and
pid files stay on that host. Nothing assumes a particular cloud: any host you can ssh into with the repo
installed at --workdir.
"""

import argparse
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fractal_llm import paths
from fractal_llm.errors import FractalLLMError
from fractal_llm.pool import usable_cores
from fractal_llm.sweep import SweepError, parse_sweep_path

LOCAL = socket.gethostname()  # pid/log names carry the host: a shared logdir (NFS) never collides
PLACEHOLDER = re.compile(r"<[A-Za-z][\w-]*>")  # <entity>, <hf-owner>: what the seed-study YAMLs ask to fill in
AGENT_EXIT = "agent exit:"  # the last line a worker prints when it ends; --status shows it
DEFAULT_MAX_FAILURES = 5  # consecutive failed runs after which an agent stops (a broken host, not a bad point)
AGENT_MARK = "fractal_llm.agents"  # what an agent's command line contains (checked before signalling a pid)
REMOTE_LOGDIR = '"${FRACTAL_LLM_HOME:-$HOME/.cache/fractal-llm}/agents"'  # expanded by the remote shell


class AgentsError(FractalLLMError):
    """Bad arguments or a host that cannot be used; the message says which and why."""


@dataclass
class Slot:
    """One agent: a host and a GPU id ("cpu" on a host without GPUs)."""
    host: str
    gpu: str

    @property
    def label(self) -> str:
        return f"agent-{self.host}-{'cpu' if self.gpu == 'cpu' else 'gpu' + self.gpu}"

    @property
    def cuda_visible_devices(self) -> str:
        return "" if self.gpu == "cpu" else self.gpu


def sweep_path(text: str) -> tuple[str, str, str]:
    try:
        return parse_sweep_path(text)
    except SweepError as e:
        raise AgentsError(f"SWEEP: {e}") from None


def refuse_offline_mode() -> None:
    """Sweeps need a server: an offline run in a sweep is never acknowledged, so W&B hands its point out again."""
    mode = os.environ.get("WANDB_MODE", "")
    if mode in ("offline", "disabled", "dryrun"):
        raise AgentsError(f"WANDB_MODE={mode!r}: sweep agents need a W&B server (online mode; offline runs are "
                          "never acknowledged and get re-issued); without one use `fractal-llm local SWEEP.yaml`")


def parse_gpus(text: str) -> list[str] | None:
    """'all' -> None (detect); '0,1,3' -> ['0', '1', '3']."""
    if text == "all":
        return None
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise AgentsError(f"--gpus={text!r}: expected `all` or distinct GPU indices like 0,1,2")
    return ids


def count_gpus_in(nvidia_smi_output: str) -> list[str]:
    """`nvidia-smi -L` prints one 'GPU i: ...' line per device."""
    return [str(i) for i, line in enumerate(l for l in nvidia_smi_output.splitlines() if l.startswith("GPU "))]


# ---------------------------------------------------------------------------------------------- commands

def worker_argv(python: str, sweep: str, count: int | None, max_failures: int = DEFAULT_MAX_FAILURES) -> list[str]:
    argv = [*shlex.split(python), "-m", "fractal_llm.agents", "worker", sweep, "--max-failures", str(max_failures)]
    return argv + (["--count", str(count)] if count is not None else [])


def threads_per_agent(cores: int, slots: list[Slot]) -> int | None:
    """torch/OMP threads of each agent on a GPU host: the cores shared out (eight agents each starting a
    thread per core fight for the CPU: on this project's 2-core machine two busy processes with default
    threads ran 5.8x slower each, not 2x). A CPU-only host runs one agent, which keeps every core."""
    gpu_slots = [s for s in slots if s.gpu != "cpu"]
    return max(1, cores // len(gpu_slots)) if gpu_slots else None


def remote_start_script(slots: list[Slot], workdir: str, logdir: str, argv: list[str]) -> str:
    """One shell script for a host: per slot, start the agent unless its pid file names a live agent."""
    command = shlex.join(argv)
    lines = [f"cd {shlex.quote(workdir)} || exit 3", f"LOGDIR={logdir}", 'mkdir -p "$LOGDIR" || exit 3']
    threads = ""
    gpu_slots = [s for s in slots if s.gpu != "cpu"]
    if gpu_slots:  # threads_per_agent, with the remote host's core count
        lines.append(f'THREADS=$(( $(nproc) / {len(gpu_slots)} )); [ "$THREADS" -ge 1 ] || THREADS=1')
        threads = 'OMP_NUM_THREADS="$THREADS" '
    for slot in slots:
        pid_file, log_file = f'"$LOGDIR/{slot.label}.pid"', f'"$LOGDIR/{slot.label}.log"'
        lines.append(
            f"if [ -f {pid_file} ] && ps -ww -o args= -p \"$(cat {pid_file})\" 2>/dev/null | grep -q {AGENT_MARK}; "
            f"then echo \"{slot.label} running $(cat {pid_file})\"; "
            f"else {threads}CUDA_VISIBLE_DEVICES={shlex.quote(slot.cuda_visible_devices)} setsid nohup {command} "
            f"> {log_file} 2>&1 < /dev/null & echo $! > {pid_file}; echo \"{slot.label} started $!\"; fi")
    return "\n".join(lines)


def remote_status_script(host: str, workdir: str, logdir: str, stop: bool) -> str:
    """List (and with stop=True, SIGTERM the process group of) every agent pid file of this host."""
    action = 'kill -TERM -- "-$pid" && rm -f "$f" && echo "$name stopped $pid"' if stop else \
        'echo "$name running $pid"'
    return "\n".join([
        f"cd {shlex.quote(workdir)} || exit 3", f"LOGDIR={logdir}",
        f'for f in "$LOGDIR"/agent-{host}-*.pid; do',
        '  [ -f "$f" ] || continue',
        '  name=$(basename "$f" .pid); pid=$(cat "$f")',
        f'  if ps -ww -o args= -p "$pid" 2>/dev/null | grep -q {AGENT_MARK}; then {action};',
        f'  else echo "$name dead $pid $(grep -h "{AGENT_EXIT}" "$LOGDIR/$name.log" 2>/dev/null | tail -n 1)"; fi',
        "done"])


# ---------------------------------------------------------------------------------------------- local host

def detect_local_gpus() -> list[str]:
    """This host's GPUs as CUDA_VISIBLE_DEVICES ids (agents and the local runner; no torch import, no CUDA init)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # this shell already restricts the GPUs: use exactly those
        return [d.strip() for d in visible.split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if out.returncode != 0:
        raise AgentsError(f"nvidia-smi -L failed (exit {out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return count_gpus_in(out.stdout)


def pid_is_agent(pid: int) -> bool:
    out = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return out.returncode == 0 and AGENT_MARK in out.stdout


def read_pid(pid_file: Path) -> int | None:
    text = pid_file.read_text().strip() if pid_file.exists() else ""
    return int(text) if text.isdigit() else None


def start_local(slots: list[Slot], workdir: Path, logdir: Path, argv: list[str]) -> list[tuple[Slot, str, int]]:
    logdir.mkdir(parents=True, exist_ok=True)
    threads = threads_per_agent(usable_cores(), slots)
    started = []
    for slot in slots:
        pid_file = logdir / f"{slot.label}.pid"
        pid = read_pid(pid_file)
        if pid is not None and pid_is_agent(pid):
            started.append((slot, "running", pid))
            continue
        env = {k: v for k, v in os.environ.items() if k != "WANDB_AGENT_DISABLE_FLAPPING"}
        env["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible_devices
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        with open(logdir / f"{slot.label}.log", "w") as log:
            # start_new_session: the agent survives this command and its terminal; its pid is its group id.
            proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        pid_file.write_text(f"{proc.pid}\n")
        started.append((slot, "started", proc.pid))
    return started


def last_exit_line(log_file: Path) -> str:
    """Why an agent ended itself: the last `agent exit:` line of its log ('' when it never said)."""
    if not log_file.is_file():
        return ""
    lines = [line for line in log_file.read_text(errors="replace").splitlines() if AGENT_EXIT in line]
    return lines[-1].strip() if lines else ""


def status_local(logdir: Path, stop: bool) -> list[tuple[str, str, int, str]]:
    rows = []
    for pid_file in sorted(logdir.glob(f"agent-{LOCAL}-*.pid")) if logdir.is_dir() else []:
        pid = read_pid(pid_file)
        alive = pid is not None and pid_is_agent(pid)
        if alive and stop:
            os.killpg(pid, signal.SIGTERM)
            pid_file.unlink()
            rows.append((pid_file.stem, "stopped", pid, ""))
        elif alive:
            rows.append((pid_file.stem, "running", pid, ""))
        else:
            rows.append((pid_file.stem, "dead", pid or -1, last_exit_line(logdir / f"{pid_file.stem}.log")))
    return rows


# ---------------------------------------------------------------------------------------------- remote hosts

def ssh_run(ssh: str, host: str, script: str) -> subprocess.CompletedProcess:
    return subprocess.run([*shlex.split(ssh), host, script], capture_output=True, text=True)


def detect_remote_gpus(ssh: str, host: str) -> list[str]:
    out = ssh_run(ssh, host, "nvidia-smi -L")
    if out.returncode == 255:
        raise AgentsError(f"{host}: ssh failed: {out.stderr.strip()}")
    if out.returncode == 127:  # no nvidia-smi: a CPU host
        return []
    if out.returncode != 0:
        raise AgentsError(f"{host}: nvidia-smi -L failed (exit {out.returncode}): {out.stderr.strip()}")
    return count_gpus_in(out.stdout)


def parse_script_output(text: str) -> list[tuple[str, str, int, str]]:
    """'NAME STATE PID [WHY...]' lines of the remote scripts."""
    rows = []
    for line in text.splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) >= 3 and parts[0].startswith("agent-") and parts[2].lstrip("-").isdigit():
            rows.append((parts[0], parts[1], int(parts[2]), parts[3] if len(parts) == 4 else ""))
    return rows


def run_remote(ssh: str, host: str, script: str) -> list[tuple[str, str, int]]:
    out = ssh_run(ssh, host, script)
    if out.returncode != 0:
        raise AgentsError(f"{host}: remote command failed (exit {out.returncode}): "
                          f"{out.stderr.strip() or out.stdout.strip()}")
    return parse_script_output(out.stdout)


# ---------------------------------------------------------------------------------------------- CLI

def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fractal-llm agents",
        description="Start one W&B sweep agent per GPU (this host, or each --hosts host over ssh); "
                    "--status lists them, --stop stops them.")
    parser.add_argument("sweep", nargs="?", help="ENTITY/PROJECT/SWEEP_ID (not needed with --status/--stop)")
    parser.add_argument("--gpus", default="all", help="`all` (detect with nvidia-smi -L) or indices 0,1,..")
    parser.add_argument("--hosts", help="comma-separated ssh hosts (default: this host only)")
    parser.add_argument("--count", type=int, help="runs per agent (default: until the sweep is done)")
    parser.add_argument("--max-failures", type=int, default=DEFAULT_MAX_FAILURES,
                        help=f"an agent stops after this many consecutive failed runs (default {DEFAULT_MAX_FAILURES})")
    parser.add_argument("--workdir", help="directory agents run in (default: the current directory; on remote "
                                          "hosts the same path, e.g. a shared file system)")
    parser.add_argument("--python", help="python to run the agents (default: this interpreter locally, "
                                         "`python` on remote hosts: point it at the venv's python)")
    parser.add_argument("--ssh", default="ssh", help="ssh command (default: ssh), e.g. 'ssh -o BatchMode=yes'")
    parser.add_argument("--logdir", help="logs and pid files (default: $FRACTAL_LLM_HOME/agents, "
                                         "~/.cache/fractal-llm/agents; relative paths are under --workdir)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--status", action="store_true", help="list agents and whether they are running")
    action.add_argument("--stop", action="store_true", help="SIGTERM every agent listed by --status")
    return parser


def main(argv: list[str]) -> int:
    if argv and argv[0] == "worker":
        try:
            return worker_main(argv[1:])
        except AgentsError as e:
            Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            return 2
    args = _build_parser().parse_args(argv)
    try:
        rows = _run(args)
    except AgentsError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 2
    _print_rows(rows, args)
    return 0


def _run(args) -> list[tuple[str, str, str, int]]:
    hosts = [h.strip() for h in args.hosts.split(",") if h.strip()] if args.hosts else []
    workdir = args.workdir or os.getcwd()
    if args.status or args.stop:
        return _status(args, hosts, workdir)
    if not args.sweep:
        raise AgentsError("SWEEP: missing; give ENTITY/PROJECT/SWEEP_ID (or --status / --stop)")
    sweep_path(args.sweep)
    if args.max_failures < 1:
        raise AgentsError(f"--max-failures={args.max_failures}: must be >= 1")
    if args.count is not None and args.count < 1:
        raise AgentsError(f"--count={args.count}: must be >= 1")
    gpus = parse_gpus(args.gpus)
    if not hosts:
        refuse_offline_mode()
        slots = [Slot(LOCAL, g) for g in (gpus if gpus is not None else detect_local_gpus()) or ["cpu"]]
        argv = worker_argv(args.python or sys.executable, args.sweep, args.count, args.max_failures)
        logdir = _local_logdir(args, workdir)
        return [(LOCAL, s.label, state, pid, "") for s, state, pid in start_local(slots, Path(workdir), logdir, argv)]
    rows = []
    argv = worker_argv(args.python or "python", args.sweep, args.count, args.max_failures)
    logdir = shlex.quote(args.logdir) if args.logdir else REMOTE_LOGDIR
    for host in hosts:
        slots = [Slot(host, g) for g in (gpus if gpus is not None else detect_remote_gpus(args.ssh, host)) or ["cpu"]]
        script = remote_start_script(slots, workdir, logdir, argv)
        rows += [(host, *row) for row in run_remote(args.ssh, host, script)]
    return rows


def _local_logdir(args, workdir: str) -> Path:
    if not args.logdir:
        return paths.home() / "agents"
    logdir = Path(args.logdir)
    return logdir if logdir.is_absolute() else Path(workdir) / logdir


def _status(args, hosts: list[str], workdir: str) -> list[tuple[str, str, str, int, str]]:
    if not hosts:
        return [(LOCAL, *row) for row in status_local(_local_logdir(args, workdir), args.stop)]
    logdir = shlex.quote(args.logdir) if args.logdir else REMOTE_LOGDIR
    rows = []
    for host in hosts:
        rows += [(host, *row) for row in run_remote(args.ssh, host, remote_status_script(host, workdir, logdir,
                                                                                        args.stop))]
    return rows


def _print_rows(rows: list[tuple[str, str, str, int, str]], args) -> None:
    table = Table(title="W&B agents")
    for column in ("host", "agent", "state", "pid", "why it ended"):
        table.add_column(column)
    colours = {"started": "green", "running": "green", "stopped": "yellow", "dead": "red"}
    for host, label, state, pid, why in rows:
        table.add_row(host, label, f"[{colours.get(state, 'white')}]{state}[/]", str(pid),
                      why.removeprefix(AGENT_EXIT).strip() or ("(no `agent exit:` line in its log)" if state == "dead" else ""))
    console = Console()
    console.print(table if rows else "no agents found")
    if rows and not (args.status or args.stop):
        console.print("logs: <logdir>/<agent>.log; `fractal-llm agents --status` / `--stop` (same --hosts, "
                      "--workdir, --logdir)", highlight=False)


# ---------------------------------------------------------------------------------------------- the agent itself

def check_server_sweep(sweep_config: dict) -> None:
    """What a worker checks before claiming its first run: the sweep as the server holds it passes `sweep
    check`, has no placeholder left (<entity>, <hf-owner>, ...), and its fixed inputs exist (train preflight:
    model source, dataset), so a bad sweep fails here once instead of as an error record per point."""
    from fractal_llm.config import TrainConfig
    from fractal_llm.data import DatasetError
    from fractal_llm.sweep import check_sweep, expand_grid
    from fractal_llm.train import preflight
    try:
        spec = check_sweep(sweep_config)
    except SweepError as e:
        raise AgentsError(f"the sweep on the server does not pass `fractal-llm sweep check`: {e}") from None
    for key, value in spec.fixed.items():
        if isinstance(value, str) and PLACEHOLDER.search(value):
            raise AgentsError(f"parameters.{key}.value={value!r}: unfilled placeholder "
                              f"{PLACEHOLDER.search(value).group(0)!r}; edit the YAML and create the sweep again")
    try:
        preflight(TrainConfig(**expand_grid(spec)[0]))
    except (ValueError, DatasetError) as e:  # ConfigError is a ValueError
        raise AgentsError(f"the sweep's fixed values fail before any run: {e}") from None


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


def worker_main(argv: list[str]) -> int:
    """`python -m fractal_llm.agents worker SWEEP [--count N]`: one in-process W&B agent (what each slot runs)."""
    parser = argparse.ArgumentParser(prog="fractal-llm agents worker")
    parser.add_argument("sweep")
    parser.add_argument("--count", type=int)
    parser.add_argument("--max-failures", type=int, default=DEFAULT_MAX_FAILURES)
    args = parser.parse_args(argv)
    entity, project, sweep_id = sweep_path(args.sweep)
    refuse_offline_mode()
    # With this set, wandb.agent(function=...) stops at the first failed run; without it the agent goes on.
    os.environ.pop("WANDB_AGENT_DISABLE_FLAPPING", None)
    import wandb

    from fractal_llm import train
    if not os.environ.get("WANDB_MODE") and not train.wandb_credentials_found():
        raise AgentsError("no W&B credentials found on this host (WANDB_API_KEY, WANDB_IDENTITY_TOKEN_FILE, "
                          "~/.netrc or $NETRC, wandb settings): run `wandb login` (with --host for a W&B Server)")
    check_server_sweep(dict(wandb.Api().sweep(f"{entity}/{project}/{sweep_id}").config))
    signal.signal(signal.SIGTERM, train.on_sigterm)  # --stop: finish the run in flight as preempting, then exit
    print(f"agent: sweep {entity}/{project}/{sweep_id} count={args.count} max_failures={args.max_failures} "
          f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')!r} pid={os.getpid()}", flush=True)
    try:
        wandb.agent(sweep_id, function=train.agent_function, entity=entity, project=project, count=args.count,
                    **agent_kwargs(args.max_failures))
    except SystemExit as exit_:  # SIGTERM between runs
        print(f"{AGENT_EXIT} stopped by SIGTERM between runs", flush=True)
        return int(exit_.code or 0)
    print(f"{AGENT_EXIT} wandb.agent returned (sweep finished, --count reached, or "
          f"{args.max_failures} consecutive failures: see above)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
