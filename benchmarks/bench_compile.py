"""The compiled training step against eager (issue 27): step time, compile time cold and warm, whole points,
and a whole sweep.

    PYTHONPATH=. python benchmarks/bench_compile.py                          # tiny step, tiny points, d20 step: CPU fp32
    PYTHONPATH=. python benchmarks/bench_compile.py --device cuda --dtype bf16 --cases d20 --steps 20
    PYTHONPATH=. python benchmarks/bench_compile.py --sweep [--workers 2]    # sweeps/smoke.yaml both ways (long)
    PYTHONPATH=. python benchmarks/bench_compile.py --quick                  # proves it runs (small shapes)
    PYTHONPATH=. python benchmarks/bench_compile.py --flips EAGER_DIR COMPILED_DIR  # verdicts that differ

One training step = forward, loss, backward and every optimizer's step, Muon included
(training_step.optimizer_step). "compiled" is finetune.compile_model, the code the runs use (dynamic shapes
on CPU, static on CUDA, where the tiny batches are padded to quarter widths as finetune.training_batches
does). Every (case, mode) runs in a fresh process with its own inductor cache directory:
- cold: an empty cache: the first step pays the whole compile;
- warm: the cache the cold process filled: what a second worker, or a later process on this host, pays.
"compile s" is the first step's wall time less the median step's. Cases:
- tiny: the tiny base on the smoke sweep's batches (bench_loss_path.SMOKE, as finetune draws them);
- d20: nanochat d20's shape with random weights (bench_loss_path.d20_case: 8 x 256 tokens on CPU, 8 x 1024
  on CUDA), MFU on CUDA by nanochat's count of FLOPs per token against the card's bf16 peak;
- point: --points whole tiny points of the smoke setup (20 steps, train_gpt) in one process: the first
  point (which compiles) and the median of the others, i.e. what a runner worker pays per point.
--sweep times `fractal-llm local sweeps/smoke.yaml` eager, then compiled with a cold and a warm cache, each
into a fresh --out (WANDB_MODE=disabled).
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
from collections import Counter
from pathlib import Path

import torch

from benchmarks.bench_loss_path import D20, SMOKE, d20_case

ROOT = Path(__file__).resolve().parents[1]
MODES = ("eager", "cold", "warm")
BF16_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}  # dense bf16, by the card's name


def smoke_config(**changes):
    from fractal_llm.config import TrainConfig
    values = dict(model_id="tiny", dataset_id="docqa", max_seq_len=SMOKE["max_seq_len"],
                  device_batch_size=SMOKE["batch"], num_iterations=20, trainable_window_steps=5,
                  matrix_lr=SMOKE["matrix_lr"], unembedding_lr=SMOKE["unembedding_lr"], seed=SMOKE["seed"])
    return TrainConfig(**{**values, **changes})


def tiny_case(device: torch.device, compiled: bool):
    """The tiny base and the smoke sweep's batches, drawn (and padded on CUDA) as a run draws them."""
    from fractal_llm.gpt import finetune
    from fractal_llm.gpt.base_model import get_base_model
    config = smoke_config(device=device.type)
    base = get_base_model("tiny", device)
    dataset = finetune.get_dataset(config, "train", base.tokenizer)
    batches = finetune.training_batches(config, dataset, base.tokenizer, device, compiled)
    return base.model.train(), (lambda: (lambda b: (b.inputs, b.targets))(next(batches)))


def flops_per_token(model, seq: int) -> float:
    """nanochat's count: 6 x the non-embedding parameters, plus attention's 12 x layers x width x seq."""
    cfg = model.config
    params = sum(p.numel() for p in model.parameters()) - model.transformer.wte.weight.numel()
    return 6 * params + 12 * cfg.n_layer * cfg.n_embd * seq


def child(case: str, mode: str, args) -> dict:
    if case == "point":
        return child_points(mode, args)
    from fractal_llm.gpt.data import Batch
    from fractal_llm.gpt.finetune import compile_model
    from fractal_llm.gpt.training_step import optimizer_step
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    compiled = mode != "eager"
    model, next_batch = tiny_case(device, compiled) if case == "tiny" else d20_case(device, args.d20_seq,
                                                                                 args.d20_layers)
    optimizers = model.setup_optimizers(matrix_lr=SMOKE["matrix_lr"], unembedding_lr=SMOKE["unembedding_lr"],
                                        trainable=("matrix", "unembedding"))
    dtype = "bfloat16" if args.dtype == "bf16" else "float32"
    config = smoke_config(device=device.type, dtype=dtype, compile="compiled" if compiled else "eager")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, tokens = [], 0
    for step in range(1 + args.warmup + args.steps):
        inputs, targets = next_batch()
        sync(device)
        t0 = time.perf_counter()
        if step == 0 and compiled:  # the compile, tried on this batch as the runs do (gradients dropped)
            batch = Batch(inputs, targets, int((targets != -1).sum()))
            step_model = compile_model(config, model, device, batch)
            if step_model is model:
                raise RuntimeError("torch.compile failed (see the line above)")
        elif step == 0:
            step_model = model
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            loss = step_model(inputs, targets)
        optimizer_step(model, loss, optimizers)
        sync(device)
        times.append(time.perf_counter() - t0)
        tokens += inputs.numel() if step >= 1 + args.warmup else 0
    timed = times[1 + args.warmup:]
    step_s = statistics.median(timed)
    row = {"case": case, "mode": mode, "step_ms": 1000 * step_s, "first_s": times[0],
           "compile_s": times[0] - step_s if compiled else None, "tokens_per_s": tokens / sum(timed),
           "peak_mib": peak_mib(device), "loss": float(loss.item()), "mfu": None, "cache_hits": cache_hits()}
    if device.type == "cuda":
        peak = next((f for name, f in BF16_PEAK_FLOPS.items() if name in torch.cuda.get_device_name(device)), None)
        seq = inputs.shape[1]
        row["mfu"] = flops_per_token(model, seq) * row["tokens_per_s"] / peak if peak else None
    return row


def child_points(mode: str, args) -> dict:
    """--points whole smoke points in this process, as a runner worker trains them."""
    from fractal_llm.gpt.finetune import train_gpt
    torch.set_num_threads(args.threads)
    walls = []
    for index in range(args.points):
        config = smoke_config(device=args.device, num_iterations=args.point_steps, seed=index,
                              trainable_window_steps=min(5, args.point_steps),
                              compile="eager" if mode == "eager" else "compiled")
        t0 = time.perf_counter()
        result = train_gpt(config)
        walls.append(time.perf_counter() - t0)
        assert result.config["repro"]["training_step"] == ("eager" if mode == "eager" else "compiled")
    return {"case": "point", "mode": mode, "first_s": walls[0], "point_s": statistics.median(walls[1:]),
            "peak_mib": peak_mib(torch.device(args.device)), "cache_hits": cache_hits()}


def cache_hits() -> int:
    """Compiled graphs this process loaded from the on-disk cache (a warm process should show them)."""
    from torch._dynamo.utils import counters
    return counters["inductor"]["fxgraph_cache_hit"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(case: str, mode: str, args, cache_dir: str) -> dict:
    argv = [sys.executable, __file__, "--child", case, mode, "--device", args.device, "--dtype", args.dtype,
            "--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
            "--d20-seq", str(args.d20_seq), "--d20-layers", str(args.d20_layers), "--points", str(args.points),
            "--point-steps", str(args.point_steps)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads),
           "TORCHINDUCTOR_CACHE_DIR": cache_dir, "WANDB_MODE": "disabled"}
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{case}/{mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def step_table(args) -> None:
    from rich.console import Console
    from rich.table import Table
    console = Console(width=max(Console().width, 150))
    table = Table(title=f"compiled against eager, {args.device} {args.dtype}, {args.threads} thread(s); step: "
                        f"median of {args.steps} after {args.warmup} warm-up; point: {args.point_steps} steps, "
                        f"median of {args.points - 1} after the first")
    for column in ("case", "mode", "step ms", "x eager", "first step s", "compile s", "tokens/s", "MFU",
                   "point s", "x eager ", "first point s", "cache hits", "peak MiB", "loss"):
        table.add_column(column, justify="right")
    from fractal_llm.gpt.make_base import ensure_tiny_base
    ensure_tiny_base()  # a one-off build, paid by no timed process
    for case in args.cases:
        with tempfile.TemporaryDirectory() as cache_dir:  # cold, then warm from what cold wrote
            rows = {mode: run_child(case, mode, args, cache_dir) for mode in MODES}
        for mode, row in rows.items():
            eager = rows["eager"]
            step_ratio = row["step_ms"] / eager["step_ms"] if "step_ms" in row else None
            point_ratio = row["point_s"] / eager["point_s"] if "point_s" in row else None
            table.add_row(case, mode, fmt(row.get("step_ms"), ".1f"), fmt(step_ratio, ".2f"),
                          fmt(row["first_s"] if case != "point" else None, ".1f"), fmt(row.get("compile_s"), ".1f"),
                          fmt(row.get("tokens_per_s"), ",.0f"), fmt(row.get("mfu"), ".1%"),
                          fmt(row.get("point_s"), ".2f"), fmt(point_ratio, ".2f"),
                          fmt(row["first_s"] if case == "point" else None, ".1f"), str(row["cache_hits"]),
                          fmt(row["peak_mib"], ",.0f"), fmt(row.get("loss"), ".5f"))
    console.print(table)


def sweep(args) -> None:
    """Wall time of `fractal-llm local sweeps/smoke.yaml`: eager, compiled (cold cache), compiled (warm)."""
    import yaml
    from fractal_llm.gpt.make_base import ensure_tiny_base
    ensure_tiny_base()
    spec = yaml.safe_load((ROOT / "sweeps" / "smoke.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = str(Path(tmp) / "inductor")
        for label, compile_value in (("eager", "eager"), ("compiled, cold cache", "compiled"),
                                     ("compiled, warm cache", "compiled")):
            spec["parameters"]["compile"] = {"value": compile_value}
            sweep_file = Path(tmp) / "smoke.yaml"
            sweep_file.write_text(yaml.safe_dump(spec))
            out = Path(tempfile.mkdtemp(dir=tmp))
            argv = [sys.executable, "-m", "fractal_llm.cli", "local", str(sweep_file), "--out", str(out)]
            argv += ["--workers", str(args.workers)] if args.workers else []
            argv += ["--limit", str(args.limit)] if args.limit else []
            env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "disabled",
                   "TORCHINDUCTOR_CACHE_DIR": cache_dir}
            t0 = time.perf_counter()
            proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise RuntimeError(f"the smoke sweep ({label}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
            records = len(list(out.glob("*.json")))
            print(f"smoke sweep, {label}: {records} points in {wall:.1f} s ({wall / max(records, 1):.2f} s per point)",
                  flush=True)


def flips(eager_dir: str, compiled_dir: str) -> None:
    """The points of one sweep whose verdict differs between two record directories (eager and compiled),
    and the largest |loss_ratio - 1| among them in either run: a flip near the threshold is rounding."""
    from fractal_llm.records import read_records
    eager = {r.name: r for r in read_records(eager_dir)}
    compiled = {r.name: r for r in read_records(compiled_dir)}
    both = sorted(set(eager) & set(compiled))
    flipped = [n for n in both if eager[n].summary.get("verdict") != compiled[n].summary.get("verdict")]
    distance = [abs(run.summary["loss_ratio"] - 1) for n in flipped for run in (eager[n], compiled[n])]
    ratios = [abs(compiled[n].summary["loss_ratio"] - eager[n].summary["loss_ratio"]) for n in both
              if eager[n].summary.get("loss_ratio") is not None and compiled[n].summary.get("loss_ratio") is not None]
    counts = {kind: dict(sorted(Counter(runs[n].summary.get("verdict") for n in both).items()))
              for kind, runs in (("eager", eager), ("compiled", compiled))}
    print(f"{len(both)} points in both; verdicts {counts}")
    print(f"{len(flipped)} flipped; largest |loss_ratio - 1| among them: {max(distance, default=0):.2e}; "
          f"largest |loss_ratio(compiled) - loss_ratio(eager)| over all points: {max(ratios, default=0):.2e}")
    for name in flipped:
        print(f"  {name}: {eager[name].summary['verdict']} {eager[name].summary['loss_ratio']:.6f} -> "
              f"{compiled[name].summary['verdict']} {compiled[name].summary['loss_ratio']:.6f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="tiny,point,d20", help="comma-separated: tiny, point, d20")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast, as on GPUs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, help="timed steps (default: 20; on CPU 2 for d20)")
    parser.add_argument("--warmup", type=int, help="untimed steps after the first (default 3; on CPU 0 for d20)")
    parser.add_argument("--points", type=int, default=6, help="point case: points in the one process")
    parser.add_argument("--point-steps", type=int, default=20, help="point case: steps per point (smoke: 20)")
    parser.add_argument("--d20-seq", type=int, help="tokens per row of the d20 case (default: 1024 on cuda, 256 on cpu)")
    parser.add_argument("--d20-layers", type=int, default=D20["n_layer"], help="layers of the d20 case (d20: 20)")
    parser.add_argument("--quick", action="store_true",
                        help="prove it runs: 2 steps, 1 warm-up, 2 points of 3 steps, a 2-layer d20 with 64-token rows")
    parser.add_argument("--sweep", action="store_true", help="time the whole smoke sweep both ways instead")
    parser.add_argument("--workers", type=int, help="--sweep: runner workers (default: the runner's)")
    parser.add_argument("--limit", type=int, help="--sweep: at most this many points")
    parser.add_argument("--flips", nargs=2, metavar=("EAGER_DIR", "COMPILED_DIR"),
                        help="count the verdicts that differ between two record directories of one sweep")
    parser.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return 0
    if args.sweep:
        sweep(args)
        return 0
    if args.flips:
        flips(*args.flips)
        return 0
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in args.cases if c not in ("tiny", "point", "d20")]
    if unknown:
        parser.error(f"--cases: unknown {unknown}; allowed tiny, point, d20")
    if args.d20_seq is None:
        args.d20_seq = 1024 if args.device == "cuda" else 256
    if args.quick:
        args.steps, args.warmup = args.steps or 2, 1 if args.warmup is None else args.warmup
        args.points, args.point_steps, args.d20_seq, args.d20_layers = 2, 3, 64, 2
    slow = args.device == "cpu" and "d20" in args.cases
    for case in args.cases:  # a CPU d20 step takes minutes: two, unless asked
        case_args = argparse.Namespace(**vars(args))
        case_args.steps = args.steps or (2 if slow and case == "d20" else 20)
        case_args.warmup = args.warmup if args.warmup is not None else (0 if slow and case == "d20" else 3)
        case_args.cases = [case]
        step_table(case_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
