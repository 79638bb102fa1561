"""Claims: two runners on one record directory split its points instead of both running all of them.

Before a point runs, its runner claims it: an exclusive create of `<record>.claim` beside the point's record,
holding the claiming process's pid and host. The claim is released (deleted) when the point's record is
written. A second runner that finds a claim leaves the point to its holder, except when the claim is stale:
its process is dead and on this host (killed, out of memory), then the claim is taken over. A claim from
another host (a shared filesystem) is respected: its process cannot be checked from here; its age is shown,
and deleting the file frees the point.

The claim is created whole or not at all: its text is written to a temp file first, then hard-linked to the
claim's name (link fails when the name exists, on NFS as on a local disk). Taking over a stale claim happens
under one lock per directory, so two runners never both take the same one.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from fractal_llm.records import file_name

CLAIM_SUFFIX = ".claim"
TAKEOVER_LOCK = ".claims.lock"


@dataclass(frozen=True)
class Claim:
    pid: int
    host: str
    created: float  # time.time() of the claim

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, {format_age(time.time() - self.created)} ago"


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
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return Claim(int(data["pid"]), str(data["host"]), float(data["created"]))
    except (ValueError, TypeError, KeyError):
        return Claim(0, this_host(), 0.0)


def is_stale(claim: Claim) -> bool:
    """A claim of this host whose process is gone. Our own pid counts as gone: this process holds no claim it
    has not released, so the file is an earlier process's that had the same pid."""
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


def try_claim(out_dir: Path, name: str) -> Claim | None:
    """Claim the point for this process: None when it is ours now, else the live claim that holds it."""
    path = claim_path(out_dir, name)
    mine = Claim(os.getpid(), this_host(), time.time())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".claim-tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(mine), f)
        while True:  # again after a stale claim was removed, or a claim released meanwhile
            try:
                os.link(tmp, path)
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
    claim = read_claim(path)
    if claim is not None and claim.pid == os.getpid() and claim.host == this_host():
        path.unlink(missing_ok=True)


def live_claims(out_dir: Path) -> dict[str, Claim]:
    """{claim file name: claim} of the live claims in out_dir held by other processes than this one."""
    out = {}
    for path in Path(out_dir).glob(f"*{CLAIM_SUFFIX}"):
        claim = read_claim(path)
        if claim is not None and claim.pid != os.getpid() and not is_stale(claim):
            out[path.name] = claim
    return out
