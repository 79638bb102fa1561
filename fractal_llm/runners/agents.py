"""`fractal-llm agents SWEEP`: one long-lived W&B agent process per GPU, on this host or over ssh.

Each agent is the W&B worker `PYTHON -m fractal_llm.runners.agent SWEEP` (fractal_llm/runners/agent.py, the same as
`fractal-llm agent SWEEP`), started detached with CUDA_VISIBLE_DEVICES=i: the runs of one agent share its
process, so the base model and the tokenized data are loaded once per GPU, not once per run.

- Before detaching anything, every host is checked: reachable over ssh, its GPUs, and the worker's own checks
  in the foreground (`PYTHON -m fractal_llm.runners.agent SWEEP --check`: offline mode, credentials, the sweep
  on the server), so a host without credentials or a bad sweep is an error here, with no agent started on any
  host. A host that fails after that (ssh drops while starting) ends the command with the agents already
  started named, and how to stop them.
- Agents start STAGGER_S apart: agents that ask for their first run at the same moment can be handed the
  same grid point (a known W&B issue).
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
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fractal_llm import paths
from fractal_llm.errors import FractalLLMError
from fractal_llm.pool import GpuDetectionError, count_gpus_in, detect_local_gpus, usable_cores
from fractal_llm.sweep import SweepError, parse_sweep_path
from fractal_llm.runners.agent import AGENT_EXIT, DEFAULT_MAX_FAILURES, SweepRefused, refuse_offline_mode

LOCAL = socket.gethostname()  # pid/log names carry the host: a shared logdir (NFS) never collides
AGENT_MARK = "fractal_llm.runners.agent"  # what an agent's command line contains (checked before signalling a pid)
STAGGER_S = 1.5  # seconds between agent starts: agents starting at once can get the same grid point
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


def parse_gpus(text: str) -> list[str] | None:
    """'all' -> None (detect); '0,1,3' -> ['0', '1', '3']."""
    if text == "all":
        return None
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids or not all(i.isdigit() for i in ids) or len(set(ids)) != len(ids):
        raise AgentsError(f"--gpus={text!r}: expected `all` or distinct GPU indices like 0,1,2")
    return ids


# ---------------------------------------------------------------------------------------------- commands

def worker_argv(python: str, sweep: str, count: int | None, max_failures: int = DEFAULT_MAX_FAILURES) -> list[str]:
    argv = [*shlex.split(python), "-m", "fractal_llm.runners.agent", sweep, "--max-failures", str(max_failures)]
    return argv + (["--count", str(count)] if count is not None else [])


def threads_per_agent(cores: int, slots: list[Slot]) -> int | None:
    """torch/OMP threads of each agent on a GPU host: the cores shared out (eight agents each starting a
    thread per core fight for the CPU: on this project's 2-core machine two busy processes with default
    threads ran 5.8x slower each, not 2x). A CPU-only host runs one agent, which keeps every core."""
    gpu_slots = [s for s in slots if s.gpu != "cpu"]
    return max(1, cores // len(gpu_slots)) if gpu_slots else None


def remote_check_script(workdir: str, argv: list[str]) -> str:
    """The worker's checks on a host, in the foreground: exit 4 with their output when they refuse."""
    return "\n".join([f"cd {shlex.quote(workdir)} || exit 3",
                      f'CHECK=$({shlex.join([*argv, "--check"])} 2>&1) || {{ printf "%s\\n" "$CHECK"; exit 4; }}'])


def remote_start_script(slots: list[Slot], workdir: str, logdir: str, argv: list[str]) -> str:
    """One shell script for a host (checked before: remote_check_script): per slot, STAGGER_S apart, start the
    agent unless its pid file names a live agent."""
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
            f"> {log_file} 2>&1 < /dev/null & echo $! > {pid_file}; echo \"{slot.label} started $!\"; "
            f"sleep {STAGGER_S}; fi")
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

def pid_is_agent(pid: int) -> bool:
    out = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return out.returncode == 0 and AGENT_MARK in out.stdout


def read_pid(pid_file: Path) -> int | None:
    text = pid_file.read_text().strip() if pid_file.exists() else ""
    return int(text) if text.isdigit() else None


def agent_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "WANDB_AGENT_DISABLE_FLAPPING"}


def check_local(workdir: Path, argv: list[str]) -> None:
    """The worker's own checks, in the foreground, with the interpreter and environment the agents get."""
    out = subprocess.run([*argv, "--check"], cwd=workdir, env=agent_env(), capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
        why = next((line for line in reversed(lines) if AGENT_EXIT in line), lines[-1] if lines else "")
        raise AgentsError(f"no agent started: the worker's check failed (exit {out.returncode}): "
                          f"{why.strip() or 'no output'}")


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
        if any(state == "started" for _, state, _ in started):
            time.sleep(STAGGER_S)
        env = agent_env()
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
    if out.returncode == 255:
        raise AgentsError(f"{host}: ssh failed: {out.stderr.strip()}")
    if out.returncode == 4:  # the worker's check refused (remote_check_script)
        raise AgentsError(f"{host}: the worker's check failed: "
                          f"{(out.stdout.strip().splitlines() or ['no output'])[-1]}")
    if out.returncode != 0:
        raise AgentsError(f"{host}: remote command failed (exit {out.returncode}): "
                          f"{out.stderr.strip() or out.stdout.strip()}")
    return parse_script_output(out.stdout)


def start_remote(args, hosts: list[str], workdir: str, gpus: list[str] | None) -> list[tuple[str, str, str, int, str]]:
    """Check every host (ssh, GPUs, the worker's checks), then start the agents host by host; a host that
    fails while starting names the agents already started."""
    argv = worker_argv(args.python or "python", args.sweep, args.count, args.max_failures)
    logdir = shlex.quote(args.logdir) if args.logdir else REMOTE_LOGDIR
    planned = []
    for host in hosts:
        try:
            found = gpus if gpus is not None else detect_remote_gpus(args.ssh, host)
            run_remote(args.ssh, host, remote_check_script(workdir, argv))
        except AgentsError as e:
            raise AgentsError(f"no agent started on any host: {e}") from None
        planned.append((host, [Slot(host, g) for g in found or ["cpu"]]))
    rows = []
    for host, slots in planned:
        try:
            rows += [(host, *row) for row in run_remote(args.ssh, host, remote_start_script(slots, workdir, logdir, argv))]
        except AgentsError as e:
            started = [f"{label} (pid {pid})" for _, label, state, pid, _ in rows if state == "started"]
            on_hosts = ",".join(dict.fromkeys(h for h, *_ in rows))
            raise AgentsError(f"{e}; agents already started: {', '.join(started) or 'none'}"
                              + (f"; stop them with `fractal-llm agents --stop --hosts {on_hosts}` (same "
                                 "--workdir, --logdir)" if started else "")) from None
    return rows


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
    args = _build_parser().parse_args(argv)
    try:
        rows = _run(args)
    except (AgentsError, SweepRefused, GpuDetectionError) as e:
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
        check_local(Path(workdir), argv)
        logdir = _local_logdir(args, workdir)
        return [(LOCAL, s.label, state, pid, "") for s, state, pid in start_local(slots, Path(workdir), logdir, argv)]
    return start_remote(args, hosts, workdir, gpus)


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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
