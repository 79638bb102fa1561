"""The gpt family's trainer: fine-tune a nanochat GPT on chat data for one grid point.

train_gpt(config) -> RunResult. The base model (base_model.py) and the tokenized data are cached per process (a
W&B agent or a runner worker serves many points): the second call only copies the base weights back into the
working model, and every run starts from fresh optimizer state and no gradients.
"""

import itertools
import math
import os
import sys
import time
from typing import Callable

import torch

from fractal_llm.gpt import base_model
from fractal_llm.gpt.base_model import BaseModel, get_base_model
from fractal_llm.config import ConfigError, TrainConfig
from fractal_llm.gpt.data import dataset_identity, resolve_revision
from fractal_llm.records import RunResult
from fractal_llm.repro import repro_metadata
from fractal_llm.gpt.training_step import optimizer_step, set_lr
from fractal_llm.verdict import summarize_losses

OnStep = Callable[[int, dict], None]


# ----------------------------------------------------------------------------------------------
# Per-process caches: base model and tokenized data


_DATASETS: dict[tuple, object] = {}
_STEP_MODELS: dict[int, tuple[BaseModel, torch.nn.Module]] = {}  # id(base) -> (base, what its steps call)


def resolve_device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda': no CUDA device is visible (CUDA_VISIBLE_DEVICES, driver?)")
    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def get_dataset(config: TrainConfig, split: str, tokenizer):
    from fractal_llm.gpt.data import load_tokenized
    key = (config.dataset_id, resolve_revision(config.dataset_id, config.dataset_revision), split,
           tokenizer.fingerprint(), config.max_seq_len)
    if key not in _DATASETS:
        _DATASETS[key] = load_tokenized(config.dataset_id, config.dataset_revision, split, tokenizer,
                                        config.max_seq_len)
    return _DATASETS[key]


def clear_caches() -> None:
    base_model.clear_caches()
    _DATASETS.clear()
    _STEP_MODELS.clear()


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
# The compiled step (docs/design.md, "Compiled step")


def compile_wanted(config: TrainConfig, device: torch.device) -> bool:
    """compile="auto" compiles on CUDA only. On CPU (tiny model, 8 x 256 tokens, one thread, process CPU time
    per step with Muon) the compiled step took 24 ms against 34 ms eager, so a 20-step point saves ~0.2 s,
    while compiling took 41 s per process with a cold inductor cache and 7.5 s with a warm one: it pays only
    past ~40-200 points per process, and would slow every test and README's one-sweep command.
    (benchmarks/bench_compile.py measures it.)"""
    if config.dtype == "float64":
        return False  # the compiled graph is float32 (config refuses compile="compiled" with float64)
    if config.compile == "auto":
        return device.type == "cuda"
    return config.compile == "compiled"


def training_batches(config: TrainConfig, dataset, tokenizer, device: torch.device, compiled: bool):
    """The run's batches. A CUDA step is compiled with static shapes (as nanochat does), so its batches are
    padded to one of 4 widths (quarters of max_seq_len): at most 4 graphs, never one per batch. On CPU the
    step is compiled with dynamic shapes (one graph for every width): padding every tiny-model batch to 256
    tokens cost 25% of an eager step (37.5 ms against 30.1 ms forward and backward), more than compiling
    saves."""
    from fractal_llm.gpt.data import iterate_batches
    pad_id = tokenizer.encode_special("<|assistant_end|>")
    quarters = sorted({math.ceil(config.max_seq_len * k / 4) for k in range(1, 5)})
    widths = tuple(quarters) if compiled and device.type == "cuda" else ()
    return iterate_batches(dataset, config.device_batch_size, config.seed, pad_id, device=device, widths=widths)


def training_model(config: TrainConfig, base: BaseModel, device: torch.device, batch) -> torch.nn.Module:
    """The process's compiled model of `base`, compiled on the first call and reused by every later run: the
    runs reload the base weights into the same parameters (fresh_model), which the compiled graph reads."""
    cached = _STEP_MODELS.get(id(base))
    if cached is None or cached[0] is not base:
        cached = _STEP_MODELS[id(base)] = (base, compile_model(config, base.model, device, batch))
    return cached[1]


def compile_model(config: TrainConfig, model: torch.nn.Module, device: torch.device, batch) -> torch.nn.Module:
    """torch.compile(model), tried at once on one forward and backward of `batch` (its gradients dropped, the
    weights unchanged). If that fails for any reason (most often: no C++ compiler, which inductor needs on
    CPU), one line says why and the runs train `model` eagerly; a fault of the model itself then raises in
    the eager step as it always did."""
    # The loss selects the supervised rows with nonzero() (nanochat/gpt.py, supervised_loss), a size that
    # depends on the data: captured, it is one symbolic size in one graph, not a graph break and a recompile
    # for every batch.
    import torch._dynamo
    torch._dynamo.config.capture_dynamic_output_shape_ops = True
    compiled = torch.compile(model, dynamic=device.type != "cuda")
    try:
        with autocast_context(config, device):
            compiled(batch.inputs, batch.targets).backward()
    except Exception as err:  # noqa: BLE001 -- any compile failure means eager; see the docstring
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(f"compile={config.compile!r}: torch.compile failed ({type(err).__name__}: {reason}); "
              "training eagerly", file=sys.stderr)
        return model
    finally:
        model.zero_grad(set_to_none=True)
    return compiled


# ----------------------------------------------------------------------------------------------
# Training


def train_gpt(config: TrainConfig, on_step: OnStep | None = None) -> RunResult:
    """Fine-tune one grid point. Raises on errors (bad checkpoint, OOM...); divergence is a verdict."""
    preflight(config)
    t_start = time.perf_counter()
    device = resolve_device(config)
    set_determinism(config)
    base = get_base_model(config.model_id, device)
    loaded = time.perf_counter()
    dataset = get_dataset(config, config.dataset_split, base.tokenizer)
    data_ready = time.perf_counter()

    model = fresh_model(base, torch.float64 if config.dtype == "float64" else torch.float32)
    groups = tuple(model.param_groups_by_name())  # the Dec-2025 model's three, or the 2026 model's six
    lrs = {f"{group}_lr": lr for group, lr in config.group_lrs().items() if group in groups}
    optimizers = model.setup_optimizers(**lrs, weight_decay=config.weight_decay,
                                        trainable=config.trainable_groups(groups))
    total_steps = planned_steps(config, dataset)
    samples = generate_samples(config, base, "before") if config.sample_before_after else []
    compiled = compile_wanted(config, device)
    batches = training_batches(config, dataset, base.tokenizer, device, compiled)
    first = next(batches)
    step_model = training_model(config, base, device, first) if compiled else model
    losses, history, step_samples = run_steps(config, model, step_model, optimizers, itertools.chain([first], batches),
                                              base, total_steps, device, on_step)
    samples += step_samples
    trained = time.perf_counter()
    if config.sample_before_after:
        samples += generate_samples(config, base, "after")

    summary = summarize_losses(losses, total_steps, config.trainable_window_steps,
                               config.trainable_loss_ratio_threshold)
    summary.update(tokens_seen=history["train/tokens_seen"][-1] if losses else 0,
                   runtime_s=trained - t_start, error=None)
    resolved = config.resolved().to_dict()
    resolved["repro"] = repro_metadata(device, {"load_s": loaded - t_start, "data_s": data_ready - loaded,
                                                "train_s": trained - data_ready, "base_load_s": base.load_s},
                                       base_model=base.identity, vocab_size=base.tokenizer.get_vocab_size(),
                                       dataset=dataset_identity(config.dataset_id, config.dataset_revision),
                                       training_step="eager" if step_model is model else "compiled")
    return RunResult(config=resolved, summary=summary, history=history, samples=samples or None)


def fresh_model(base: BaseModel, dtype: torch.dtype = torch.float32):
    """The working model with the base weights in `dtype`, every parameter trainable and no gradient left over:
    the previous run in this process may have frozen groups, trained in float64, or died mid-backward with
    gradients in place."""
    model = base.model
    for p in model.parameters():  # parameters only: buffers (rotary tables) keep their dtype
        if p.dtype != dtype:
            p.data = p.data.to(dtype)
    model.load_state_dict(base.state)
    model.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def run_steps(config, model, step_model, optimizers, batches, base, total_steps, device, on_step):
    """The optimizer loop -> (losses, history, samples). step_model (the compiled model, or model itself)
    computes the training loss; evaluation runs `model`, eagerly. Stops at the first non-finite loss
    (recorded: it is the divergence). Samples are taken every `sample_every` steps."""
    tokenizer = base.tokenizer
    groups = [g for opt in optimizers for g in opt.param_groups]
    history: dict[str, list[float]] = {"train/loss": [], "train/tokens_seen": []}
    history.update({f"lr/{g['name']}": [] for g in groups})
    losses: list[float] = []
    samples: list[dict] = []
    tokens_seen = 0
    for step in range(total_steps):
        set_lr(groups, lr_multiplier(step, total_steps, config))
        batch = next(batches)
        with autocast_context(config, device):
            loss = step_model(batch.inputs, batch.targets)
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
            optimizer_step(model, loss, optimizers)
    return losses, history, samples


@torch.no_grad()
def evaluate(config: TrainConfig, model, tokenizer, device, num_batches: int = 4) -> float:
    """Mean loss over a fixed set of validation batches (same batches at every evaluation)."""
    from fractal_llm.gpt.data import iterate_batches
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
    from fractal_llm.gpt.data import load_conversations
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


def preflight(config: TrainConfig) -> None:
    """gpt family: cheap checks of the inputs on disk, so a missing file fails before W&B or any model work."""
    from fractal_llm.gpt.data import check_dataset_id, check_has_validation
    check_dataset_id(config.dataset_id)
    wanted_by = [name for name, on in (("eval_every", config.eval_every > 0), ("sample_every", config.sample_every > 0),
                                       ("sample_before_after", config.sample_before_after)) if on]
    if wanted_by:
        check_has_validation(config.dataset_id, " and ".join(f"{name}={getattr(config, name)!r}" for name in wanted_by))
    base_model.check_model_id(config.model_id)


