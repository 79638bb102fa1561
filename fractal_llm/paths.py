"""Where fractal-llm keeps its files (caches: base models, tokenized data, local run records), and how it
writes the ones other processes read: atomically, and built once under a lock.

One environment variable, FRACTAL_LLM_HOME, moves all of it (default: ~/.cache/fractal-llm).
"""

import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import IO, Callable

from filelock import FileLock, Timeout


def home() -> Path:
    root = os.environ.get("FRACTAL_LLM_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "fractal-llm")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _subdir(name: str) -> Path:
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    return _subdir("models")


def data_cache_dir() -> Path:
    return _subdir("data")


def runs_dir() -> Path:
    return _subdir("runs")


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------
# Writing files that other processes read (eight agents on one host share one cache)

COMPLETE_MARKER = ".complete"


def atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool = False) -> Path:
    """write(file) into a temp file beside path, then rename it over path: readers see the whole file or none,
    and an interrupted write (Ctrl-C, SIGTERM) leaves no half file and no temp file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def replace_dir(new: str | Path, target: str | Path) -> Path:
    """Put the finished directory `new` in target's place (two renames, then the old one is removed). SIGINT
    is held back for the renames, so a Ctrl-C lands before or after them, and target is always a whole
    directory: the old one or the new one."""
    new, target = Path(new), Path(target)
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        moved = target.exists()
        if moved:
            os.rename(target, old)
        try:
            os.rename(new, target)
        except OSError:
            if moved:
                os.rename(old, target)
            raise
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    shutil.rmtree(old, ignore_errors=True)
    return target


def is_built(directory: Path) -> bool:
    return (Path(directory) / COMPLETE_MARKER).is_file()


def build_once(target: Path, build: Callable[[], None], done: Callable[[], bool] | None = None,
               force: bool = False, waiting: Callable[[], None] | None = None) -> None:
    """Run build() unless target is done, under a file lock so concurrent processes build it once (the others
    wait, then find it done; waiting() is called first, when another process holds the lock, to say so).
    A directory target is done when it holds COMPLETE_MARKER, written after build() returns; a file target
    passes done=target.is_file and must be written atomically by build()."""
    target = Path(target)
    is_done = done or (lambda: is_built(target))
    if is_done() and not force:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(target) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:  # another process is building it
        if waiting is not None:
            waiting()
        lock.acquire()
    try:
        if is_done() and not force:  # another process finished it while we waited for the lock
            return
        build()
        if done is None:
            (target / COMPLETE_MARKER).write_text("ok\n")
    finally:
        lock.release()
