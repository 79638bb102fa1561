"""Claims: two runners on one record directory split its points instead of both running all of them.

Before a point runs, its runner claims it: an exclusive create of `<record>.claim` beside the point's record,
holding the claiming process's pid, host and timeout. The claim is released (deleted) when the point's record
is written. A second runner that finds a claim leaves the point to its holder, except when the claim is stale,
then it is taken over:
- its process is dead and on this host (killed, out of memory): at once;
- its heartbeat is older than the timeout the claim states, on any host. The holder's heartbeat thread
  touches the claim's mtime every timeout/HEARTBEATS_PER_TIMEOUT seconds while the process lives, so a claim
  whose mtime stopped moving belongs to a runner that was killed (SIGKILL, a lost node on a shared
  filesystem) or hangs with its interpreter stopped. Its age and last heartbeat are shown while it is waited for.

The claim is created whole or not at all: its text is written to a temp file first, then hard-linked to the
claim's name (link fails when the name exists, on NFS as on a local disk). Taking over a stale claim happens
under one lock per directory, so two runners never both take the same one.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from fractal_llm.records import file_name

CLAIM_SUFFIX = ".claim"
TAKEOVER_LOCK = ".claims.lock"
# A claim whose heartbeat is older than this is taken over (`fractal-llm local --claim-timeout`). It must
# outlast the longest gap a live runner's heartbeat shows to another host: NFS caches file attributes up to
# acregmax = 60 s by default, and the beat itself comes every 30 s, so 5 min leaves room for several
# missed beats while a killed runner's points wait at most 5 min.
CLAIM_TIMEOUT_S = 300.0
HEARTBEATS_PER_TIMEOUT = 10  # beats per timeout: 30 s apart with the default


@dataclass(frozen=True)
class Claim:
    pid: int
    host: str
    created: float  # time.time() of the claim
    timeout_s: float = CLAIM_TIMEOUT_S  # stale once the heartbeat is older (claims written before: the default)
    beat: float = 0.0  # the claim file's mtime: its holder's last heartbeat (not written into the file)

    def describe(self) -> str:
        now = time.time()
        text = f"pid {self.pid} on {self.host}, {format_age(now - self.created)} ago"
        if now - self.beat > 2 * self.timeout_s / HEARTBEATS_PER_TIMEOUT:  # two beats missed
            text += (f", last heartbeat {format_age(now - self.beat)} ago (taken over after "
                     f"{format_age(self.timeout_s)})")
        return text


def format_age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def this_host() -> str:
    return socket.gethostname()


def claim_path(out_dir: Path, name: str) -> Path:
    return Path(out_dir) / (file_name(name).removesuffix(".json") + CLAIM_SUFFIX)


def read_claim(path: Path) -> Claim | None:
    """The claim at path, or None when there is none (released meanwhile). A file that does not parse was
    not written by try_claim (it links whole files only): it reads as a dead process's claim (pid 0)."""
    try:
        text = path.read_text()
        beat = path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return Claim(int(data["pid"]), str(data["host"]), float(data["created"]),
                     float(data.get("timeout_s", CLAIM_TIMEOUT_S)), beat)
    except (ValueError, TypeError, KeyError, AttributeError):
        return Claim(0, this_host(), 0.0)


def is_stale(claim: Claim) -> bool:
    """A claim whose heartbeat is older than its timeout (any host), or a claim of this host whose process is
    gone. Our own pid counts as gone: this process holds no claim it has not released, so the file is an
    earlier process's that had the same pid."""
    if time.time() - claim.beat > claim.timeout_s:
        return True
    if claim.host != this_host():
        return False
    if claim.pid <= 0 or claim.pid == os.getpid():  # (os.kill(0 or -1, ...) would signal a whole group)
        return True
    try:
        os.kill(claim.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def try_claim(out_dir: Path, name: str, timeout_s: float = CLAIM_TIMEOUT_S) -> Claim | None:
    """Claim the point for this process: None when it is ours now (its heartbeat runs until release), else
    the live claim that holds it."""
    if timeout_s <= 0:
        raise ValueError(f"timeout_s={timeout_s!r}: must be > 0 seconds")
    path = claim_path(out_dir, name)
    mine = asdict(Claim(os.getpid(), this_host(), time.time(), timeout_s))
    del mine["beat"]  # the file's mtime
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".claim-tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        while True:  # again after a stale claim was removed, or a claim released meanwhile
            try:
                os.link(tmp, path)
                _HEARTBEAT.hold(path, timeout_s)
                return None
            except FileExistsError:
                pass
            holder = read_claim(path)
            if holder is not None and not is_stale(holder):
                return holder
            with FileLock(str(Path(out_dir) / TAKEOVER_LOCK)):
                if holder is not None and read_claim(path) == holder:  # nobody took it over meanwhile
                    path.unlink(missing_ok=True)
    finally:
        Path(tmp).unlink(missing_ok=True)


def release(out_dir: Path, name: str) -> None:
    """Delete this process's claim of the point (a claim taken over meanwhile is left alone)."""
    path = claim_path(out_dir, name)
    _HEARTBEAT.drop(path)
    if is_mine(read_claim(path)):
        path.unlink(missing_ok=True)


def is_mine(claim: Claim | None) -> bool:
    return claim is not None and claim.pid == os.getpid() and claim.host == this_host()


def live_claims(out_dir: Path) -> dict[str, Claim]:
    """{claim file name: claim} of the live claims in out_dir held by other processes than this one."""
    out = {}
    for path in Path(out_dir).glob(f"*{CLAIM_SUFFIX}"):
        claim = read_claim(path)
        if claim is not None and claim.pid != os.getpid() and not is_stale(claim):
            out[path.name] = claim
    return out


class Heartbeat:
    """The thread that touches this process's claims (their mtime) while it holds them: one per process,
    started at the first claim. It beats the claims of the process whatever its main thread does (a point's
    training releases the GIL in torch's and numpy's kernels), and stops with the process, so a claim's
    mtime stops moving exactly when its holder cannot finish the point."""

    def __init__(self):
        self.held: dict[Path, float] = {}  # claim path -> its timeout
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None

    def hold(self, path: Path, timeout_s: float) -> None:
        with self.lock:
            self.held[path] = timeout_s
            if self.thread is None or not self.thread.is_alive():  # (a forked child has no thread)
                self.thread = threading.Thread(target=self._run, name="claims-heartbeat", daemon=True)
                self.thread.start()
        self.wake.set()  # a shorter timeout than the thread sleeps for: beat at its rate from now on

    def drop(self, path: Path) -> None:
        with self.lock:
            self.held.pop(path, None)

    def _run(self) -> None:
        while True:
            self.wake.wait(self.interval())
            self.wake.clear()
            self.beat()

    def interval(self) -> float:
        with self.lock:
            return min(self.held.values(), default=CLAIM_TIMEOUT_S) / HEARTBEATS_PER_TIMEOUT

    def beat(self) -> None:
        with self.lock:
            paths = list(self.held)
        for path in paths:
            if is_mine(read_claim(path)):  # never refresh a claim another runner took over
                try:
                    os.utime(path)
                except FileNotFoundError:  # released or taken over meanwhile
                    pass


_HEARTBEAT = Heartbeat()
