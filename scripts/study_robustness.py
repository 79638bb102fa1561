"""Dynamics or noise, the checks that need new runs: one frame under data-order seeds, budgets and windows.

    python scripts/study_robustness.py FRAME.yaml --out DIR [--res 32] [--workers N] [--seeds 0,1,2]
                                       [--steps 20,40,80] [--windows 5,10] [--adaptive]

FRAME.yaml is any sweep YAML (e.g. a frame written by `fractal-llm zoom`). Its two axes are resampled to
--res values each (same ends, same scale), and each variant runs as its own `fractal-llm local` directory
under DIR (DIR/<variant>.yaml and DIR/<variant>/), so a re-run skips every point already done:
- (c) seeds: the frame with `seed` = each of --seeds, at the frame's own budget;
- (d) budget: the frame with `num_iterations` = each of --steps, at the frame's own seed;
- (d) window K: no new runs: the first seed's records hold their loss curves, re-judged with
  trainable_window_steps = each of --windows (robustness.relabel_window).
Variants with the same fixed values share one directory. Printed and written (DIR/study.md, DIR/study.json):
per variant the trainable pixels, the share of pixels that flip against the reference (the frame as given:
first seed, its own budget and window), D (ours and the paper method), and for the seeds the share of pixels
on which they do not all agree.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from fractal_llm.runners import local as runner  # noqa: E402
from fractal_llm.report.grid import apply_refinement, build_grid  # noqa: E402
from fractal_llm.records import json_safe, read_records  # noqa: E402
from fractal_llm.refine.levels import DEFAULT_MARGIN  # noqa: E402
from fractal_llm.report.robustness import class_counts, dimensions, flip_share, relabel_window  # noqa: E402
from fractal_llm.refine.levels import read_settings  # noqa: E402
from fractal_llm.sweep import axis_is_log, axis_values, dump_sweep_yaml, load_sweep  # noqa: E402


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected integers separated by commas, e.g. 20,40,80") from None
    if not values:
        raise argparse.ArgumentTypeError(f"{text!r}: give at least one value")
    return values


def resampled(frame: dict, res: int) -> dict:
    """The frame with both axes at `res` values over the same ends and scale."""
    cfg = copy.deepcopy(frame)
    for name, spec in cfg["parameters"].items():
        if "values" in spec and len(spec["values"]) != res:
            values = sorted(float(v) for v in spec["values"])
            spec["values"] = axis_values(values[0], values[-1], res, "log" if axis_is_log(values) else "lin")
    return cfg


def variant(base: dict, **fixed) -> tuple[str, dict]:
    """(directory name, sweep config) of the base with some fixed values changed."""
    cfg = copy.deepcopy(base)
    for key, value in fixed.items():
        cfg["parameters"][key] = {"value": value}
    seed = cfg["parameters"].get("seed", {}).get("value", 0)
    steps = cfg["parameters"].get("num_iterations", {}).get("value", -1)
    name = f"seed{seed}-steps{'default' if steps == -1 else steps}"
    cfg["name"] = f"{base.get('name', 'frame')}-{name}"
    return name, cfg


def run_variant(out: Path, name: str, cfg: dict, workers: int | None, adaptive: bool, console: Console) -> int:
    path = out / f"{name}.yaml"
    path.write_text(dump_sweep_yaml(cfg))
    spec = load_sweep(path)
    runner.check_out_dir(out / name, spec)
    mode = runner.point_wandb_mode("disabled", out)  # a study's runs are records only
    if adaptive:
        return runner.run_adaptive(spec, out / name, None, DEFAULT_MARGIN, workers=workers, wandb_mode=mode,
                                   console=console)
    return runner.run_sweep(spec, out / name, workers=workers, wandb_mode=mode, console=console)


def labels_of(directory: Path, records=None) -> np.ndarray:
    """The map of a variant's records (filled as the report fills an adaptive run)."""
    cfg = load_sweep(directory / "sweep.yaml").raw
    grid = build_grid(cfg, read_records(directory) if records is None else records)
    refinement = read_settings(directory)
    if refinement:
        apply_refinement(grid, refinement.levels, refinement.margin)
    return grid.labels


def row(label: str, labels: np.ndarray, reference: np.ndarray) -> dict:
    return {"variant": label, **class_counts(labels), "flip_vs_reference": flip_share(labels, reference),
            **dimensions(labels)}


def disagreement(maps: list[np.ndarray]) -> float:
    """Share of the pixels decided in every map on which the maps do not all agree."""
    stack = np.stack(maps)
    decided = ~np.isnan(stack).any(axis=0)
    differ = (stack != stack[0]).any(axis=0) & decided
    return float(differ.sum() / decided.sum()) if decided.any() else float("nan")


def _num(x) -> str:
    return "–" if x is None or x != x else f"{x:.3f}"


def markdown(study: dict) -> str:
    lines = [f"# Robustness study: {study['frame']} at {study['res']}²", "",
             f"Reference: {study['reference']}. Seeds disagree on {study['seed_disagreement']:.1%} of the pixels.", "",
             "| check | variant | trainable | not trainable | flip vs reference | D (ours) | D (paper method) |",
             "|---|---|---:|---:|---:|---|---:|"]
    for check in ("seeds", "budget", "window"):
        for r in study[check]:
            unc = "" if r["uncertainty"] is None else f" ± {r['uncertainty']:.3f}"
            coarse = " (too coarse)" if r["too_coarse"] else ""
            lines.append(f"| {check} | {r['variant']} | {r['trainable']} | {r['not_trainable']} | "
                         f"{r['flip_vs_reference']:.1%} | {_num(r['dimension'])}{unc}{coarse} | "
                         f"{_num(r['paper_dimension'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("frame", help="a sweep YAML (e.g. DIR/frame_KK.yaml of `fractal-llm zoom`)")
    p.add_argument("--out", required=True, help="the study's directory (one record directory per variant)")
    p.add_argument("--res", type=int, default=32, help="values per axis (default 32)")
    p.add_argument("--workers", type=int, help="worker processes (default: as `fractal-llm local`)")
    p.add_argument("--seeds", type=int_list, default=[0, 1, 2], help="data-order seeds (default 0,1,2)")
    p.add_argument("--steps", type=int_list, default=[20, 40, 80], help="budgets, num_iterations (default 20,40,80)")
    p.add_argument("--windows", type=int_list, default=[5, 10], help="windows K re-judged from records (default 5,10)")
    p.add_argument("--adaptive", action="store_true", help="run each variant with adaptive refinement")
    args = p.parse_args(argv)
    console = Console()
    if args.res < 4 or min(args.steps) < 1 or min(args.windows) < 1:
        console.print(f"[red]error:[/red] --res={args.res} must be >= 4, --steps and --windows >= 1")
        return 2
    frame = load_sweep(args.frame)  # checked before any run
    base = resampled(frame.raw, args.res)
    runner.preflight_sweep(frame)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    own_seed = frame.fixed.get("seed", 0)
    own_steps = frame.fixed.get("num_iterations", -1)
    seeds = [variant(base, seed=s, num_iterations=own_steps) for s in args.seeds]
    budgets = [variant(base, seed=own_seed, num_iterations=n) for n in args.steps]
    status = 0
    for name, cfg in dict(seeds + budgets).items():
        console.print(f"variant {name}", highlight=False)
        rc = run_variant(out, name, cfg, args.workers, args.adaptive, console)
        if rc == 130:
            return rc
        status = status or rc
    ref_name = seeds[0][0]
    reference = labels_of(out / ref_name)
    seed_maps = [labels_of(out / name) for name, _ in seeds]
    records = read_records(out / ref_name)
    window_rows = []
    for k in args.windows:
        verdicts = relabel_window(records, k)
        relabelled = [replace(r, summary={**r.summary, "verdict": verdicts[r.name]}) if r.name in verdicts else r
                      for r in records]
        window_rows.append(row(f"K = {k}", labels_of(out / ref_name, relabelled), reference))
    study = json_safe({
        "frame": str(args.frame), "res": args.res,
        "reference": f"{ref_name} (K = {frame.fixed.get('trainable_window_steps', 20)})",
        "seeds": [row(f"seed {s}", m, reference) for s, m in zip(args.seeds, seed_maps)],
        "seed_disagreement": disagreement(seed_maps),
        "budget": [row(f"{n} steps", labels_of(out / name), reference) for n, (name, _) in zip(args.steps, budgets)],
        "window": window_rows,
    })
    (out / "study.json").write_text(json.dumps(study, indent=1))
    text = markdown(study)
    (out / "study.md").write_text(text)
    console.print(text, highlight=False, markup=False, soft_wrap=True)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
