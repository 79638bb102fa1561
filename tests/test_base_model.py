"""fractal_llm.gpt.base_model: which directory a model_id names, its pinned identity, one loaded copy per process,
and the lineage of a W&B model (run.use_artifact). No network: W&B's public API and the hub's download are
replaced by stand-ins that write a real checkpoint; the run is a minimal object with use_artifact."""

import fnmatch
import shutil
import threading
import time
import types
from pathlib import Path

import huggingface_hub
import pytest
import torch
import wandb

from fractal_llm.gpt import base_model

from fractal_llm.gpt import finetune
from fractal_llm.gpt.base_model import OPTIMIZER_FILES, check_model_id, get_base_model
from fractal_llm.config import ConfigError
from fractal_llm.gpt.docqa import document_texts
from nanochat.checkpoint import save_model
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import Tokenizer

VOCAB = 300
CFG = dict(sequence_len=32, vocab_size=VOCAB, n_layer=1, n_head=2, n_kv_head=2, n_embd=32)
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A model in the artifact layout, plus the optimizer state nanochat writes beside the weights."""
    tokenizer = Tokenizer.train_from_iterator(document_texts(100, seed=0), VOCAB)
    torch.manual_seed(0)
    model = GPT(GPTConfig(**CFG))
    model.init_weights()
    root = tmp_path_factory.mktemp("artifact")
    save_model(root, model, tokenizer, step=5)
    torch.save({"momentum": torch.zeros(3)}, root / "checkpoints" / "optim_000005.pt")
    return root


@pytest.fixture(autouse=True)
def fresh_process_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("FRACTAL_LLM_HOME", str(tmp_path / "home"))
    finetune.clear_caches()
    yield
    finetune.clear_caches()


class FakeEntry:
    def __init__(self, source: Path, name: str, log: list):
        self.source, self.name, self.log = source, name, log

    def download(self, root, skip_cache=None):
        self.log.append((self.name, skip_cache))
        target = Path(root) / self.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.source / self.name, target)
        return str(target)


class FakeArtifact:
    """The attributes of wandb's Artifact that base_model reads: version, manifest.entries, get_entry."""

    def __init__(self, source: Path, version: str, downloads: list):
        self.source, self.version, self.downloads = source, version, downloads
        names = [str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()]
        self.manifest = types.SimpleNamespace(entries={name: None for name in names})

    def get_entry(self, name):
        return FakeEntry(self.source, name, self.downloads)


class FakeRun:
    """An online run, as far as lineage goes: it records what use_artifact was asked for."""
    disabled = offline = False

    def __init__(self, source: Path, downloads: list):
        self.used, self.source, self.downloads = [], source, downloads

    def use_artifact(self, name):
        self.used.append(name)
        return FakeArtifact(self.source, name.rsplit(":", 1)[1], self.downloads)


def fake_api(saved: Path, latest: dict, lookups: list, downloads: list):
    def artifact(name):
        lookups.append(name)
        version = latest["version"] if name.endswith(":latest") else name.rsplit(":", 1)[1]
        return FakeArtifact(saved, version, downloads)
    return lambda *args, **kwargs: types.SimpleNamespace(artifact=artifact)


def test_a_wandb_alias_is_pinned_once_and_every_run_uses_the_pinned_artifact(saved, monkeypatch):
    latest, lookups, downloads = {"version": "v4"}, [], []
    monkeypatch.setattr(wandb, "Api", fake_api(saved, latest, lookups, downloads))
    run = FakeRun(saved, downloads)
    monkeypatch.setattr(wandb, "run", run)
    first = get_base_model("wandb:ent/proj/base-d20:latest", CPU)
    latest["version"] = "v5"  # someone logs a new version while the agent runs
    second = get_base_model("wandb:ent/proj/base-d20:latest", CPU)
    assert lookups == ["ent/proj/base-d20:latest"]  # resolved once per process
    assert run.used == ["ent/proj/base-d20:v4"] * 2  # each run shows its input, at the pinned version
    assert second is first and first.identity == "wandb:ent/proj/base-d20:v4"
    fetched = sorted(name for name, _ in downloads)
    assert fetched == ["checkpoints/meta_000005.json", "checkpoints/model_000005.pt",
                       "tokenizer/token_bytes.pt", "tokenizer/tokenizer.pkl"]  # no optimizer state
    assert {skip for _, skip in downloads} == {True}  # no second copy in wandb's artifact cache
    directory = Path(first.meta["loaded_from"]["checkpoint_dir"]).parent
    assert directory.parent == Path(base_model.paths.models_dir()) / "wandb"
    assert not list(directory.rglob("optim_*"))


def test_without_an_online_run_a_wandb_model_downloads_through_the_api_once_per_host(saved, monkeypatch):
    latest, lookups, downloads = {"version": "v4"}, [], []
    api = fake_api(saved, latest, lookups, downloads)

    def slow_api(*args, **kwargs):
        time.sleep(0.1)  # widen the race between the threads
        return api()

    monkeypatch.setattr(wandb, "Api", slow_api)
    monkeypatch.setattr(wandb, "run", types.SimpleNamespace(disabled=True, offline=False,
                                                            use_artifact=lambda name: pytest.fail("disabled run")))
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        base_model.wandb_directory(base_model.resolve_model("wandb:ent/proj/base-d20:v3")))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 4
    assert len(downloads) == 4 and lookups == ["ent/proj/base-d20:v3"]  # one download of the 4 model files


def test_an_hf_model_is_pinned_to_its_commit_in_the_hubs_own_cache(saved, tmp_path, monkeypatch):
    calls, commit = [], {"sha": "a" * 40}

    def snapshot_download(repo_id, revision=None, ignore_patterns=None, **kwargs):
        calls.append((repo_id, revision, kwargs))
        skipped = lambda name: any(fnmatch.fnmatch(name, p) for p in ignore_patterns)  # noqa: E731 (hub's matching)
        assert skipped("optim_000650_rank0.pt") and skipped("checkpoints/optim_000650.pt")
        assert not any(skipped(n) for n in ("model_000650.pt", "meta_000650.json", "tokenizer.pkl",
                                            "checkpoints/model_000650.pt", "tokenizer/tokenizer.pkl"))
        folder = tmp_path / "hub" / "snapshots" / commit["sha"]
        if not folder.exists():
            shutil.copytree(saved, folder, ignore=shutil.ignore_patterns("optim_*"))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    first = get_base_model("hf:karpathy/nanochat-d32", CPU)
    commit["sha"] = "b" * 40  # the default branch moves on
    assert get_base_model("hf:karpathy/nanochat-d32", CPU) is first  # pinned once per process
    assert first.identity == f"hf:karpathy/nanochat-d32@{'a' * 40}"
    assert calls == [("karpathy/nanochat-d32", None, {})]  # the hub's cache: no local_dir, no lock of ours
    finetune.clear_caches()  # a new process
    assert get_base_model("hf:karpathy/nanochat-d32@main", CPU).identity == f"hf:karpathy/nanochat-d32@{'b' * 40}"
    assert calls[-1][:2] == ("karpathy/nanochat-d32", "main")


@pytest.mark.parametrize("model_id, match", [
    ("wandb:just-a-name", "wandb:entity/project/name:version"),
    ("wandb:e/p/name", "wandb:entity/project/name:version"),
    ("hf:no-slash", "hf:owner/repo"),
    ("", "no such directory"),
    ("/no/such/dir", "no such directory.*'tiny' or 'tiny-2026'"),
])
def test_bad_model_ids_name_the_accepted_forms(model_id, match):
    with pytest.raises(ConfigError, match=match):
        check_model_id(model_id)


def test_trainer_tiny_base_data_and_base_model_import_no_cycle():
    """finetune uses base_model, data and the shared optimizer step; none of those imports finetune, and the
    tiny base borrows nothing from the trainer (imports inside functions count)."""
    import ast
    root = Path(base_model.__file__).parent

    def imported(module: str) -> set[str]:
        tree = ast.parse((root / f"{module}.py").read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        return {n.removeprefix("fractal_llm.") for n in names if n.startswith("fractal_llm.")}

    for module in ("make_base", "data", "base_model", "training_step", "docqa"):
        assert "gpt.finetune" not in imported(module), module
    for module in ("make_base", "data", "docqa"):
        assert "gpt.base_model" not in imported(module), module
    assert "gpt.training_step" in imported("make_base") and "gpt.training_step" in imported("finetune")


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_offline_and_disabled_runs_of_the_real_client_are_not_asked_for_lineage(mode, tmp_path):
    """wandb refuses use_artifact offline (TypeError) and returns None when disabled: such runs get the files
    through the public API instead."""
    run = wandb.init(mode=mode, dir=str(tmp_path), project="lineage-test")
    try:
        assert wandb.run is run and base_model.lineage_run() is None
    finally:
        run.finish()
        wandb.teardown()  # wandb's process-wide settings (dir, mode) must not leak into later tests
