"""One optimizer step of a d20-sized nanochat model on CPU: the 2026 model against the Dec-2025 one.

    PYTHONPATH=. python benchmarks/bench_2026.py [--seq 512] [--threads 2]

Same shape for both (n_layer 20, n_embd 1280, 10 heads, vocab 65536, batch 1), the trainer's default
trainable groups (matrix, unembedding), random weights. Times forward+backward and optimizer.step separately;
one step each, since a d20 step takes minutes on a small CPU.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch
from rich.console import Console
from rich.table import Table

from nanochat.gpt import GPT, GPTConfig
from nanochat.gpt2026 import GPT2026, GPT2026Config

SHAPE = dict(vocab_size=65536, n_layer=20, n_head=10, n_kv_head=10, n_embd=1280)


def one_step(model, seq: int, trainable: tuple[str, ...]) -> tuple[float, float]:
    optimizers = model.setup_optimizers(trainable=trainable)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, SHAPE["vocab_size"], (1, seq + 1), generator=g)
    t0 = time.perf_counter()
    model(idx[:, :-1], idx[:, 1:]).backward()
    t1 = time.perf_counter()
    for opt in optimizers:
        opt.step()
    return t1 - t0, time.perf_counter() - t1


def build(era: str, seq: int):
    if era == "2026":
        model = GPT2026(GPT2026Config(sequence_len=seq, window_pattern="SSSL", **SHAPE))
    else:
        model = GPT(GPTConfig(sequence_len=seq, **SHAPE))
    model.init_weights()
    return model.train()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trainable", default="matrix,unembedding")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    trainable = tuple(args.trainable.split(","))
    table = Table(title=f"one optimizer step on CPU, d20 shape, batch 1 x {args.seq} tokens, "
                        f"{args.threads} threads, trainable {args.trainable}")
    for column in ("model", "params", "forward+backward s", "optimizer.step s", "step s"):
        table.add_column(column, justify="right")
    console = Console()
    for era in ("Dec-2025", "2026"):
        model = build(era, args.seq)
        fwd_bwd, opt = one_step(model, args.seq, trainable)
        console.print(f"{era}: forward+backward {fwd_bwd:.1f} s, optimizer.step {opt:.1f} s")  # minutes apart
        table.add_row(era, f"{model.num_params() / 1e6:.0f}M", f"{fwd_bwd:.1f}", f"{opt:.1f}", f"{fwd_bwd + opt:.1f}")
        del model
        gc.collect()
    console.print(table)


if __name__ == "__main__":
    main()
