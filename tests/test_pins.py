"""One map, one model across requeues (fractal_llm/runners/pins.py): a sweep's first run pins what a W&B
alias and a hub dataset branch name; a run of the same sweep days later, in a fresh process, trains on the
pinned commit although the alias and the branch have moved.

Real: point.execute, offline W&B runs (the pin artifact the first run logs is read back from its run file),
base_model and data with their per-process caches cleared between "days". Stand-ins at the boundaries only:
wandb.Api (what the server answers: the alias's version today, the pin artifacts the runs logged) and the
hub's dataset_info (the branch's commit today). Nothing reaches the network.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from fractal_llm.config import TrainConfig
from fractal_llm.gpt import base_model, data
from fractal_llm.runners import pins, point
from wandb_offline import records

MODEL = "wandb:ent/proj/base:latest"
DATASET, BRANCH = "owner/chat", "main"
COMMIT_DAY1, COMMIT_DAY3 = "a" * 40, "b" * 40


class Server:
    """What the W&B server and the hub answer today; the pins are whatever the runs logged."""

    def __init__(self):
        self.version, self.commit = "v3", COMMIT_DAY1
        self.pins: dict[str, dict] = {}  # artifact name -> metadata of its first version (v0)
        self.lookups = 0  # how often the alias or the branch was resolved

    def api(self, *args, **kwargs):
        server = self

        class Api:
            def artifact_exists(self, path):
                return path.rsplit("/", 1)[-1].removesuffix(":v0") in server.pins

            def artifact(self, path):
                name = path.rsplit("/", 1)[-1]
                if name.endswith(":v0"):
                    return SimpleNamespace(metadata=server.pins[name.removesuffix(":v0")])
                server.lookups += 1  # the alias: what it names today (base_model.pinned_artifact)
                return SimpleNamespace(version=server.version)
        return Api()

    def dataset_info(self, dataset_id, revision=None, **kwargs):
        assert (dataset_id, revision) == (DATASET, BRANCH)
        self.lookups += 1
        return SimpleNamespace(sha=self.commit)

    def take_logged_pins(self, wandb_dir: Path) -> None:
        import wandb
        wandb.teardown()  # the run files are written by wandb's service process: complete once it has shut down
        for path in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb")):
            for record in records(path):
                if record.WhichOneof("record_type") == "artifact" and record.artifact.type == pins.PIN_TYPE:
                    self.pins.setdefault(record.artifact.name, json.loads(record.artifact.metadata))


@pytest.fixture
def server(tmp_path, monkeypatch):
    import huggingface_hub
    import wandb
    server = Server()
    monkeypatch.setattr(wandb, "Api", server.api)
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", lambda self, *a, **k: server.dataset_info(*a, **k))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield server
    wandb.teardown()
    base_model.clear_caches()
    data._COMMITS.clear()


def run_in_a_fresh_process(tmp_path, monkeypatch, sweep_id: str, run_id: str) -> dict:
    """One sweep run through point.execute, its process caches empty; returns what its trainer was given."""
    import wandb
    wandb.teardown()  # wandb's settings too: they were read from the last "process"'s environment
    base_model.clear_caches()
    data._COMMITS.clear()
    monkeypatch.setenv("WANDB_SWEEP_ID", sweep_id)
    monkeypatch.setenv("WANDB_RUN_ID", run_id)
    config = TrainConfig(model_id=MODEL, dataset_id=DATASET, dataset_revision=BRANCH)
    seen = {}

    def trainer(config, on_step):  # what a gpt trainer resolves first: its base model and its data
        seen["model"] = base_model.resolve_model(config.model_id).identity
        seen["dataset"] = data.dataset_identity(config.dataset_id, config.dataset_revision)
        raise RuntimeError("stop here: the inputs are what this test checks")

    run = point.start_run(config.to_dict(), "offline", name=run_id)
    assert run.sweep_id == sweep_id
    record = point.execute(trainer, config, run_id, tmp_path / "runs", run)
    run.finish()
    assert "stop here" in record.summary["error"]
    return seen


def test_a_requeued_run_days_later_trains_on_what_the_first_run_pinned(tmp_path, monkeypatch, server):
    first = run_in_a_fresh_process(tmp_path, monkeypatch, "sw1", "r1")
    assert first == {"model": "wandb:ent/proj/base:v3", "dataset": f"{DATASET}@{COMMIT_DAY1}"}
    server.take_logged_pins(tmp_path)
    assert {p["reference"] for p in server.pins.values()} == {MODEL, f'["{DATASET}", "{BRANCH}"]'}

    server.version, server.commit = "v7", COMMIT_DAY3  # days later: the alias and the branch have moved
    server.lookups = 0
    requeued = run_in_a_fresh_process(tmp_path, monkeypatch, "sw1", "r2")
    assert requeued == first and server.lookups == 0  # the pins, not today's alias and branch

    other_sweep = run_in_a_fresh_process(tmp_path, monkeypatch, "sw2", "r3")  # a new sweep pins afresh
    assert other_sweep == {"model": "wandb:ent/proj/base:v7", "dataset": f"{DATASET}@{COMMIT_DAY3}"}


def test_inputs_that_cannot_move_need_no_pin(tmp_path, monkeypatch, server):
    fixed = TrainConfig(model_id="wandb:ent/proj/base:v3", dataset_id=DATASET, dataset_revision=COMMIT_DAY1)
    assert pins.movable_inputs(fixed) == [] and pins.movable_inputs(TrainConfig()) == []
    assert pins.movable_inputs(TrainConfig(model_family="mlp", model_id=MODEL)) == []
    assert [kind for kind, _ in pins.movable_inputs(TrainConfig(model_id="hf:owner/repo"))] == ["model"]
    assert pins.pin_sweep_inputs(None, fixed, "sw1") == {}  # no API call, no artifact
