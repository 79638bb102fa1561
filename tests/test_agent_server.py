"""The worker's refusals and its server trouble, told apart, against a stand-in W&B server on 127.0.0.1.

The worker is the real `fractal-llm agent --check` in a fresh interpreter with the real wandb client: its
wandb-core speaks HTTP to WANDB_BASE_URL, here a small http.server thread of this test that answers the two
GraphQL queries the check makes (the key's Viewer query, the sweep) or fails them as the plan says: HTTP 401,
404, 503, or no answer in time. Only loopback; WANDB_HTTP_TIMEOUT=1 and millisecond backoff keep it short.
"""

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from fractal_llm.runners import agent as worker
from test_schedulers import SWEEP, SWEEP_CONFIG

ROOT = Path(__file__).resolve().parents[1]
FAKE_KEY = "b" * 40
VIEWER = {"viewer": {"id": "u1", "entity": "ent", "username": "u", "email": "u@example.org", "flags": "{}",
                     "teams": {"edges": []}}}
SWEEP_ANSWER = {"project": {"sweep": {
    "__typename": "Sweep", "id": "U3dlZXA6MQ==", "name": "sw1", "displayName": None, "method": "grid",
    "state": "RUNNING", "description": None, "bestLoss": None, "config": yaml.safe_dump(SWEEP_CONFIG),
    "createdAt": "2026-12-01T00:00:00", "updatedAt": None, "runCount": 0, "runCountExpected": 4}}}
HANG_S = 3.0  # longer than the client's WANDB_HTTP_TIMEOUT


class StandIn:
    """A W&B server on 127.0.0.1 whose GraphQL answers follow `plan(n, query) -> "answer" | "hang" | status`
    (n counts the GraphQL requests from 1)."""

    def __init__(self, plan):
        self.plan, self.queries = plan, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path != "/graphql":  # wandb-core's own telemetry
                    return self._send(200, {})
                query = json.loads(body)["query"]
                outer.queries.append(query)
                action = outer.plan(len(outer.queries), query)
                if action == "hang":
                    time.sleep(HANG_S)
                    return self._send(504, {"errors": [{"message": "late"}]})
                if action != "answer":
                    return self._send(action, {"errors": [{"message": f"stand-in says {action}"}]})
                self._send(200, {"data": VIEWER if "viewer" in query else SWEEP_ANSWER})

            def _send(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    servers = []

    def start(plan):
        servers.append(StandIn(plan))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def run_check(tmp_path: Path, base_url: str, retry_for: float) -> tuple[subprocess.CompletedProcess, float]:
    """`fractal-llm agent SWEEP --check --retry-for S` with the real client pointed at base_url; the backoff
    starts at 50 ms (the constants, not the logic, are what a test shortens)."""
    script = ("import sys\nfrom fractal_llm.runners import agent\n"
              "agent.RETRY_FIRST_WAIT_S, agent.RETRY_MAX_WAIT_S = 0.05, 0.2\n"
              "sys.exit(agent.main(sys.argv[1:]))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_BASE_URL=base_url, WANDB_API_KEY=FAKE_KEY, WANDB_HTTP_TIMEOUT="1", WANDB_SILENT="true",
               WANDB_DIR=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"), HOME=str(tmp_path),
               NETRC=str(tmp_path / "no.netrc"), PYTHONPATH=str(ROOT))
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script, SWEEP, "--check", "--retry-for", str(retry_for)],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    return out, time.monotonic() - t0


def last_line(out: subprocess.CompletedProcess) -> str:
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("plan, reason", [
    (lambda n, q: 401, "the server rejected the W&B key (HTTP 401)"),
    (lambda n, q: 403, "the server rejected the W&B key (HTTP 403)"),
    (lambda n, q: "answer" if "viewer" in q else 404, "the server has no such sweep (HTTP 404)"),
])
def test_a_refusal_exits_2_at_once_without_retrying(tmp_path, stand_in, plan, reason):
    server = stand_in(plan)
    out, _ = run_check(tmp_path, server.url, retry_for=30)
    assert out.returncode == 2, out.stdout + out.stderr
    assert reason in out.stderr and last_line(out).startswith("agent exit: refused:"), out.stdout
    assert "retrying" not in out.stdout
    # no retries: the key checked once, the sweep asked for once (with wandb's own fallback query)
    assert sum("viewer" in q for q in server.queries) <= 2 and sum("sweep(" in q for q in server.queries) <= 2


@pytest.mark.parametrize("trouble", ["hang", 503])
def test_trouble_is_retried_until_the_server_answers(tmp_path, stand_in, trouble):
    server = stand_in(lambda n, q: trouble if n == 1 else "answer")
    out, _ = run_check(tmp_path, server.url, retry_for=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "W&B server trouble" in out.stdout and "retrying in" in out.stdout
    assert last_line(out).startswith(f"agent check: sweep {SWEEP}")


def test_trouble_that_persists_exits_75_after_the_retry_time(tmp_path, stand_in):
    server = stand_in(lambda n, q: 503)
    out, took = run_check(tmp_path, server.url, retry_for=2)
    assert out.returncode == worker.SERVER_TROUBLE_EXIT == 75, out.stdout + out.stderr
    assert last_line(out).startswith("agent exit: server trouble (exit 75"), out.stdout
    assert "no answer from the W&B server for 2 s of retries" in out.stderr
    assert "retrying in" in out.stdout and 2 <= took < 60  # tried again for the whole time, then gave up


def test_no_server_at_all_is_trouble_too(tmp_path, stand_in):
    server = stand_in(lambda n, q: "answer")
    url = server.url
    server.close()  # nothing listens on that port now: connection refused
    out, _ = run_check(tmp_path, url, retry_for=1)
    assert out.returncode == 75, out.stdout + out.stderr


def test_help_lists_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        worker.main(["--help"])
    text = capsys.readouterr().out
    for code in (0, 1, 2, 3, 75, 143):
        assert f"\n  {code} " in text, code
