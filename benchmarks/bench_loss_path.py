"""The loss path's cost per step: the full logits (before) against logits on the supervised rows only (after).

    PYTHONPATH=. python benchmarks/bench_loss_path.py                        # tiny base + d20 shape, CPU fp32
    PYTHONPATH=. python benchmarks/bench_loss_path.py --device cuda --dtype bf16 --steps 20
    PYTHONPATH=. python benchmarks/bench_loss_path.py --smoke-sweep [--repo DIR]   # the whole smoke sweep
    PYTHONPATH=. python benchmarks/bench_loss_path.py --quick                # proves it runs (CPU: about 3 min)

One training step = forward, loss, backward, every optimizer's step (training_step.optimizer_step).
- before: the loss as the model computed it until the supervised-rows change (nanochat/gpt.py
  `supervised_loss`): the softcapped fp32 logits of every position, `model(idx)`, then cross-entropy with
  ignore_index -1. Reimplemented here, so no old checkout is needed.
- after: `model(idx, targets)`, which runs the lm_head, softcap and log-softmax on the supervised rows only.
Cases:
- tiny: the tiny base (model_id "tiny", built on first use) on the smoke sweep's batches: shipped docqa
  train data, max_seq_len 256 (8 x ~222 tokens), seed 0, groups matrix + unembedding; one torch thread.
- d20: nanochat d20's shape (20 layers, n_embd 1280, 10 heads, vocab 65536), random weights, batch 8 x 1024
  on CUDA (8 x 256 on CPU, see --d20-seq) with SUPERVISED_FRACTION of the targets set (an answer span per
  row), groups matrix + unembedding. In fp32 its full logits alone are 8 x 1024 x 65536 x 4 B = 2 GiB, and
  the before path keeps several such tensors for the backward.
Each (case, path) runs in a fresh process, so its peak memory is its own: the CPU's peak RSS
(resource.getrusage ru_maxrss) with the RSS before the first step beside it, or
torch.cuda.max_memory_allocated on CUDA. Step time is the median of --steps steps after --warmup steps.
--smoke-sweep times `fractal-llm local sweeps/smoke.yaml` into a fresh --out with WANDB_MODE=disabled; give
--repo a checkout of the parent commit of the change to time the sweep before it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
D20 = dict(vocab_size=65536, n_layer=20, n_head=10, n_kv_head=10, n_embd=1280)
SUPERVISED_FRACTION = 0.041  # the smoke batches' share of positions with a target (the tiny case prints its own)
SMOKE = dict(max_seq_len=256, batch=8, seed=0, matrix_lr=0.02, unembedding_lr=0.004)
PATHS = ("before", "after")


def full_logits_loss(model, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss before the change: softcapped fp32 logits at every position, then cross-entropy."""
    logits = model(idx)  # (B, T, vocab_size)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def tiny_case(device: torch.device):
    """The tiny base and a stream of the smoke sweep's batches, as finetune.run_steps draws them."""
    from fractal_llm.gpt.base_model import get_base_model
    from fractal_llm.gpt.data import iterate_batches, load_tokenized
    base = get_base_model("tiny", device)
    dataset = load_tokenized("docqa", "", "train", base.tokenizer, SMOKE["max_seq_len"])
    pad_id = base.tokenizer.encode_special("<|assistant_end|>")
    batches = iterate_batches(dataset, SMOKE["batch"], SMOKE["seed"], pad_id, device=device)
    model = base.model.train()
    return model, (lambda: (lambda b: (b.inputs, b.targets))(next(batches)))


def d20_case(device: torch.device, seq: int, layers: int):
    """A d20-shaped model with random weights and fixed random batches of seq tokens, one answer span per row."""
    from nanochat.gpt import GPT, GPTConfig
    with torch.device("meta"):
        model = GPT(GPTConfig(sequence_len=seq, **{**D20, "n_layer": layers}))
    model.to_empty(device=device)
    torch.manual_seed(0)
    model.init_weights()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.02)  # init leaves it zero: give the loss a gradient everywhere
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, D20["vocab_size"], (SMOKE["batch"], seq + 1), generator=g)
    targets = torch.full((SMOKE["batch"], seq), -1, dtype=torch.long)
    span = max(1, round(SUPERVISED_FRACTION * seq))
    targets[:, seq - span:] = idx[:, seq + 1 - span:]  # the answer closes each row, as in SFT data
    inputs, targets = idx[:, :-1].to(device), targets.to(device)
    return model.train(), (lambda: (inputs, targets))


def child(case: str, path: str, args) -> dict:
    """One (case, path) in this process: time --steps training steps after --warmup, and the peak memory."""
    from fractal_llm.gpt.training_step import optimizer_step
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, next_batch = tiny_case(device) if case == "tiny" else d20_case(device, args.d20_seq, args.d20_layers)
    if path == "prepare":  # builds the tiny base and the tokenized cache, so no timed process pays for them
        return {}
    optimizers = model.setup_optimizers(matrix_lr=SMOKE["matrix_lr"], unembedding_lr=SMOKE["unembedding_lr"],
                                        trainable=("matrix", "unembedding"))
    use_bf16 = args.dtype == "bf16"
    rss_before_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, tokens, supervised = [], 0, 0
    for step in range(args.warmup + args.steps):
        inputs, targets = next_batch()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = full_logits_loss(model, inputs, targets) if path == "before" else model(inputs, targets)
        optimizer_step(model, loss, optimizers)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
            tokens += inputs.numel()
            supervised += int((targets != -1).sum())
    step_s = statistics.median(times)
    peak_mib = (torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"case": case, "path": path, "step_ms": 1000 * step_s, "tokens_per_s": tokens / sum(times),
            "peak_mib": peak_mib, "rss_before_mib": rss_before_mib if device.type == "cpu" else None,
            "tokens_per_step": tokens // len(times), "supervised_fraction": supervised / tokens,
            "loss": float(loss.item()), "steps": len(times)}


def run_child(case: str, path: str, args) -> dict:
    argv = [sys.executable, __file__, "--child", case, path, "--device", args.device, "--dtype", args.dtype,
            "--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--d20-seq", str(args.d20_seq), "--d20-layers", str(args.d20_layers)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{case}/{path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def model_table(args) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(width=max(Console().width, 150))
    title = (f"one training step (forward, loss, backward, optimizer step), {args.device} {args.dtype}, "
             f"{args.threads} thread(s), median of {args.steps} after {args.warmup} warm-up")
    table = Table(title=title)
    for column in ("case", "tokens/step", "supervised", "path", "step ms", "after/before", "tokens/s",
                   "peak MiB", "RSS before steps MiB", "loss"):
        table.add_column(column, justify="right")
    for case in args.cases:
        if case == "tiny":
            run_child(case, "prepare", args)
        rows = {}
        for path in PATHS:
            rows[path] = row = run_child(case, path, args)
            ratio = row["step_ms"] / rows["before"]["step_ms"]
            table.add_row(case, str(row["tokens_per_step"]), f"{row['supervised_fraction']:.1%}", path,
                          f"{row['step_ms']:.1f}", f"{ratio:.2f}", f"{row['tokens_per_s']:,.0f}",
                          f"{row['peak_mib']:,.0f}",
                          "" if row["rss_before_mib"] is None else f"{row['rss_before_mib']:,.0f}",
                          f"{row['loss']:.5f}")
    console.print(table)


def smoke_sweep(args) -> None:
    """Wall time of `fractal-llm local sweeps/smoke.yaml` in the checkout --repo, into a fresh --out."""
    repo = Path(args.repo).resolve()
    with tempfile.TemporaryDirectory() as out:
        argv = [sys.executable, "-m", "fractal_llm.cli", "local", str(repo / "sweeps" / "smoke.yaml"),
                "--out", out]
        if args.limit:
            argv += ["--limit", str(args.limit)]
        if args.workers:
            argv += ["--workers", str(args.workers)]
        env = {**os.environ, "PYTHONPATH": str(repo), "WANDB_MODE": "disabled"}
        from fractal_llm.gpt.make_base import ensure_tiny_base
        ensure_tiny_base()  # a one-off build, not part of the sweep's cost (same recipe in both checkouts)
        t0 = time.perf_counter()
        proc = subprocess.run(argv, env=env, cwd=repo, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"the smoke sweep failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        records = len(list(Path(out).glob("*.json")))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
    print(f"smoke sweep at {commit.stdout.strip() or repo}: {records} points in {wall:.1f} s "
          f"({wall / max(records, 1):.2f} s per point)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="tiny,d20", help="comma-separated: tiny, d20")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast, as on GPUs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, help="timed steps (default: 20 tiny; on CPU 1 for d20)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 3; on CPU 0 for d20)")
    # CPU fp32 at 8 x 1024 ran out of this machine's 24 GiB; 8 x 256 peaks at 9.1 GiB (before), 7.7 GiB (after)
    parser.add_argument("--d20-seq", type=int, help="tokens per row of the d20 case (default: 1024 on cuda, 256 on cpu)")
    parser.add_argument("--d20-layers", type=int, default=20, help="layers of the d20 case (d20: 20)")
    parser.add_argument("--quick", action="store_true",
                        help="prove it runs: 2 steps, 1 warm-up, a 2-layer d20 with 64-token rows")
    parser.add_argument("--smoke-sweep", action="store_true", help="time the whole smoke sweep instead")
    parser.add_argument("--repo", default=str(ROOT), help="the checkout whose code the smoke sweep runs")
    parser.add_argument("--limit", type=int, help="smoke sweep: at most this many points")
    parser.add_argument("--workers", type=int, help="smoke sweep: runner workers (default: the runner's)")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return 0
    if args.smoke_sweep:
        smoke_sweep(args)
        return 0
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in args.cases if c not in ("tiny", "d20")]
    if unknown:
        parser.error(f"--cases: unknown {unknown}; allowed tiny, d20")
    if args.d20_seq is None:
        args.d20_seq = 1024 if args.device == "cuda" else 256
    if args.quick:
        args.steps, args.warmup = args.steps or 2, 1 if args.warmup is None else args.warmup
        args.d20_seq, args.d20_layers = 64, 2
    slow = args.device == "cpu" and "d20" in args.cases
    for case in args.cases:  # a CPU d20 step takes minutes: one, unless asked
        case_args = argparse.Namespace(**vars(args))
        case_args.steps = args.steps or (1 if slow and case == "d20" else 20)
        case_args.warmup = args.warmup if args.warmup is not None else (0 if slow and case == "d20" else 3)
        case_args.cases = [case]
        model_table(case_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
