"""Claims (fractal_llm/runners/claims.py): a point is run by the runner that claims it; a dead process's claim on
this host is taken over, another host's is respected and shown with its age."""

import json
import os
import subprocess
import sys
import time

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
