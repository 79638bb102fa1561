"""The tiny base model of the embedded default: a small BPE tokenizer and a ~0.23M-parameter GPT,
pre-trained on document text we generate, saved in nanochat's checkpoint format.

`fractal-llm make-base` builds it; the train function builds it on first use of model_id "tiny".
Deterministic for a recipe; the cache directory is keyed on the whole recipe, so a changed recipe never
reuses an old build. Several processes asking at once build it once (paths.build_once).
FRACTAL_LLM_TINY_RECIPE (JSON of TinyRecipe fields) changes the recipe, e.g. a much shorter one for tests.
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

TINY_VERSION = 3  # bump when the build code changes in a way the recipe does not show


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


def tiny_base_dir(recipe: TinyRecipe | None = None) -> Path:
    recipe = recipe or default_recipe()
    key = hashlib.sha1(json.dumps([TINY_VERSION, asdict(recipe)], sort_keys=True).encode()).hexdigest()[:12]
    return paths.models_dir() / f"tiny-v{TINY_VERSION}-seed{recipe.seed}-{key}"


def ensure_tiny_base(recipe: TinyRecipe | None = None) -> Path:
    """Return the tiny base directory, building it first if no complete build exists."""
    recipe = recipe or default_recipe()
    out = tiny_base_dir(recipe)

    def build() -> None:
        from rich.console import Console
        Console(stderr=True).print(f"building the tiny base model on first use (about a minute on 2 CPU "
                                   f"cores) into {out}", soft_wrap=True, highlight=False)
        build_tiny_base(out, recipe)

    paths.build_once(out, build)
    return out


def token_stream(tokenizer, recipe: TinyRecipe) -> torch.Tensor:
    from fractal_llm.docqa import document_texts
    bos = tokenizer.get_bos_token_id()
    texts = document_texts(recipe.pretrain_docs, seed=recipe.seed + 1)
    ids: list[int] = []
    for row in tokenizer.encode(texts, prepend=bos):
        ids.extend(row)
    return torch.tensor(ids, dtype=torch.long)


def pretrain(model, stream: torch.Tensor, recipe: TinyRecipe, on_step=None) -> list[float]:
    """Plain next-token pre-training on random windows of the document stream (the fine-tuning loop's
    own LR and optimizer steps, finetune.set_lr and finetune.optimizer_step)."""
    from fractal_llm.finetune import optimizer_step, set_lr
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


def build_tiny_base(out: Path, recipe: TinyRecipe = TinyRecipe(), progress: bool = False) -> dict:
    from fractal_llm.docqa import document_texts
    from nanochat.checkpoint import save_checkpoint
    from nanochat.gpt import GPT, GPTConfig
    from nanochat.tokenizer import Tokenizer

    t0 = time.perf_counter()
    torch.manual_seed(recipe.seed)
    tokenizer = Tokenizer.train_from_iterator(document_texts(recipe.tokenizer_docs, seed=recipe.seed),
                                              recipe.vocab_size)
    stream = token_stream(tokenizer, recipe)
    config = GPTConfig(sequence_len=recipe.sequence_len, vocab_size=tokenizer.get_vocab_size(),
                       n_layer=recipe.n_layer, n_head=recipe.n_head, n_kv_head=recipe.n_kv_head,
                       n_embd=recipe.n_embd)
    model = GPT(config)
    model.init_weights()
    t_data = time.perf_counter()
    losses = _pretrain_with_progress(model, stream, recipe) if progress else pretrain(model, stream, recipe)
    stats = {"recipe": asdict(recipe), "num_params": model.num_params(), "tokens_in_stream": len(stream),
             "loss_first": losses[0], "loss_last": sum(losses[-20:]) / len(losses[-20:]),
             "tokenizer_and_data_s": t_data - t0, "pretrain_s": time.perf_counter() - t_data}
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / "tokenizer")
    meta = {"model_config": asdict(config), "step": recipe.steps, "tiny_base": stats}
    save_checkpoint(out / "checkpoints", recipe.steps, model.state_dict(), meta)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def _pretrain_with_progress(model, stream, recipe) -> list[float]:
    from rich.progress import Progress
    with Progress() as bar:
        task = bar.add_task("pre-training tiny base", total=recipe.steps)
        return pretrain(model, stream, recipe,
                        on_step=lambda step, loss: bar.update(task, advance=1, description=f"pre-training "
                                                              f"tiny base (loss {loss:.3f})"))


def main(argv: list[str]) -> int:
    from rich.console import Console
    parser = argparse.ArgumentParser(prog="fractal-llm make-base",
                                     description="Build the tiny base model (tokenizer + GPT) of the embedded default.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    args = parser.parse_args(argv)
    recipe = replace(default_recipe(), seed=args.seed)
    out = tiny_base_dir(recipe)
    console = Console()
    if paths.is_built(out) and not args.force:
        console.print(f"tiny base already built: {out}")
        return 0
    paths.build_once(out, lambda: build_tiny_base(out, recipe, progress=True), force=args.force)
    stats = json.loads((out / "stats.json").read_text())
    console.print(f"tiny base: {stats['num_params']:,} parameters, pre-training loss "
                  f"{stats['loss_first']:.3f} -> {stats['loss_last']:.3f}, built in "
                  f"{stats['tokenizer_and_data_s'] + stats['pretrain_s']:.1f}s")
    console.print(f"saved to {out}")
    return 0
