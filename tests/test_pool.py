"""The one worker pool (local runner and paper mode): results, a worker that dies, a task that raises."""

import json
import os
import subprocess
import sys

import pytest

from fractal_llm.runners import claims
from fractal_llm.pool import WorkerError, WorkerPool
from fractal_llm.records import read_record
from fractal_llm.runners.local import Outcome, Task, TaskRunner


def square_or_die(x: int) -> int:
    if x == 3:
        os._exit(9)  # like the OOM killer: no exception, no cleanup
    if x == 5:
        raise ValueError("five is not allowed")
    return x * x


def test_results_and_a_dead_worker_are_reported_and_the_pool_goes_on():
    lost = []
    with WorkerPool(square_or_die, 2, on_lost=lambda task, code: lost.append((task, code)) or -1) as pool:
        pool.wait_ready()
        results = dict(pool.map_unordered([0, 1, 2, 3, 4, 6]))
        assert results == {0: 0, 1: 1, 2: 4, 3: -1, 4: 16, 5: 36}
        assert lost == [(3, 9)]
        assert len(pool.workers) == 2  # the dead worker was replaced
        assert dict(pool.map_unordered([7])) == {0: 49}  # and the pool still serves


def test_a_task_that_raises_fails_loudly_with_its_traceback():
    with WorkerPool(square_or_die, 1) as pool:
        with pytest.raises(WorkerError, match="five is not allowed"):
            list(pool.map_unordered([5]))


def test_a_dead_worker_without_on_lost_is_an_error():
    with WorkerPool(square_or_die, 1) as pool:
        with pytest.raises(WorkerError, match="exit.* code 9"):
            list(pool.map_unordered([3]))


def test_lost_points_become_error_records_with_their_parameters(tmp_path):
    params = {"matrix_lr": 0.01, "unembedding_lr": 0.001, "num_tokens": 100}
    task = Task("gpt", ["matrix_lr=0.01,unembedding_lr=0.001"], [params])
    dead_worker = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_worker.wait()
    claim = claims.claim_path(tmp_path, task.names[0])
    claim.write_text(json.dumps({"pid": dead_worker.pid, "host": claims.this_host(), "created": 0.0}))
    assert TaskRunner(str(tmp_path), "disabled").lost(task, -9) == [Outcome(task.names[0], "error", True)]
    record = read_record(next(tmp_path.glob("*.json")))
    assert record.config == params and record.verdict == "error"
    assert "exit code -9" in record.summary["error"]
    assert not claim.exists()  # the dead worker's claim goes with it


def test_a_lost_task_leaves_the_points_another_runner_holds_alone(tmp_path):
    task = Task("gpt", ["a", "b"], [{"matrix_lr": 0.01}, {"matrix_lr": 0.02}])
    claims.claim_path(tmp_path, "b").write_text(json.dumps({"pid": os.getppid(), "host": claims.this_host(),
                                                            "created": 0.0}))
    assert TaskRunner(str(tmp_path), "disabled").lost(task, -9) == [Outcome("a", "error", True),
                                                                    Outcome("b", None, False)]
    assert [p.name for p in tmp_path.glob("*.json")] == ["a.json"]
