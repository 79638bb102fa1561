"""The base model a gpt run fine-tunes: which directory a model_id names, its identity in the records, the
one loaded copy per process, and its lineage in W&B.

model_id forms (TrainConfig.model_id):
- "tiny", "tiny-2026", "tiny-mid": a tiny base of the embedded default, built on first use (make_base.py;
  tiny-mid is tiny mid-trained on chat conversations, the stage SFT starts from);
- a local checkpoint directory (nanochat/checkpoint.py reads it);
- "wandb:entity/project/name:version" (a W&B model artifact): an alias (":latest") is pinned to the version
  it names the first time this process resolves it, so every run of an agent fine-tunes one model. With an
  online run active, the artifact is fetched through run.use_artifact, so the run shows it as its input.
  Downloaded once per host into paths.models_dir()/wandb/<pinned name>, model files only (the optimizer
  state nanochat saves beside them is skipped), straight into that directory (no copy in wandb's cache);
- "hf:owner/repo[@revision]": a Hugging Face snapshot in the hub's own cache (its locks, its resume),
  resolved once per process to the commit it names; the commit is part of the identity.

The identity (`ModelSource.identity`, recorded as repro.base_model) is the same on every host for the same
weights: tiny:<build>, wandb:e/p/name:v3, hf:owner/repo@<commit>, or the local path.
"""

import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fractal_llm import paths
from fractal_llm.config import ConfigError
from fractal_llm.gpt.make_base import TINY_MODELS, ensure_tiny_base
from nanochat import checkpoint

MODEL_FORMS = (f"{' or '.join(repr(m) for m in TINY_MODELS)}, a local checkpoint directory, "
               "wandb:entity/project/name:version or hf:owner/repo[@revision]")
WANDB_RE = re.compile(r"^[\w.-]+/[\w.-]+/[\w.-]+:[\w.-]+$")
WANDB_VERSION_RE = re.compile(r":v\d+$")  # a pinned version; anything else after ':' is a movable alias
HF_RE = re.compile(r"^[\w.-]+/[\w.-]+(@[\w./-]+)?$")
HF_COMMIT_RE = re.compile(r"@[0-9a-f]{40}$")  # an hf: model_id at a full commit: it never moves
OPTIMIZER_FILES = ["optim_*", "*/optim_*"]  # nanochat's optimizer state beside the weights: never read here


@dataclass(frozen=True)
class ModelSource:
    model_id: str  # as configured
    identity: str  # pinned: what the runs of this process fine-tune, the same on every host
    directory: Path | None  # the local directory; None for a W&B artifact until it is downloaded


@dataclass
class BaseModel:
    model: torch.nn.Module  # the working model; its weights are reset from `state` at every run
    state: dict  # the base weights (a private copy, never trained)
    tokenizer: object
    meta: dict
    load_s: float
    identity: str


_SOURCES: dict[str, ModelSource] = {}
_BASE_MODELS: dict[tuple[str, str], BaseModel] = {}


def check_model_id(model_id: str) -> None:
    """Cheap check of the form (no network): a local directory must exist."""
    if model_id in TINY_MODELS:
        return
    if model_id.startswith("wandb:"):
        if not WANDB_RE.match(model_id.removeprefix("wandb:")):
            raise ConfigError(f"model_id={model_id!r}: the W&B form is wandb:entity/project/name:version")
    elif model_id.startswith("hf:"):
        if not HF_RE.match(model_id.removeprefix("hf:")):
            raise ConfigError(f"model_id={model_id!r}: the Hugging Face form is hf:owner/repo[@revision]")
    elif not model_id or not Path(model_id).expanduser().is_dir():
        raise ConfigError(f"model_id={model_id!r}: no such directory (expected {MODEL_FORMS})")


def resolve_model(model_id: str) -> ModelSource:
    """The pinned source of model_id, resolved once per process (an alias or a branch that moves later does
    not change the model this process's runs fine-tune)."""
    if model_id not in _SOURCES:
        check_model_id(model_id)
        if model_id in TINY_MODELS:
            directory = ensure_tiny_base(model_id=model_id)
            source = ModelSource(model_id, f"{model_id}:{directory.name}", directory)
        elif model_id.startswith("wandb:"):
            source = ModelSource(model_id, f"wandb:{pinned_artifact(model_id.removeprefix('wandb:'))}", None)
        elif model_id.startswith("hf:"):
            repo_id, _, revision = model_id.removeprefix("hf:").partition("@")
            directory = hf_snapshot(repo_id, revision)
            source = ModelSource(model_id, f"hf:{repo_id}@{directory.name}", directory)
        else:
            source = ModelSource(model_id, model_id, Path(model_id).expanduser())
        _SOURCES[model_id] = source
    return _SOURCES[model_id]


def is_movable(model_id: str) -> bool:
    """A model_id that may name other weights later: a W&B alias (anything but :vN), an hf: repo at a branch
    (or none: the default branch) rather than a full commit."""
    if model_id.startswith("wandb:"):
        return not WANDB_VERSION_RE.search(model_id)
    if model_id.startswith("hf:"):
        return not HF_COMMIT_RE.search(model_id)
    return False


def pin_model(model_id: str, identity: str) -> ModelSource:
    """Make this process fine-tune `identity` (wandb:e/p/name:vN or hf:owner/repo@<commit>) for model_id,
    whatever its alias or branch names today: a sweep's pin (fractal_llm/runners/pins.py), so a run requeued
    days later fine-tunes the same weights."""
    if model_id.startswith("wandb:") and WANDB_RE.match(identity.removeprefix("wandb:")) \
            and WANDB_VERSION_RE.search(identity):
        source = ModelSource(model_id, identity, None)
    elif model_id.startswith("hf:") and HF_COMMIT_RE.search(identity):
        repo_id, _, commit = identity.removeprefix("hf:").partition("@")
        source = ModelSource(model_id, identity, hf_snapshot(repo_id, commit))
    else:
        raise ConfigError(f"model_id={model_id!r}: pinned to {identity!r}, which is not a W&B version (:vN) or an "
                          "hf: repo at a full commit")
    _SOURCES[model_id] = source
    return source


def pinned_artifact(spec: str) -> str:
    """entity/project/name:vN for a version or an alias (one API call for an alias)."""
    if WANDB_VERSION_RE.search(spec):
        return spec
    import wandb
    return f"{spec.rsplit(':', 1)[0]}:{wandb.Api().artifact(spec).version}"


def hf_snapshot(repo_id: str, revision: str) -> Path:
    """The hub's cached snapshot of the revision (default branch when empty), model files only. Its folder is
    named by the commit (snapshots/<commit>): the hub resolves the revision online, or from its cached refs
    with HF_HUB_OFFLINE=1."""
    from huggingface_hub import snapshot_download
    return Path(snapshot_download(repo_id=repo_id, revision=revision or None, ignore_patterns=OPTIMIZER_FILES))


def lineage_run():
    """The active W&B run that can record an input artifact: online (offline and disabled runs cannot)."""
    import wandb
    run = wandb.run
    return run if run is not None and not run.disabled and not run.offline else None


def use_in_run(source: ModelSource):
    """A W&B artifact as the active run's input (every run, also when the files are on disk already):
    returns the artifact for a download, or None (not a W&B model, or no online run)."""
    if not source.identity.startswith("wandb:"):
        return None
    run = lineage_run()
    return run.use_artifact(source.identity.removeprefix("wandb:")) if run is not None else None


def wandb_directory(source: ModelSource, artifact=None) -> Path:
    """The artifact's model files under paths.models_dir(), downloaded once per host (paths.build_once)."""
    pinned = source.identity.removeprefix("wandb:")
    target = paths.models_dir() / "wandb" / re.sub(r"[^\w.-]+", "__", pinned)

    def download() -> None:
        import wandb
        fetched = artifact or wandb.Api().artifact(pinned)
        for name in fetched.manifest.entries:
            if not any(Path(name).match(pattern) for pattern in OPTIMIZER_FILES):
                # skip_cache: straight into target, no second copy in wandb's artifact cache
                fetched.get_entry(name).download(root=str(target), skip_cache=True)

    paths.build_once(target, download)
    return target


def get_base_model(model_id: str, device: torch.device) -> BaseModel:
    """The process's loaded copy of model_id on device (loaded on the first call). A W&B model is declared
    as the active run's input on every call."""
    source = resolve_model(model_id)
    artifact = use_in_run(source)
    key = (source.identity, str(device))
    if key not in _BASE_MODELS:
        t0 = time.perf_counter()
        directory = source.directory or wandb_directory(source, artifact)
        model, tokenizer, meta = checkpoint.load_model(directory, device=str(device))
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        _BASE_MODELS[key] = BaseModel(model, state, tokenizer, meta, time.perf_counter() - t0, source.identity)
    return _BASE_MODELS[key]


def clear_caches() -> None:
    _SOURCES.clear()
    _BASE_MODELS.clear()
