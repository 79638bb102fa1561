"""Claims (fractal_llm/runners/claims.py): a point is run by the runner that claims it; a dead process's claim on
this host is taken over, another host's is respected and shown with its age while its heartbeat moves, and
taken over once the heartbeat is older than the claim's timeout; SIGTERM releases a runner's claims."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from rich.console import Console

from fractal_llm.runners import claims

from fractal_llm.runners import local as runner
from fractal_llm.records import read_records
from fractal_llm.sweep import AxisArg, dump_sweep_yaml, new_sweep


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_claim(out, name, pid, host, age_s=0.0):
    out.mkdir(parents=True, exist_ok=True)
    claims.claim_path(out, name).write_text(json.dumps({"pid": pid, "host": host, "created": time.time() - age_s}))


def test_a_point_is_claimed_once_and_released(tmp_path):
    assert claims.try_claim(tmp_path, "p") is None
    holder = claims.read_claim(claims.claim_path(tmp_path, "p"))
    assert (holder.pid, holder.host) == (os.getpid(), claims.this_host())
    parent = os.getppid()  # a live process of this host holds "q"
    write_claim(tmp_path, "q", parent, claims.this_host())
    assert claims.try_claim(tmp_path, "q").pid == parent
    claims.release(tmp_path, "q")  # not ours: left alone
    assert claims.claim_path(tmp_path, "q").exists()
    claims.release(tmp_path, "p")
    assert not claims.claim_path(tmp_path, "p").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".claim-tmp-")]


def test_stale_claims_are_taken_over_and_other_hosts_claims_respected(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(dump_sweep_yaml(new_sweep([AxisArg("lr_input", 0.5, 2.0, 2), AxisArg("lr_output", 0.5, 2.0, 2)],
                                              {"model_family": "mlp", "num_iterations": 5}, name="grid")))
    spec = runner.load_sweep(path)
    out = tmp_path / "runs"
    dead, remote, *_ = runner.point_names(spec, runner.expand_grid(spec))
    write_claim(out, dead, dead_pid(), claims.this_host())  # killed on this host: taken over
    write_claim(out, remote, 4242, "another-host", age_s=600)  # runs on another host of a shared filesystem
    assert runner.run_sweep(spec, out, workers=1, wandb_mode="disabled", mlp_chunk=1) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "ran 3 of 4 points"
    assert any("1 point(s) left to the runner(s) that hold them (pid 4242 on another-host, 10 min ago)" in line
               for line in lines), lines
    assert sorted(r.name for r in read_records(out)) == sorted(set(runner.point_names(spec, runner.expand_grid(spec)))
                                                               - {remote})
    assert [p.name for p in out.glob("*.claim")] == [claims.claim_path(out, remote).name]


# A runner on "another host" (a shared filesystem's other node): claims.this_host stands in for the host name.
# Its points after the first `FINISH` never end (a long training), so its claim is held when it is killed.
STAND_IN_RUNNER = """
import sys, time
from fractal_llm.runners import claims, local
claims.this_host = lambda: "other-host"
finish, run = int(sys.argv[1]), local._run_mlp_chunk
def slow(names, *args):
    global finish
    finish -= 1
    return run(names, *args) if finish >= 0 else time.sleep(600)
local._run_mlp_chunk = slow
from fractal_llm.cli import main
sys.exit(main(["local", *sys.argv[2:]]))
"""


def start_stand_in(sweep, out, finish: int, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", STAND_IN_RUNNER, str(finish), str(sweep), "--out", str(out),
                             "--workers", "1", "--mlp-chunk", "1", "--wandb", "disabled", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def grid_sweep(tmp_path, n: int = 2) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(dump_sweep_yaml(new_sweep([AxisArg("lr_input", 0.5, 2.0, n), AxisArg("lr_output", 0.5, 2.0, n)],
                                              {"model_family": "mlp", "num_iterations": 5}, name="grid")))
    return path


def test_a_killed_runners_claims_expire_and_are_taken_over_from_another_host(tmp_path):
    """Before: a claim of another host was never stale, so an adaptive runner waited on it forever."""
    sweep, out = grid_sweep(tmp_path), tmp_path / "runs"
    other = start_stand_in(sweep, out, 0, "--claim-timeout", "2")
    wait_for(lambda: list(out.glob("*.claim")), 60, "the stand-in's claim")
    log = io.StringIO()
    result = {}
    second = threading.Thread(target=lambda: result.update(code=runner.run_adaptive(
        runner.load_sweep(sweep), out, levels=0, margin=1, workers=1, wandb_mode="disabled",
        console=Console(file=log, width=200))))
    second.start()
    wait_for(lambda: "waiting for 1 point(s)" in log.getvalue(), 60, "the second runner to wait")
    assert "on other-host" in log.getvalue()
    time.sleep(3)  # longer than the claim's timeout: the live runner's heartbeat keeps its claim
    assert second.is_alive() and other.poll() is None, log.getvalue()
    other.kill()  # SIGKILL: no handler runs, the claim stays on disk, its heartbeat stops
    other.wait()
    second.join(timeout=60)
    assert result == {"code": 0}, log.getvalue()
    assert len(read_records(out)) == 4 and not list(out.glob("*.claim"))
    assert log.getvalue().strip().splitlines()[-1] == "ran 4 of 4 points"


def test_a_claims_heartbeat_moves_its_mtime_and_stops_with_the_claim(tmp_path):
    assert claims.try_claim(tmp_path, "p", timeout_s=0.5) is None
    path = claims.claim_path(tmp_path, "p")
    os.utime(path, (time.time() - 100, time.time() - 100))  # as if the last beat were long ago
    wait_for(lambda: time.time() - path.stat().st_mtime < 0.5, 5, "a heartbeat")
    time.sleep(1.5)  # three timeouts: still beating
    assert time.time() - claims.read_claim(path).beat < 0.5
    claims.release(tmp_path, "p")
    assert not path.exists()


def test_sigterm_releases_the_runners_claims_and_keeps_its_records(tmp_path):
    """Before: `fractal-llm local` had no SIGTERM handler; a killed runner left its claims behind."""
    sweep, out = grid_sweep(tmp_path), tmp_path / "runs"
    proc = start_stand_in(sweep, out, 2)  # two points finish, the third holds its claim
    wait_for(lambda: len(list(out.glob("*.json"))) == 2 and list(out.glob("*.claim")), 60, "two records and a claim")
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 143, output
    assert "stopped." in output and "Traceback" not in output
    assert len(read_records(out)) == 2 and not list(out.glob("*.claim")) and not list(out.glob(".tmp-*"))
