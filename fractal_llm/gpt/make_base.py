"""The tiny base models of the embedded default: a small BPE tokenizer and a ~0.23M-parameter GPT,
pre-trained on document text we generate, saved in nanochat's checkpoint format.

Two architectures, one recipe and one build (TINY_MODELS, the model_id that names each):
- "tiny": the Dec-2025 nanochat GPT (nanochat/gpt.py);
- "tiny-2026": the 2026 nanochat GPT (nanochat/gpt2026.py): sliding windows (pattern TINY_2026_WINDOWS),
  value embeddings, the per-layer lambdas, smear and backout; all six of its groups pre-train.
And one more stage, the one nanochat fine-tunes from (base -> mid-training -> SFT):
- "tiny-mid": "tiny", then mid-trained (MidRecipe) on generated chat conversations rendered with the special
  tokens, every token a target as in nanochat's midtraining. They hold the SFT data's documents and layout
  but ask generic questions (docqa.midtrain_conversations), so the stage teaches the format and leaves the
  task to SFT. SFT on docqa then starts from a model that knows the format, below the uniform guess
  ln(vocab size), where "tiny" starts above it (docs/design.md).

`fractal-llm make-base [--model tiny-2026]` builds one; the train function builds it on first use of its
model_id. Deterministic for a recipe; the cache directory is keyed on the whole recipe and the architecture,
so a changed recipe never reuses an old build. Several processes asking at once build it once
(paths.build_once). FRACTAL_LLM_TINY_RECIPE (JSON of TinyRecipe fields) changes the recipe of both, e.g. a
much shorter one for tests; FRACTAL_LLM_MID_RECIPE (JSON of MidRecipe fields) does the same for the
mid stage. The build prints its progress (a plain line every few seconds when stderr is
not a terminal): pre-training the default recipe takes about 100 s for tiny on 2 idle CPU cores, and
tiny-2026 took 0.7 s a step (about 5 min) on a busy 2-core machine. tiny-mid's mid stage (200 steps) took
57 s on one thread of a busy 2-core machine (load 5), after the tiny base it builds first if needed.
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
MID_VERSION = 1  # the same for the mid stage's build code
TINY_MODELS = {"tiny": "Dec-2025", "tiny-2026": "2026", "tiny-mid": "Dec-2025"}  # model_id -> nanochat era
MID_TRAINED = {"tiny-mid": "tiny"}  # a mid-trained model_id -> the base model_id it continues from
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


@dataclass(frozen=True)
class MidRecipe:
    """The mid stage: next-token training of a built base on a packed stream of rendered conversations, with
    the base's optimizer, learning rates and linear decay (pretrain)."""
    conversations: int = 3000  # docqa.midtrain_conversations in the stream (534k tokens; 200 steps see 819k)
    # 200 steps: SFT on docqa from it starts at 5.82 (ln 1024 = 6.93) and its good 20-step runs end near 3.
    # Mid-training on docqa's own field questions instead taught the task too: SFT started at 1.2-1.7 and
    # 20 steps beat the first batch's loss at none of 12 learning rates tried, 1e-5 to 10 (no border).
    steps: int = 200
    batch_size: int = 16
    matrix_lr: float = 0.02
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.008
    seed: int = 0


def recipe_from_env(recipe_class, variable: str):
    """recipe_class(), with the fields the environment variable (a JSON object) sets."""
    text = os.environ.get(variable)
    if not text:
        return recipe_class()
    changes = json.loads(text)
    known = {f.name for f in fields(recipe_class)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"{variable}: unknown fields {unknown}; allowed: {sorted(known)}")
    return replace(recipe_class(), **changes)


def default_recipe() -> TinyRecipe:
    return recipe_from_env(TinyRecipe, "FRACTAL_LLM_TINY_RECIPE")


def default_mid_recipe() -> MidRecipe:
    return recipe_from_env(MidRecipe, "FRACTAL_LLM_MID_RECIPE")


def check_model_id(model_id: str) -> str:
    if model_id not in TINY_MODELS:
        raise ValueError(f"model_id={model_id!r}: not a tiny base; allowed {sorted(TINY_MODELS)}")
    return model_id


def tiny_base_dir(recipe: TinyRecipe | None = None, model_id: str = "tiny", mid: MidRecipe | None = None) -> Path:
    """The cache directory of model_id's build; a mid-trained one is keyed on its base's recipe too."""
    recipe = recipe or default_recipe()
    keyed = [TINY_VERSION, asdict(recipe)]
    if TINY_MODELS[check_model_id(model_id)] == "2026":  # the Dec-2025 key is the one builds had before
        keyed.append({"era": "2026", "window_pattern": TINY_2026_WINDOWS})
    if model_id in MID_TRAINED:
        keyed.append({"mid_version": MID_VERSION, "mid": asdict(mid or default_mid_recipe())})
    key = hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    return paths.models_dir() / f"{model_id}-v{TINY_VERSION}-seed{recipe.seed}-{key}"


def ensure_tiny_base(recipe: TinyRecipe | None = None, model_id: str = "tiny", mid: MidRecipe | None = None) -> Path:
    """Return the tiny base directory of model_id, building it first if no complete build exists (a
    mid-trained one builds its base first, if that is not built either)."""
    recipe, mid = recipe or default_recipe(), mid or default_mid_recipe()
    out = tiny_base_dir(recipe, model_id, mid)

    def build() -> None:
        from rich.console import Console
        console = Console(stderr=True)
        console.print(f"building the {model_id} base model on first use (minutes on a CPU) "
                      f"into {out}", soft_wrap=True, highlight=False)
        if model_id in MID_TRAINED:
            build_mid_base(out, ensure_tiny_base(recipe, MID_TRAINED[model_id]), mid, model_id, console)
        else:
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


def conversation_stream(tokenizer, mid: MidRecipe) -> torch.Tensor:
    """The mid stage's stream: the conversations rendered as SFT renders them (bos, special tokens), packed
    one after another. Every token is a target (nanochat's midtraining ignores the assistant mask)."""
    from fractal_llm.gpt.docqa import midtrain_conversations
    ids: list[int] = []
    for conversation in midtrain_conversations(mid.conversations, seed=mid.seed):
        ids.extend(tokenizer.render_conversation(conversation, max_tokens=1 << 20)[0])
    return torch.tensor(ids, dtype=torch.long)


def pretrain(model, stream: torch.Tensor, recipe: TinyRecipe | MidRecipe, on_step=None) -> list[float]:
    """Plain next-token training on random windows of a token stream (the base's documents, or the mid
    stage's conversations), with the fine-tuning loop's own optimizer step (training_step.py). Every group
    the model has trains."""
    generator = torch.Generator().manual_seed(recipe.seed)
    optimizers = model.setup_optimizers(unembedding_lr=recipe.unembedding_lr, embedding_lr=recipe.embedding_lr,
                                        matrix_lr=recipe.matrix_lr, weight_decay=0.0)
    groups = [g for opt in optimizers for g in opt.param_groups]
    T = model.config.sequence_len
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


def build_mid_base(out: Path, base_dir: Path, mid: MidRecipe = MidRecipe(), model_id: str = "tiny-mid",
                   console=None) -> dict:
    """Continue the built base in base_dir with the mid stage and save the result (the base's tokenizer,
    the mid-trained weights) into out."""
    from nanochat.checkpoint import load_model, save_checkpoint

    t0 = time.perf_counter()
    torch.manual_seed(mid.seed)
    model, tokenizer, base_meta = load_model(base_dir)
    model.train()
    stream = conversation_stream(tokenizer, mid)
    t_data = time.perf_counter()
    label = f"mid-training {model_id}"
    losses = pretrain(model, stream, mid) if console is None else _pretrain_with_progress(
        model, stream, mid, label, console)
    stats = {"mid_recipe": asdict(mid), "model_id": model_id, "base": base_dir.name,
             "num_params": model.num_params(), "tokens_in_stream": len(stream), "stage": "mid-training",
             "loss_first": losses[0], "loss_last": sum(losses[-20:]) / len(losses[-20:]),
             "data_s": t_data - t0, "midtrain_s": time.perf_counter() - t_data}
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(out / "tokenizer")
    meta = {"model_config": asdict(model.config), "step": mid.steps, "tiny_base": base_meta["tiny_base"],
            "tiny_mid": stats}
    save_checkpoint(out / "checkpoints", mid.steps, model.state_dict(), meta)
    (out / "stats.json").write_text(json.dumps(stats, indent=2))
    return stats


def _pretrain_with_progress(model, stream, recipe: TinyRecipe | MidRecipe, label: str, console) -> list[float]:
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
                        help="tiny (Dec-2025 nanochat), tiny-2026 (2026 nanochat) or tiny-mid (tiny, then "
                             "mid-trained on chat conversations: the stage SFT starts from)")
    parser.add_argument("--seed", type=int, default=0, help="the seed of every stage's recipe")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists "
                                                             "(tiny-mid: the mid stage, not its base)")
    args = parser.parse_args(argv)
    recipe, mid = replace(default_recipe(), seed=args.seed), replace(default_mid_recipe(), seed=args.seed)
    out = tiny_base_dir(recipe, args.model, mid)
    console = Console()
    if paths.is_built(out) and not args.force:
        console.print(f"{args.model} base already built: {out}")
        return 0
    if args.model in MID_TRAINED:
        base_dir = ensure_tiny_base(recipe, MID_TRAINED[args.model])
        build = lambda: build_mid_base(out, base_dir, mid, args.model, console)  # noqa: E731
    else:
        build = lambda: build_tiny_base(out, recipe, args.model, console)  # noqa: E731
    paths.build_once(out, build, force=args.force)
    stats = json.loads((out / "stats.json").read_text())
    console.print(f"{args.model} base: {stats['num_params']:,} parameters, {stats.get('stage', 'pre-training')} "
                  f"loss {stats['loss_first']:.3f} -> {stats['loss_last']:.3f}, built in "
                  f"{sum(v for k, v in stats.items() if k.endswith('_s')):.1f}s")
    console.print(f"saved to {out}")
    return 0
