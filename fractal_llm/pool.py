"""Worker processes: one pool for the local runner's points and paper mode's chunks.

N spawned, long-lived workers each take one task at a time from the parent and send back function(task). Spawned,
not forked: CUDA must not be initialised before a fork, and forking a process whose OpenMP pool is running
can deadlock. Each worker chooses its CUDA device and torch thread count before torch starts working.

Ctrl-C in a terminal reaches every process of the group. Only the parent acts on it (it stops the workers);
the workers ignore SIGINT from their first instruction: the parent ignores SIGINT while it starts them, an
ignored signal stays ignored across exec, and Python keeps an inherited SIG_IGN at start-up. (Setting
SIG_IGN in the worker's own code left a gap: a Ctrl-C while the worker was still importing printed a
KeyboardInterrupt traceback.) A worker that dies (killed for memory, say) is replaced; its task goes to
`on_lost`, which returns the result to report in its place, or the pool raises when there is none.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from fractal_llm.errors import FractalLLMError


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a batch scheduler or taskset narrows):
    what every default worker and thread count is sized by."""
    return len(os.sched_getaffinity(0))


class GpuDetectionError(FractalLLMError):
    """nvidia-smi is there but failed (a host that cannot be used): the message has its exit code and output."""


def count_gpus_in(nvidia_smi_output: str) -> list[str]:
    """`nvidia-smi -L` prints one 'GPU i: ...' line per device."""
    return [str(i) for i, line in enumerate(l for l in nvidia_smi_output.splitlines() if l.startswith("GPU "))]


def detect_local_gpus() -> list[str]:
    """This host's GPUs as CUDA_VISIBLE_DEVICES ids (agents and the local runner; no torch import, no CUDA init)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:  # this shell already restricts the GPUs: use exactly those
        return [d.strip() for d in visible.split(",") if d.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    if out.returncode != 0:
        raise GpuDetectionError(f"nvidia-smi -L failed (exit {out.returncode}): "
                                f"{out.stderr.strip() or out.stdout.strip()}")
    return count_gpus_in(out.stdout)


class WorkerError(RuntimeError):
    """A worker process failed in a way that retrying cannot fix (its traceback is in the message)."""


def _worker_main(function: Callable, device: str | None, threads: int | None, conn) -> None:
    # SIGTERM (the parent's stop) becomes SystemExit, so a record being written cleans up its temp file.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = device
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    conn.send(("ready", None))
    while (task := conn.recv()) is not None:
        try:
            out = function(task)
        except Exception:  # sent to the parent, which raises it there with this traceback
            conn.send(("failed", traceback.format_exc()))
            continue
        conn.send(("done", out))


@contextmanager
def _sigint_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _Worker:
    proc: mp.Process
    conn: Connection  # the parent's end of the worker's pipe: tasks out, results back
    device: str | None
    ready: bool = False
    task: int | None = None  # index of the task in flight


class WorkerPool:
    """`n` workers calling `function` (a picklable top-level callable) on tasks; devices are dealt round-robin.

    The parent hands each worker one task at a time over the worker's own pipe, so it always knows which
    task a dead worker held (a shared queue cannot tell: the worker's "started" note may die unsent)."""

    def __init__(self, function: Callable, n: int, devices: list[str | None] | None = None,
                 threads: int | None = None, on_lost: Callable | None = None):
        if n < 1:
            raise ValueError(f"workers={n!r}: must be >= 1")
        self.ctx = mp.get_context("spawn")
        self.function, self.threads, self.on_lost = function, threads, on_lost
        self.workers: list[_Worker] = []
        devices = devices or [None]
        for slot in range(n):
            self.workers.append(self._start(devices[slot % len(devices)]))

    def _start(self, device: str | None) -> _Worker:
        parent_end, child_end = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker_main, daemon=True,
                                args=(self.function, device, self.threads, child_end))
        with _sigint_ignored():
            proc.start()
        child_end.close()
        return _Worker(proc, parent_end, device)

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Block until every worker has started (imports done, device and threads chosen)."""
        deadline = time.monotonic() + timeout
        while not all(w.ready for w in self.workers):
            if time.monotonic() > deadline:
                raise WorkerError(f"workers not ready after {timeout:.0f} s")
            for event in self._events([], timeout=0.5):
                raise WorkerError(f"unexpected {event!r} before any task was submitted")

    def map_unordered(self, tasks: Iterable) -> Iterator[tuple[int, object]]:
        """Yield (index of the task, result) as tasks finish."""
        tasks = list(tasks)
        pending = deque(range(len(tasks)))
        remaining = len(tasks)
        while remaining:
            for worker in self.workers:
                if worker.task is None and pending:
                    worker.task = pending.popleft()
                    worker.conn.send(tasks[worker.task])
            for event in self._events(tasks, timeout=1.0):
                remaining -= 1
                yield event

    def _events(self, tasks: list, timeout: float) -> Iterator[tuple[int, object]]:
        """Read what the workers sent (or replace the ones that died) for up to `timeout` seconds."""
        owner = {w.conn: w for w in self.workers} | {w.proc.sentinel: w for w in self.workers}
        ready = wait(list(owner), timeout=timeout)
        # A dead worker can be ready twice (its pipe and its sentinel): handle each worker once.
        handled: list[_Worker] = []
        for worker in (owner[r] for r in ready):
            if any(worker is seen for seen in handled):
                continue
            handled.append(worker)
            if worker.conn.poll():
                try:
                    kind, payload = worker.conn.recv()
                except EOFError:  # died mid-send: handled below, as a death
                    kind, payload = None, None
                if kind == "ready":
                    worker.ready = True
                    continue
                if kind == "failed":
                    raise WorkerError(f"a task failed in worker {worker.proc.pid}:\n{payload}")
                if kind == "done":
                    index, worker.task = worker.task, None
                    yield index, payload
                    continue
            if not worker.proc.is_alive():
                worker.proc.join()
                yield from self._replace(worker, tasks)

    def _replace(self, worker: _Worker, tasks: list) -> Iterator[tuple[int, object]]:
        code = worker.proc.exitcode
        if not worker.ready:  # died while starting (an import error, say): restarting would loop forever
            raise WorkerError(f"worker process {worker.proc.pid} exited with code {code} while starting; "
                              "its traceback is above")
        if worker.task is not None and self.on_lost is None:
            raise WorkerError(f"worker process {worker.proc.pid} exited with code {code} while running a task; "
                              "its traceback is above")
        self.workers[self.workers.index(worker)] = self._start(worker.device)  # takes over the remaining tasks
        if worker.task is not None:
            yield worker.task, self.on_lost(tasks[worker.task], code)

    def close(self) -> None:
        """Stop the workers now (a task in flight is abandoned; SIGTERM lets it clean up)."""
        for worker in self.workers:
            worker.proc.terminate()
        for worker in self.workers:
            worker.proc.join(timeout=10)
            worker.conn.close()
        self.workers.clear()

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
