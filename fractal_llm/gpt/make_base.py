"""The tiny base models of the embedded default: a small BPE tokenizer and a ~0.23M-parameter GPT,
pre-trained on document text we generate, saved in nanochat's checkpoint format.

Two architectures, one recipe and one build (TINY_MODELS, the model_id that names each):
- "tiny": the Dec-2025 nanochat GPT (nanochat/gpt.py);
- "tiny-2026": the 2026 nanochat GPT (nanochat/gpt2026.py): sliding windows (pattern TINY_2026_WINDOWS),
  value embeddings, the per-layer lambdas, smear and backout; all six of its groups pre-train.

`fractal-llm make-base [--model tiny-2026]` builds one; the train function builds it on first use of its
model_id. Deterministic for a recipe; the cache directory is keyed on the whole recipe and the architecture,
so a changed recipe never reuses an old build. Several processes asking at once build it once
(paths.build_once). FRACTAL_LLM_TINY_RECIPE (JSON of TinyRecipe fields) changes the recipe of both, e.g. a
much shorter one for tests. The build prints its progress (a plain line every few seconds when stderr is
not a terminal): pre-training the default recipe takes about 100 s for tiny on 2 idle CPU cores, and
tiny-2026 took 0.7 s a step (about 5 min) on a busy 2-core machine.
"""

import argparse
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch

from fractal_llm import paths
from fractal_llm.progress import LineClock
from fractal_llm.gpt.training_step import optimizer_step, set_lr

TINY_VERSION = 3  # bump when the build code changes in a way the recipe does not show
TINY_MODELS = {"tiny": "Dec-2025", "tiny-2026": "2026"}  # model_id -> nanochat era (nanochat/checkpoint.py)
TINY_2026_WINDOWS = "SL"  # a short-window layer, then full context (the last layer is always full)


@dataclass(frozen=True)
class TinyRecipe:
    vocab_size: int = 1024
    n_layer: int = 2
    n_head: int = 2
    n_kv_head: int = 2
    n_embd: int = 64
    sequence_len: int = 256
    tokenizer_docs: int = 2000  # documents the tokenizer is trained on
    pretrain_docs: int = 6000  # documents in the pre-training stream
    steps: int = 400
    batch_size: int = 16
    matrix_lr: float = 0.02
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.008
    seed: int = 0


def default_recipe() -> TinyRecipe:
    """TinyRecipe(), with the fields FRACTAL_LLM_TINY_RECIPE (a JSON object) sets."""
    text = os.environ.get("FRACTAL_LLM_TINY_RECIPE")
    if not text:
        return TinyRecipe()
    changes = json.loads(text)
    known = {f.name for f in fields(TinyRecipe)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"FRACTAL_LLM_TINY_RECIPE: unknown fields {unknown}; allowed: {sorted(known)}")
    return replace(TinyRecipe(), **changes)


def check_model_id(model_id: str) -> str:
    if model_id not in TINY_MODELS:
        raise ValueError(f"model_id={model_id!r}: not a tiny base; allowed {sorted(TINY_MODELS)}")
    return model_id


def tiny_base_dir(recipe: TinyRecipe | None = None, model_id: str = "tiny") -> Path:
    recipe = recipe or default_recipe()
    keyed = [TINY_VERSION, asdict(recipe)]
    if TINY_MODELS[check_model_id(model_id)] == "2026":  # the Dec-2025 key is the one builds had before
        keyed.append({"era": "2026", "window_pattern": TINY_2026_WINDOWS})
    key = hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    return paths.models_dir() / f"{model_id}-v{TINY_VERSION}-seed{recipe.seed}-{key}"


def ensure_tiny_base(recipe: TinyRecipe | None = None, model_id: str = "tiny") -> Path:
    """Return the tiny base directory of model_id, building it first if no complete build exists."""
    recipe = recipe or default_recipe()
    out = tiny_base_dir(recipe, model_id)

    def build() -> None:
        from rich.console import Console
        console = Console(stderr=True)
        console.print(f"building the {model_id} base model on first use (minutes on a CPU) "
                      f"into {out}", soft_wrap=True, highlight=False)
        build_tiny_base(out, recipe, model_id, console)

    def waiting() -> None:  # a second runner would otherwise print nothing for the minutes the build takes
        from rich.console import Console
        Console(stderr=True).print(f"waiting for the {model_id} base build that another process is running "
                                   f"(minutes on a CPU) into {out}", soft_wrap=True, highlight=False)

    paths.build_once(out, build, waiting=waiting)
    return out


def token_stream(tokenizer, recipe: TinyRecipe) -> torch.Tensor:
    from fractal_llm.gpt.docqa import document_texts
    bos = tokenizer.get_bos_token_id()
    texts = document_texts(recipe.pretrain_docs, seed=recipe.seed + 1)
    ids: list[int] = []
    for row in tokenizer.encode(texts, prepend=bos):
        ids.extend(row)
    return torch.tensor(ids, dtype=torch.long)


def pretrain(model, stream: torch.Tensor, recipe: TinyRecipe, on_step=None) -> list[float]:
    """Plain next-token pre-training on random windows of the document stream, with the fine-tuning loop's
    own optimizer step (training_step.py). Every group the model has trains."""
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizers = model.setup_optimizers(unembedding_lr=recipe.unembedding_lr, embedding_lr=recipe.embedding_lr,
                                        matrix_lr=recipe.matrix_lr, weight_decay=0.0)
    groups = [g for opt in optimizers for g in opt.param_groups]
    T = recipe.sequence_len
    losses = []
    for step in range(recipe.steps):
        set_lr(groups, 1.0 - step / recipe.steps)  # linear decay to zero, as nanochat's base training ends
        starts = torch.randint(0, len(stream) - T - 1, (recipe.batch_size,), generator=generator)
        window = torch.stack([stream[s: s + T + 1] for s in starts.tolist()])
        loss = model(window[:, :-1], window[:, 1:])
        optimizer_step(model, loss, optimizers)
        losses.append(loss.item())
        if on_step is not None:
            on_step(step, losses[-1])
    return losses


def new_model(recipe: TinyRecipe, vocab_size: int, model_id: str):
    """A freshly initialised model of model_id's architecture, shaped by the recipe."""
    from nanochat.checkpoint import build_model
    from nanochat.gpt import GPTConfig
    from nanochat.gpt2026 import GPT2026Config
    shape = dict(sequence_len=recipe.sequence_len, vocab_size=vocab_size, n_layer=recipe.n_layer,
                 n_head=recipe.n_head, n_kv_head=recipe.n_kv_head, n_embd=recipe.n_embd)
    if TINY_MODELS[check_model_id(model_id)] == "2026":
        config = GPT2026Config(**shape, window_pattern=TINY_2026_WINDOWS)
    else:
        config = GPTConfig(**shape)
    model = build_model(config)
    model.init_weights()
    return model


def build_tiny_base(out: Path, recipe: TinyRecipe = TinyRecipe(), model_id: str = "tiny",
                    console=None) -> dict:
    """Train the tokenizer, pre-train model_id's architecture and save both into out. With a rich console,
    the progress goes there (a live bar on a terminal, else a plain line every progress.PLAIN_LINE_S)."""
    from fractal_llm.gpt.docqa import document_texts
    from nanochat.checkpoint import save_checkpoint
    from nanochat.tokenizer import Tokenizer

    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)
    if console is not None:
        console.print(f"{model_id}: training the tokenizer ({recipe.vocab_size} tokens, "
                      f"{recipe.tokenizer_docs} documents)", highlight=False, soft_wrap=True)
    tokenizer = Tokenizer.train_from_iterator(document_texts(recipe.tokenizer_docs, seed=recipe.seed),
                                              recipe.vocab_size)
    stream = token_stream(tokenizer, recipe)
    model = new_model(recipe, tokenizer.get_vocab_size(), model_id)
    t_data = time.perf_counter()
    if console is None:
        losses = pretrain(model, stream, recipe)
    else:
        losses = _pretrain_with_progress(model, stream, recipe, f"pre-training {model_id}", console)
    stats = {"recipe": asdict(recipe), "model_id": model_id, "num_params": model.num_params(),
             "tokens_in_stream": len(stream), "loss_first": losses[0],
             "loss_last": sum(losses[-20:]) / len(losses[-20:]),
             "tokenizer_and_data_s": t_data - t0, "pretrain_s": time.perf_counter() - t_data}
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / "tokenizer")
    meta = {"model_config": asdict(model.config), "step": recipe.steps, "tiny_base": stats}
    save_checkpoint(out / "checkpoints", recipe.steps, model.state_dict(), meta)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def _pretrain_with_progress(model, stream, recipe: TinyRecipe, label: str, console) -> list[float]:
    """A rich bar on a terminal; otherwise (nohup, a runner's log, a pipe) a plain line at the first step,
    every progress.PLAIN_LINE_S seconds and at the last step."""
    if console.is_terminal:
        from rich.progress import Progress
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task(label, total=recipe.steps)
            return pretrain(model, stream, recipe, on_step=lambda step, loss: bar.update(
                task, advance=1, description=f"{label} (loss {loss:.3f})"))
    t0, clock = time.monotonic(), LineClock()

    def line(step: int, loss: float) -> None:
        now = time.monotonic()
        if clock.due() or step == recipe.steps - 1:
            console.print(f"{label}: step {step + 1}/{recipe.steps}  loss {loss:.3f}  {now - t0:.0f}s",
                          highlight=False, soft_wrap=True)

    return pretrain(model, stream, recipe, on_step=line)


def main(argv: list[str]) -> int:
    from rich.console import Console
    parser = argparse.ArgumentParser(prog="fractal-llm make-base",
                                     description="Build a tiny base model (tokenizer + GPT) of the embedded default.")
    parser.add_argument("--model", default="tiny", choices=sorted(TINY_MODELS),
                        help="the architecture: tiny (Dec-2025 nanochat) or tiny-2026 (2026 nanochat)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    args = parser.parse_args(argv)
    recipe = replace(default_recipe(), seed=args.seed)
    out = tiny_base_dir(recipe, args.model)
    console = Console()
    if paths.is_built(out) and not args.force:
        console.print(f"{args.model} base already built: {out}")
        return 0
    paths.build_once(out, lambda: build_tiny_base(out, recipe, args.model, console), force=args.force)
    stats = json.loads((out / "stats.json").read_text())
    console.print(f"{args.model} base: {stats['num_params']:,} parameters, pre-training loss "
                  f"{stats['loss_first']:.3f} -> {stats['loss_last']:.3f}, built in "
                  f"{stats['tokenizer_and_data_s'] + stats['pretrain_s']:.1f}s")
    console.print(f"saved to {out}")
    return 0
