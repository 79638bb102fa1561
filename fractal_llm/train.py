"""The single train function: fine-tune a nanochat GPT on chat data for one grid point.

train(config) -> RunResult is what every sweep point calls, in-process (local runner, W&B agent
function) or through `python -m fractal_llm.train --name=value ...` (the `${args}` command).
The base model and the tokenized data are cached per process: the second call only copies the
base weights back into the working model.
"""

import math
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import torch

from fractal_llm import paths
from fractal_llm.config import ConfigError, TrainConfig, field_names, parse_cli_overrides
from fractal_llm.records import RunRecord, RunResult, error_summary, point_name, record_from_result, write_record
from fractal_llm.verdict import summarize_losses

OnStep = Callable[[int, dict], None]


# ----------------------------------------------------------------------------------------------
# Per-process caches: base model and tokenized data


@dataclass
class BaseModel:
    model: "torch.nn.Module"  # the working model; its weights are reset from `state` at every run
    state: dict  # the base weights (a private copy, never trained)
    tokenizer: object
    meta: dict
    load_s: float


_BASE_MODELS: dict[tuple[str, str], BaseModel] = {}
_DATASETS: dict[tuple, object] = {}


def resolve_device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda': no CUDA device is visible (CUDA_VISIBLE_DEVICES, driver?)")
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def model_source(model_id: str) -> str:
    """The tiny preset is built on first use; every other id goes straight to the checkpoint loader."""
    if model_id == "tiny":
        from fractal_llm.tiny_base import ensure_tiny_base
        return str(ensure_tiny_base())
    return model_id


def get_base_model(model_id: str, device: torch.device) -> BaseModel:
    key = (model_id, str(device))
    if key not in _BASE_MODELS:
        from nanochat.checkpoint import load_model
        t0 = time.perf_counter()
        model, tokenizer, meta = load_model(model_source(model_id), device=str(device), cache_dir=paths.models_dir())
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        _BASE_MODELS[key] = BaseModel(model, state, tokenizer, meta, time.perf_counter() - t0)
    return _BASE_MODELS[key]


def get_dataset(config: TrainConfig, split: str, tokenizer):
    from fractal_llm.data import load_tokenized
    key = (config.dataset_id, config.dataset_revision, split, tokenizer.fingerprint(), config.max_seq_len)
    if key not in _DATASETS:
        _DATASETS[key] = load_tokenized(config.dataset_id, config.dataset_revision, split, tokenizer,
                                        config.max_seq_len)
    return _DATASETS[key]


def clear_caches() -> None:
    _BASE_MODELS.clear()
    _DATASETS.clear()


# ----------------------------------------------------------------------------------------------
# Learning-rate schedule and token budget


def lr_multiplier(step: int, total_steps: int, config: TrainConfig) -> float:
    """init_lr_frac x (linear warmup over warmup_frac of the steps, then cosine to final_lr_frac, or constant)."""
    warmup = round(config.warmup_frac * total_steps)
    if step < warmup:
        return config.init_lr_frac * (step + 1) / warmup
    if config.lr_schedule == "constant":
        return config.init_lr_frac
    progress = (step - warmup) / max(1, total_steps - warmup)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.init_lr_frac * (config.final_lr_frac + (1.0 - config.final_lr_frac) * cosine)


def steps_for_budget(num_tokens: int, batch_size: int, mean_supervised_tokens: float) -> int:
    """Steps to see num_tokens supervised (assistant) tokens, as the seed study counted them."""
    per_step = batch_size * mean_supervised_tokens
    if per_step <= 0:
        raise ValueError("dataset: no supervised (assistant) tokens, so a token budget cannot be met")
    return max(1, math.ceil(num_tokens / per_step))


def planned_steps(config: TrainConfig, dataset) -> int:
    if config.num_iterations > 0:
        return config.num_iterations
    return steps_for_budget(config.num_tokens, config.device_batch_size, dataset.mean_supervised_tokens)


# ----------------------------------------------------------------------------------------------
# Reproducibility metadata


@lru_cache(maxsize=1)
def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.project_root(), capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def repro_metadata(device: torch.device) -> dict:
    import wandb
    return {
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "wandb": wandb.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "host": socket.gethostname(),
    }


def set_determinism(config: TrainConfig) -> None:
    torch.manual_seed(config.seed)
    if config.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def autocast_context(config: TrainConfig, device: torch.device):
    use_bf16 = config.dtype == "bfloat16" or (config.dtype == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)


# ----------------------------------------------------------------------------------------------
# Training


def train(config: TrainConfig, on_step: OnStep | None = None) -> RunResult:
    """Fine-tune one grid point. Raises on errors (bad checkpoint, OOM...); divergence is a verdict."""
    if config.model_family == "mlp":
        from fractal_llm.mlp import train_one
        return train_one(config)
    preflight(config)
    t_start = time.perf_counter()
    device = resolve_device(config)
    set_determinism(config)
    base = get_base_model(config.model_id, device)
    loaded = time.perf_counter()
    dataset = get_dataset(config, config.dataset_split, base.tokenizer)
    data_ready = time.perf_counter()

    model = base.model
    model.load_state_dict(base.state)
    for p in model.parameters():
        p.requires_grad_(True)  # the previous run may have frozen other groups
    groups = tuple(model.param_groups_by_name())  # the Dec-2025 model's three, or the 2026 model's six
    lrs = {f"{group}_lr": lr for group, lr in config.group_lrs().items() if group in groups}
    optimizers = model.setup_optimizers(**lrs, weight_decay=config.weight_decay,
                                        trainable=config.trainable_groups(groups))
    total_steps = planned_steps(config, dataset)
    samples = generate_samples(config, base, "before") if config.sample_before_after else []
    losses, history = run_steps(config, model, optimizers, dataset, base, total_steps, device, on_step, samples)
    trained = time.perf_counter()
    if config.sample_before_after:
        samples += generate_samples(config, base, "after")

    summary = summarize_losses(losses, total_steps, config.trainable_window_steps,
                               config.trainable_loss_ratio_threshold)
    summary.update(tokens_seen=history["train/tokens_seen"][-1] if losses else 0,
                   runtime_s=trained - t_start, error=None)
    resolved = config.resolved().to_dict()
    resolved["repro"] = repro_metadata(device)
    resolved["repro"]["timing"] = {"load_s": loaded - t_start, "data_s": data_ready - loaded,
                                   "train_s": trained - data_ready, "base_load_s": base.load_s}
    return RunResult(config=resolved, summary=summary, history=history, samples=samples or None)


def run_steps(config, model, optimizers, dataset, base, total_steps, device, on_step, samples):
    """The optimizer loop. Stops at the first non-finite loss (recorded: it is the divergence).
    Samples taken every `sample_every` steps are appended to `samples`."""
    from fractal_llm.data import iterate_batches
    tokenizer = base.tokenizer
    pad_id = tokenizer.encode_special("<|assistant_end|>")
    batches = iterate_batches(dataset, config.device_batch_size, config.seed, pad_id, device=device)
    groups = [g for opt in optimizers for g in opt.param_groups]
    history: dict[str, list[float]] = {"train/loss": [], "train/tokens_seen": []}
    history.update({f"lr/{g['name']}": [] for g in groups})
    losses: list[float] = []
    tokens_seen = 0
    for step in range(total_steps):
        multiplier = lr_multiplier(step, total_steps, config)
        for group in groups:
            group["lr"] = group["initial_lr"] * multiplier
        batch = next(batches)
        with autocast_context(config, device):
            loss = model(batch.inputs, batch.targets)
        loss_value = loss.item()
        losses.append(loss_value)
        tokens_seen += batch.n_supervised
        row = {"train/loss": loss_value, "train/tokens_seen": tokens_seen}
        row.update({f"lr/{g['name']}": g["lr"] for g in groups})
        for key, value in row.items():
            history[key].append(value)
        if config.eval_every > 0 and (step % config.eval_every == 0 or step == total_steps - 1):
            row["val/loss"] = evaluate(config, model, tokenizer, device)
        if config.sample_every > 0 and step % config.sample_every == 0:
            samples += generate_samples(config, base, f"step {step}")
        if on_step is not None:
            on_step(step, row)
        if not math.isfinite(loss_value):
            break  # divergence: a result, recorded by the verdict
        if optimizers:  # trainable_param_groups="none": nothing to update (the loss is the base model's)
            loss.backward()
            for opt in optimizers:
                opt.step()
            model.zero_grad(set_to_none=True)
    return losses, history


@torch.no_grad()
def evaluate(config: TrainConfig, model, tokenizer, device, num_batches: int = 4) -> float:
    """Mean loss over a fixed set of validation batches (same batches at every evaluation)."""
    from fractal_llm.data import iterate_batches
    dataset = get_dataset(config, "validation", tokenizer)
    pad_id = tokenizer.encode_special("<|assistant_end|>")
    batches = iterate_batches(dataset, config.device_batch_size, 0, pad_id, device=device)
    total = 0.0
    for _ in range(num_batches):
        batch = next(batches)
        with autocast_context(config, device):
            total += model(batch.inputs, batch.targets).item()
    return total / num_batches


@torch.no_grad()
def generate_samples(config: TrainConfig, base: BaseModel, when: str, count: int = 3,
                     max_tokens: int = 32) -> list[dict]:
    """Greedy answers to the first validation conversations, for before/after tables."""
    from fractal_llm.data import load_conversations
    conversations = load_conversations(config.dataset_id, config.dataset_revision, "validation")[:count]
    samples = []
    for index, conversation in enumerate(conversations):
        prompt = base.tokenizer.render_for_completion(conversation)
        end = base.tokenizer.encode_special("<|assistant_end|>")
        out = []
        for token in base.model.generate(prompt, max_tokens=max_tokens, temperature=0.0):
            if token == end:
                break
            out.append(token)
        question = conversation["messages"][-2]["content"]
        samples.append({"when": when, "index": index, "question": question[-200:],
                        "answer": base.tokenizer.decode(out)})
    return samples


# ----------------------------------------------------------------------------------------------
# W&B + local record: one point from start to finished record


def default_wandb_mode() -> str:
    """WANDB_MODE if set; otherwise online only when an API key is configured, else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    if not has_key:
        _say_offline_once()
        return "offline"
    return "online"


@lru_cache(maxsize=1)
def _say_offline_once() -> None:
    from rich.console import Console
    Console(stderr=True).print("[yellow]no W&B API key configured: logging offline "
                               "(upload later with `wandb sync`)[/yellow]")


def record_name(values: dict) -> str:
    """Records are named by their config values so a re-run finds them; long names get a hash tail."""
    import hashlib
    name = point_name(values) or "defaults"  # no overrides at all: the embedded default's short run
    if len(name) <= 150:
        return name
    return f"{name[:100]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}"


def default_record_dir(sweep_id: str | None = None) -> Path:
    if os.environ.get("FRACTAL_LLM_RUNS_DIR"):
        return Path(os.environ["FRACTAL_LLM_RUNS_DIR"])
    return paths.runs_dir() / (sweep_id or "adhoc")


def execute(config: TrainConfig, name: str, record_dir: Path, run=None) -> RunRecord:
    """Train, stream each step to the W&B run (if any), write summary and local record.

    Never raises for the run's own failure: an exception becomes an `error` record."""
    t0 = time.perf_counter()
    log_s = 0.0

    def on_step(step: int, row: dict) -> None:
        nonlocal log_s
        if run is not None:
            t = time.perf_counter()
            run.log({"step": step, **row}, step=step)
            log_s += time.perf_counter() - t

    try:
        result = train(config, on_step=on_step)
    except Exception as exc:  # recorded as an `error` outcome, kept apart from divergence
        message = f"{type(exc).__name__}: {exc}"
        result = RunResult(config=config.resolved().to_dict(), summary=error_summary(message, time.perf_counter() - t0),
                           history={})
    t_log = time.perf_counter()
    if run is not None:
        run.summary.update(result.summary)
        if result.samples:
            import wandb
            columns = ["when", "index", "question", "answer"]
            run.log({"samples": wandb.Table(columns=columns, data=[[s[c] for c in columns] for s in result.samples])})
        run.config.update({"resolved": result.config}, allow_val_change=True)
    if "repro" in result.config:
        result.config["repro"]["timing"]["log_s"] = log_s + time.perf_counter() - t_log
    record = record_from_result(result, name, run_id=run.id if run is not None else "")
    write_record(record, record_dir)
    return record


def init_wandb_run(config_values: dict | None, mode: str | None = None):
    import wandb
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fractal-llm"), config=config_values,
                     mode=mode or default_wandb_mode())
    run.define_metric("step")
    for prefix in ("train/*", "lr/*", "val/*"):
        run.define_metric(prefix, step_metric="step")
    return run


def run_point(config: TrainConfig, name: str, record_dir: Path, wandb_mode: str | None = None) -> RunRecord:
    """The local runner's path: one point in this process, a W&B run in `wandb_mode` (default: offline)."""
    mode = wandb_mode or os.environ.get("WANDB_MODE") or "offline"
    if mode == "disabled":
        return execute(config, name, record_dir)
    run = init_wandb_run(config.to_dict(), mode)
    record = execute(config, name, record_dir, run)
    run.finish(exit_code=1 if record.verdict == "error" else 0)
    return record


def release_accelerator_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def agent_function() -> None:
    """The function handed to wandb.agent: one sweep run in this (long-lived) process."""
    import wandb
    run = wandb.init()
    values = {k: v for k, v in dict(run.config).items() if k in field_names()}
    try:
        config = TrainConfig.from_dict(values)
    except ConfigError as exc:
        run.summary.update(error_summary(str(exc), 0.0))
        run.finish(exit_code=1)
        raise
    record = execute(config, record_name(values), default_record_dir(run.sweep_id), run)
    run.finish(exit_code=1 if record.verdict == "error" else 0)
    release_accelerator_memory()
    if record.verdict == "error":
        raise RuntimeError(record.summary["error"])  # the agent marks the run failed and goes on


def preflight(config: TrainConfig) -> None:
    """Cheap checks of the inputs on disk, so a missing file fails before W&B or any model work."""
    from fractal_llm.data import check_dataset_id, check_has_validation
    if config.model_family != "gpt":
        return
    check_dataset_id(config.dataset_id)
    wanted_by = [name for name, on in (("eval_every", config.eval_every > 0), ("sample_every", config.sample_every > 0),
                                       ("sample_before_after", config.sample_before_after)) if on]
    if wanted_by:
        check_has_validation(config.dataset_id, " and ".join(f"{name}={getattr(config, name)!r}" for name in wanted_by))
    source = config.model_id
    if source != "tiny" and not source.startswith(("wandb:", "hf:")) and not Path(source).is_dir():
        raise ConfigError(f"model_id={source!r}: no such directory (expected \"tiny\", a local checkpoint "
                          "directory, wandb:entity/project/name:version or hf:owner/repo)")


def usage() -> str:
    defaults = TrainConfig().to_dict()
    lines = ["usage: python -m fractal_llm.train [--name=value ...]   (no arguments: a short embedded-default run)",
             "", "fields (default):"]
    lines += [f"  --{name}={value!r}" for name, value in defaults.items()]
    lines += ["", "WANDB_MODE=online|offline|disabled (default: offline without an API key);",
              "local record under $FRACTAL_LLM_RUNS_DIR (default: the cache's runs/adhoc or runs/<sweep id>)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from rich.console import Console
    console = Console(stderr=True)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    from fractal_llm.data import DatasetError
    try:
        overrides = parse_cli_overrides(argv)
        config = TrainConfig.from_dict(overrides)
        preflight(config)
    except (ConfigError, DatasetError) as exc:
        console.print(f"[red]config error:[/red] {exc}", soft_wrap=True)
        return 2
    mode = default_wandb_mode()
    run = None if mode == "disabled" else init_wandb_run(config.to_dict(), mode)
    sweep_id = getattr(run, "sweep_id", None) if run is not None else None
    if run is not None and sweep_id:
        # Inside a sweep agent the sweep's values arrive through wandb.config: use the same resolved config.
        values = {k: v for k, v in dict(run.config).items() if k in field_names()}
        config = TrainConfig.from_dict(values)
    record = execute(config, record_name(overrides), default_record_dir(sweep_id), run)
    summary = record.summary
    console.print(f"verdict: [bold]{summary['verdict']}[/bold]  loss {summary['loss_first']} -> "
                  f"{summary['loss_last']}  steps {summary['steps']}  {summary['runtime_s']:.2f}s", soft_wrap=True)
    if summary["error"]:
        console.print(f"[red]error:[/red] {summary['error']}", soft_wrap=True)
    exit_code = 1 if record.verdict == "error" else 0
    if run is not None:
        run.finish(exit_code=exit_code)
    print(f"record: {record.path}")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
