"""nanochat checkpoint directories: model_<step>.pt + meta_<step>.json, and loading a model from one.

Two model eras, told apart by the meta's model_config (docs/nanochat.md):
  - Dec-2025 nanochat (nanochat/gpt.py): model_config holds exactly the six shape fields;
  - 2026 nanochat (nanochat/gpt2026.py, commit 92d63d4): the same plus window_pattern.

`load_model` reads a local directory: the artifact layout (`checkpoints/` beside `tokenizer/`), or a
directory of model/meta files with tokenizer.pkl beside it, in `tokenizer/`, or up to two levels above
(nanochat's NANOCHAT_BASE_DIR layout: base_checkpoints/d20 with tokenizer/ at the base dir). Fetching a
W&B artifact or a Hugging Face snapshot into such a directory is the caller's job.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, fields
from pathlib import Path

import torch

from nanochat.gpt import GPT, GPTConfig
from nanochat.gpt2026 import GPT2026, GPT2026Config
from nanochat.tokenizer import PICKLE_NAME, Tokenizer

# era -> (config class, model class); the era is the one whose own keys the model_config has (else Dec-2025)
ERAS = {"Dec-2025": (GPTConfig, GPT), "2026": (GPT2026Config, GPT2026)}
ERA_FIELDS = {era: tuple(f.name for f in fields(config_cls)) for era, (config_cls, _) in ERAS.items()}
CONFIG_FIELDS = ERA_FIELDS["Dec-2025"]
COMPILE_PREFIX = "_orig_mod."


# ---------------------------------------------------------------------------- directory format
def _files_by_step(directory: Path, prefix: str, suffix: str) -> dict[int, Path]:
    pattern = re.compile(rf"^{prefix}_(\d+){re.escape(suffix)}$")
    found = {}
    for path in directory.iterdir():
        match = pattern.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def find_last_step(directory: str | Path) -> int:
    """Largest step among model_<step>.pt files (any zero-padding width)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    steps = _files_by_step(directory, "model", ".pt")
    if not steps:
        raise FileNotFoundError(f"no model_<step>.pt files in {directory}")
    return max(steps)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def save_checkpoint(directory: str | Path, step: int, model_state: dict, meta: dict, optimizer_state=None) -> Path:
    """Write model_<step:06d>.pt, meta_<step:06d>.json (and optim_<step:06d>.pt) atomically; returns the dir."""
    if not isinstance(step, int) or step < 0:
        raise ValueError(f"step={step!r}: must be an int >= 0")
    _check_model_config(meta, where="meta")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = strip_compile_prefix(model_state)
    _atomic_write(directory / f"model_{step:06d}.pt", lambda p: torch.save(state, p))
    _atomic_write(directory / f"meta_{step:06d}.json", lambda p: p.write_text(json.dumps(meta, indent=2)))
    if optimizer_state is not None:
        _atomic_write(directory / f"optim_{step:06d}.pt", lambda p: torch.save(optimizer_state, p))
    return directory


def strip_compile_prefix(state: dict) -> dict:
    """Remove torch.compile's '_orig_mod.' prefix from state-dict keys."""
    return {k.removeprefix(COMPILE_PREFIX): v for k, v in state.items()}


def load_checkpoint(directory: str | Path, step: int | None = None, device="cpu") -> tuple[dict, dict]:
    """(state_dict, meta) for `step` (default: the last). Prefixes stripped; bf16 -> fp32 on CPU."""
    directory = Path(directory)
    step = find_last_step(directory) if step is None else step
    models = _files_by_step(directory, "model", ".pt")
    metas = _files_by_step(directory, "meta", ".json")
    if step not in models:
        raise FileNotFoundError(f"no model file for step {step} in {directory}; steps present: {sorted(models)}")
    if step not in metas:
        raise FileNotFoundError(f"no meta_<step>.json for step {step} in {directory}")
    device = torch.device(device)
    state = strip_compile_prefix(torch.load(models[step], map_location=device, weights_only=True))
    if device.type == "cpu":  # bf16 matmuls on CPU are slow and imprecise; nanochat casts too
        state = {k: v.float() if v.dtype == torch.bfloat16 else v for k, v in state.items()}
    meta = json.loads(metas[step].read_text())
    return state, meta


def model_era(config: dict) -> str:
    """'2026' when model_config has a key only the 2026 model has (window_pattern), else 'Dec-2025'.
    Checkpoints written before window_pattern existed lack it; they are Dec-2025 models."""
    new_keys = set(ERA_FIELDS["2026"]) - set(ERA_FIELDS["Dec-2025"])
    return "2026" if new_keys & set(config) else "Dec-2025"


def _check_model_config(meta: dict, where: str) -> dict:
    config = meta.get("model_config") if isinstance(meta, dict) else None
    accepted = "; ".join(f"{era} nanochat: exactly {list(names)}" for era, names in ERA_FIELDS.items())
    if not isinstance(config, dict):
        raise ValueError(f"{where}: needs a 'model_config' dict ({accepted})")
    era = model_era(config)
    missing = [f for f in ERA_FIELDS[era] if f not in config]
    extra = [k for k in config if k not in ERA_FIELDS[era]]
    if missing or extra:
        raise ValueError(f"{where}.model_config ({era} era): missing {missing}, unsupported {extra}; "
                         f"accepted: {accepted}")
    return config


def config_from_meta(meta: dict, where: str) -> GPTConfig:
    """The model config of the checkpoint's era (GPTConfig or GPT2026Config), checked."""
    config = _check_model_config(meta, where)
    config_cls, _ = ERAS[model_era(config)]
    return config_cls(**config)


def build_model(config: GPTConfig) -> GPT | GPT2026:
    """An (uninitialised) model of the config's era."""
    return GPT2026(config) if isinstance(config, GPT2026Config) else GPT(config)


# ---------------------------------------------------------------------------- locating files
def _has_model_files(directory: Path) -> bool:
    return directory.is_dir() and bool(_files_by_step(directory, "model", ".pt"))


def locate_checkpoint_dir(root: Path) -> Path:
    """root/checkpoints (artifact layout) or root itself, whichever holds model_<step>.pt files."""
    if not root.is_dir():
        raise FileNotFoundError(f"model source directory {root} does not exist")
    for candidate in (root / "checkpoints", root):
        if _has_model_files(candidate):
            return candidate
    raise FileNotFoundError(f"no model_<step>.pt files in {root} or {root / 'checkpoints'}")


def locate_tokenizer_dir(checkpoint_dir: Path) -> Path:
    """First of: the checkpoint dir, its tokenizer/, then the same for its parent and grandparent."""
    candidates = []
    for base in [checkpoint_dir, *list(checkpoint_dir.parents)[:2]]:
        candidates += [base, base / "tokenizer"]
    for candidate in candidates:
        if (candidate / PICKLE_NAME).is_file():
            return candidate
    raise FileNotFoundError(f"no {PICKLE_NAME} found for checkpoint {checkpoint_dir}; looked in: "
                            + ", ".join(str(c) for c in candidates))


# ---------------------------------------------------------------------------- model IO
def load_model(directory: str | Path, device="cpu", step: int | None = None) -> tuple[GPT | GPT2026, Tokenizer, dict]:
    """(model in eval mode, tokenizer, meta) from a local directory; strict state-dict load.

    The model's era (Dec-2025 GPT or 2026 GPT2026) follows the meta's model_config. meta gains a
    "loaded_from" entry: checkpoint_dir, tokenizer_dir, step and era.
    """
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"model directory {str(directory)!r}: no such directory")
    checkpoint_dir = locate_checkpoint_dir(root)
    tokenizer_dir = locate_tokenizer_dir(checkpoint_dir)
    step = find_last_step(checkpoint_dir) if step is None else step
    state, meta = load_checkpoint(checkpoint_dir, step, device)
    where = f"{checkpoint_dir}/meta for step {step}"
    config = config_from_meta(meta, where)
    tokenizer = Tokenizer.from_directory(tokenizer_dir)
    if tokenizer.get_vocab_size() != config.vocab_size:
        raise ValueError(f"tokenizer in {tokenizer_dir} has vocab size {tokenizer.get_vocab_size()}, "
                         f"but the checkpoint's model_config.vocab_size is {config.vocab_size}")
    model = _empty_model(config, torch.device(device))
    _check_state_keys(state, model, where)
    model.load_state_dict(state, strict=True)
    model.eval()
    era = model_era(meta["model_config"])
    meta = dict(meta, loaded_from={"checkpoint_dir": str(checkpoint_dir), "tokenizer_dir": str(tokenizer_dir),
                                   "step": step, "era": era})
    return model, tokenizer, meta


def _check_state_keys(state: dict, model: torch.nn.Module, where: str) -> None:
    """A state dict whose keys are not the model's: say which era was built and which keys differ (e.g. a
    nanochat from between the two eras, with resid_lambdas but no window_pattern in its meta)."""
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        era = model_era(asdict(model.config))
        raise ValueError(f"{where}: the state dict does not fit the {era} model its model_config selects: "
                         f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, "
                         f"unexpected {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}")


def _empty_model(config: GPTConfig, device: torch.device) -> GPT | GPT2026:
    """A model whose weights are about to be overwritten. Large models are built on the meta device
    (no seconds of random init); small ones directly, since the meta device's first use costs ~1 s of imports."""
    approx_params = 2 * config.padded_vocab_size * config.n_embd + 12 * config.n_layer * config.n_embd ** 2
    if approx_params < 20_000_000:
        with torch.device(device):
            return build_model(config)
    with torch.device("meta"):
        model = build_model(config)
    model.to_empty(device=device)
    model.init_rotary()
    return model


def save_model(root: str | Path, model: GPT | GPT2026, tokenizer: Tokenizer, step: int = 0,
               meta: dict | None = None) -> Path:
    """Write the artifact layout: root/checkpoints/model_<step>.pt + meta, and root/tokenizer/."""
    if tokenizer.get_vocab_size() != model.config.vocab_size:
        raise ValueError(f"tokenizer vocab size {tokenizer.get_vocab_size()} != model vocab_size {model.config.vocab_size}")
    root = Path(root)
    full_meta = dict(meta or {}, model_config=asdict(model.config), step=step)
    save_checkpoint(root / "checkpoints", step, model.state_dict(), full_meta)
    tokenizer.save(root / "tokenizer")
    return root
