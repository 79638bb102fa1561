"""A process that waits for another one says what it waits for (issue: a second runner printed nothing for the
11 minutes the first one spent building the tiny base). Waiting on claims: tests/test_claims.py."""

import threading
import time

from filelock import FileLock

from fractal_llm import paths
from fractal_llm.gpt.make_base import TinyRecipe, ensure_tiny_base, tiny_base_dir


def test_a_process_waiting_for_the_tiny_base_build_says_so(capsys):
    recipe = TinyRecipe(seed=7919)  # a build nothing else makes: this test never trains it
    out = tiny_base_dir(recipe)
    builder = FileLock(str(out) + ".lock")  # another process building it
    builder.acquire()
    waiter = threading.Thread(target=ensure_tiny_base, args=(recipe,))
    waiter.start()
    deadline, err = time.time() + 30, ""
    while "waiting for the tiny base build" not in err and time.time() < deadline:
        time.sleep(0.05)
        err += capsys.readouterr().err
    assert f"waiting for the tiny base build that another process is running (minutes on a CPU) into {out}" \
        in " ".join(err.split()), err
    assert waiter.is_alive()  # it waits for the lock, it does not build
    out.mkdir(parents=True)
    (out / paths.COMPLETE_MARKER).write_text("ok\n")  # the other process finished
    builder.release()
    waiter.join(timeout=30)
    assert not waiter.is_alive() and "building" not in capsys.readouterr().err
