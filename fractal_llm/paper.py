"""`fractal-llm paper CONFIG`: Sohl-Dickstein 2024's trainability fractals, through our report code.

    fractal-llm paper CONFIG [--res N] [--window x0:x1:y0:y1] [--steps S] [--zoom K] [--out DIR]
                             [--chunk N] [--workers N] [--offset-mode init|every_step]
    fractal-llm paper CONFIG --write-yaml FILE [--res N] [--window ...] [--steps S]

CONFIG: tanh, relu, linear, tanh-one-point, tanh-minibatch, init-offset. Windows are in log10 units:
x = lr_input, y = lr_output (init-offset: x = init_offset added to W0, y = one LR shared by both layers).
The grid is trained in batched chunks (fractal_llm.mlp) straight into arrays; no per-point records. The
chunks run in --workers single-threaded processes (default: one per core, as torch counts them).

--zoom K: after the base frame, K nested frames, each half as wide (in log10 units) as the previous and
centred on the boundary point of the previous frame closest to that frame's centre. D is measured per
frame with the paper's estimator (median of local slopes) and with ours, and the median over all frames
is reported (report.json "zoom_frames", "zoom_median_dimension").
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fractal_llm import mlp
from fractal_llm.config import TrainConfig
from fractal_llm.sweep import AxisArg, dump_sweep_yaml, new_sweep
from fractal_llm.fractal import edge_mask, estimate_dimension, paper_dimension
from fractal_llm.verdict import count_verdicts

console = Console()
PAPER_MIN_RES = 21  # fractal.paper_dimension needs an edge image >= 20 pixels on its short side


class PaperError(ValueError):
    """A bad `fractal-llm paper` argument; raised before any training."""


@dataclass(frozen=True)
class PaperConfig:
    name: str
    fixed: dict  # TrainConfig fields (model_family mlp implied)
    window: tuple[float, float, float, float]  # log10 x0, x1, y0, y1
    paper_dimension: float
    description: str
    x_name: str = "lr_input"
    y_name: str = "lr_output"
    shared_lr: bool = False  # init-offset: y is the LR of both layers, x is init_offset


# Default windows: chosen from 32x32 scans over 10^-2..10^4 (500 steps) so that each holds a long stretch
# of the trainable / not-trainable boundary (docs/paper.md shows the maps).
CONFIGS: dict[str, PaperConfig] = {c.name: c for c in (
    PaperConfig("tanh", {"nonlinearity": "tanh"}, (0.0, 4.0, 1.5, 3.0), 1.66,
                "tanh, full batch (272 examples)"),
    PaperConfig("relu", {"nonlinearity": "relu"}, (1.0, 3.5, 0.5, 2.5), 1.20,
                "ReLU, full batch (272 examples)"),
    PaperConfig("linear", {"nonlinearity": "linear"}, (0.5, 3.0, 0.5, 2.5), 1.17,
                "deep linear (identity), full batch (16 examples)"),
    PaperConfig("tanh-one-point", {"nonlinearity": "tanh", "dataset_size": 1}, (0.0, 4.0, 0.5, 2.5), 1.41,
                "tanh, a single training example"),
    PaperConfig("tanh-minibatch", {"nonlinearity": "tanh", "batch_size": 16}, (0.0, 4.0, 1.0, 2.5), 1.55,
                "tanh, minibatches of 16 drawn with replacement (loss recorded on the full batch)"),
    PaperConfig("init-offset", {"nonlinearity": "tanh", "init_offset_mode": "every_step"},
                (-1.5, 1.0, 1.0, 2.5), 1.98,
                "tanh, full batch; x = offset added to W0 (every step, as the paper's notebook), y = shared LR",
                x_name="init_offset", y_name="lr", shared_lr=True),
)}


@dataclass
class Frame:
    window: tuple[float, float, float, float]
    x_values: np.ndarray
    y_values: np.ndarray
    summary: dict  # verdict.summarize_batch arrays reshaped to (ny, nx), plus runtime_s
    labels: np.ndarray = field(default=None)  # 1.0 trainable, 0.0 not

    @property
    def verdicts(self) -> np.ndarray:
        return self.summary["verdict"]


# ----------------------------------------------------------------------------------------------
# Argument checks (all before any training)

def parse_window(text: str) -> tuple[float, float, float, float]:
    parts = text.split(":")
    if len(parts) != 4:
        raise PaperError(f"--window={text!r}: expected x0:x1:y0:y1 (log10 units), e.g. 0:2.5:0:2.5")
    try:
        x0, x1, y0, y1 = (float(p) for p in parts)
    except ValueError:
        raise PaperError(f"--window={text!r}: x0, x1, y0, y1 must be numbers (log10 units)") from None
    if not all(math.isfinite(v) for v in (x0, x1, y0, y1)):
        raise PaperError(f"--window={text!r}: values must be finite")
    if x0 >= x1:
        raise PaperError(f"--window={text!r}: x0={x0} must be < x1={x1}")
    if y0 >= y1:
        raise PaperError(f"--window={text!r}: y0={y0} must be < y1={y1}")
    if max(abs(v) for v in (x0, x1, y0, y1)) > 300:
        raise PaperError(f"--window={text!r}: log10 values beyond +-300 overflow float64")
    return x0, x1, y0, y1


def check_args(args) -> tuple[PaperConfig, tuple[float, float, float, float]]:
    if args.config not in CONFIGS:
        raise PaperError(f"CONFIG={args.config!r}: allowed values are {', '.join(CONFIGS)}")
    paper = CONFIGS[args.config]
    if args.res < 4:
        raise PaperError(f"--res={args.res}: must be >= 4 (pixels per side)")
    if args.steps != -1 and args.steps < 1:
        raise PaperError(f"--steps={args.steps}: must be >= 1 (or -1 for the default 500)")
    if args.zoom < 0:
        raise PaperError(f"--zoom={args.zoom}: must be >= 0")
    if args.zoom > 0 and args.res < PAPER_MIN_RES:
        raise PaperError(f"--res={args.res}: --zoom needs --res >= {PAPER_MIN_RES} (the paper's box sizes "
                         "start at 10 pixels)")
    if args.chunk < 0:
        raise PaperError(f"--chunk={args.chunk}: must be >= 1 (0: automatic)")
    if args.workers < 0:
        raise PaperError(f"--workers={args.workers}: must be >= 1 (0: one per core)")
    window = paper.window if args.window is None else parse_window(args.window)
    return paper, window


def train_config(paper: PaperConfig, steps: int, offset_mode: str | None = None) -> TrainConfig:
    fixed = dict(paper.fixed)
    if offset_mode is not None:
        fixed["init_offset_mode"] = offset_mode
    return TrainConfig(model_family="mlp", num_iterations=steps, **fixed)


# ----------------------------------------------------------------------------------------------
# Frames and zoom

def axis_values(lo: float, hi: float, res: int) -> np.ndarray:
    return np.logspace(lo, hi, res)


def run_frame(paper: PaperConfig, problem: mlp.Problem, window, res: int, chunk: int, pool=None,
              label: str = "") -> Frame:
    x0, x1, y0, y1 = window
    xs, ys = axis_values(x0, x1, res), axis_values(y0, y1, res)
    xx, yy = np.meshgrid(xs, ys)  # (ny, nx): row i = y_values[i]
    lr_in, lr_out, offset = hyperparameters(paper, xx.ravel(), yy.ravel())
    with console.status(f"{label} {res}x{res} points x {problem.steps} steps") as status:
        def progress(done, total):
            status.update(f"{label} {done}/{total} points x {problem.steps} steps")
        summary = mlp.train_grid(problem, lr_in, lr_out, offset, chunk_size=chunk, progress=progress, pool=pool)
    shaped = {k: (v.reshape(res, res) if isinstance(v, np.ndarray) else v) for k, v in summary.items()}
    labels = shaped["trainable"].astype(np.float64)
    return Frame(window=tuple(window), x_values=xs, y_values=ys, summary=shaped, labels=labels)


def hyperparameters(paper: PaperConfig, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    """(lr_input, lr_output, init_offset) at image coordinates x, y (init-offset: x = offset, y = both LRs)."""
    if paper.shared_lr:
        return y, y, x
    return x, y, np.zeros_like(x)


def pixel_curve(paper: PaperConfig, problem: mlp.Problem, frame: Frame, i: int, j: int) -> list[float]:
    """The loss curve of pixel (row i, column j), trained again alone: bit-identical to its run in the batched
    grid, so the report's loss-curve panel needs no stored curves. Ends at the first non-finite loss."""
    x, y = np.array([frame.x_values[j]]), np.array([frame.y_values[i]])
    row = mlp.train_losses(problem, *hyperparameters(paper, x, y))[0]
    bad = np.flatnonzero(~np.isfinite(row))
    return row.tolist() if bad.size == 0 else row[:bad[0] + 1].tolist()


def zoom_window(frame: Frame) -> tuple[float, float, float, float] | None:
    """Half-width window centred on the edge pixel nearest the frame centre (ties: lowest row, then column)."""
    edges = edge_mask(frame.labels)
    if not edges.any():
        return None
    rows, cols = np.nonzero(edges)
    h, w = edges.shape
    dist = (rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2
    k = int(np.lexsort((cols, rows, dist))[0])
    x0, x1, y0, y1 = frame.window
    res = len(frame.x_values)
    step_x, step_y = (x1 - x0) / (res - 1), (y1 - y0) / (res - 1)
    cx = x0 + (cols[k] + 0.5) * step_x  # an edge pixel sits between grid points j and j+1
    cy = y0 + (rows[k] + 0.5) * step_y
    hx, hy = (x1 - x0) / 4, (y1 - y0) / 4
    return cx - hx, cx + hx, cy - hy, cy + hy


def frame_dimensions(frame: Frame) -> dict:
    ours = estimate_dimension(frame.labels)
    out = {"window": list(frame.window), "counts": count_verdicts(frame.verdicts),
           "dimension": ours.dimension, "uncertainty": ours.uncertainty, "too_coarse": ours.too_coarse,
           "n_edge_pixels": ours.n_edge_pixels, "runtime_s": frame.summary["runtime_s"]}
    if min(frame.labels.shape) >= PAPER_MIN_RES:
        paper = paper_dimension(frame.labels)
        out["paper_dimension"] = paper.dimension
        out["paper_local_slopes"] = paper.local_slopes
        out["paper_box_sizes"] = paper.box_sizes
    return out


def _nanmedian(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(finite)) if finite else None


# ----------------------------------------------------------------------------------------------
# Output

def write_outputs(paper: PaperConfig, frames: list[Frame], out: Path, problem: mlp.Problem, res: int,
                  workers: int) -> dict:
    from fractal_llm.grid import grid_from_arrays  # report modules load matplotlib: import when writing
    from fractal_llm.report import print_summary, write_report

    base = frames[0]
    per_frame = [frame_dimensions(f) for f in frames]
    extra = {
        "paper": {"config": paper.name, "description": paper.description,
                  "paper_dimension_published": paper.paper_dimension,
                  "window_log10": list(base.window), "resolution": res, "steps": problem.steps,
                  "dataset_size": problem.dataset_size, "batch_size": problem.batch_size,
                  "init_offset_mode": problem.init_offset_mode, "workers": workers},
        "zoom_frames": per_frame,
        "zoom_median_dimension": _nanmedian([f["dimension"] for f in per_frame]),
        "zoom_median_paper_dimension": _nanmedian([f.get("paper_dimension") for f in per_frame]),
        "runtime_s": float(sum(f.summary["runtime_s"] for f in frames)),
    }
    fixed = {"model_family": "mlp", **paper.fixed, "num_iterations": problem.steps}
    title = f"Paper mode: {paper.description} ({res}x{res}, {problem.steps} steps)"
    report = None
    for k, frame in enumerate(frames):
        grid = grid_from_arrays(paper.x_name, paper.y_name, frame.x_values, frame.y_values, frame.verdicts,
                                frame.summary["score"], final_loss=frame.summary["loss_last"], fixed=fixed,
                                name=f"paper-{paper.name}")
        target = out if k == 0 else out / f"frame_{k:02d}"
        curve_at = lambda i, j, frame=frame: pixel_curve(paper, problem, frame, i, j)  # noqa: E731
        written = write_report(grid, target, title=title if k == 0 else f"{title}, zoom frame {k}",
                               curve_at=curve_at, zoom_k=0, extra=extra if k == 0 else None)
        report = written if k == 0 else report
    print_summary(report, out)  # the base frame; the zoom frames are in the per-frame table
    return report


def print_frames(paper: PaperConfig, per_frame: list[dict]) -> None:
    table = Table(title=f"{paper.name}: D per frame (paper's value {paper.paper_dimension})")
    for col in ("frame", "window (log10)", "trainable", "edges", "D (ours)", "D (paper method)", "s"):
        table.add_column(col)
    for k, f in enumerate(per_frame):
        w = ":".join(f"{v:.3g}" for v in f["window"])
        ours = _fmt(f["dimension"]) + ("" if f["uncertainty"] is None else f" ± {_fmt(f['uncertainty'])}")
        table.add_row(str(k), w, str(f["counts"]["trainable"]), str(f["n_edge_pixels"]), ours,
                      _fmt(f.get("paper_dimension")), f"{f['runtime_s']:.1f}")
    console.print(table)


def _fmt(value) -> str:
    """report.json holds None where a number is undefined (NaN)."""
    return "-" if value is None or value != value else f"{value:.3f}"


# ----------------------------------------------------------------------------------------------
# Sweep YAML (the same grid as an ordinary sweep for `fractal-llm local`)

def sweep_config(paper: PaperConfig, window, res: int, steps: int, offset_mode: str | None = None) -> dict:
    """The frame as a grid sweep. init-offset: x = init_offset, y = lr_input, with lr_output = -1 (tied)."""

    x0, x1, y0, y1 = window
    x_values, y_values = (10.0 ** x0, 10.0 ** x1, res), (10.0 ** y0, 10.0 ** y1, res)
    fixed = {"model_family": "mlp", **paper.fixed, "num_iterations": steps}
    if offset_mode is not None:
        fixed["init_offset_mode"] = offset_mode
    if paper.shared_lr:
        axes = [AxisArg("init_offset", *x_values), AxisArg("lr_input", *y_values)]
        fixed["lr_output"] = -1.0
    else:
        axes = [AxisArg("lr_input", *x_values), AxisArg("lr_output", *y_values)]
    return new_sweep(axes, fixed, name=f"paper-{paper.name}-{res}",
                     description=f"Sohl-Dickstein 2024 grid: {paper.description}")


# ----------------------------------------------------------------------------------------------
# Entry point

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-llm paper", description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help=f"one of {', '.join(CONFIGS)}")
    parser.add_argument("--res", type=int, default=128, help="pixels per side (default 128)")
    parser.add_argument("--window", default=None, help="x0:x1:y0:y1 in log10 units (default: per config)")
    parser.add_argument("--steps", type=int, default=-1, help="GD steps (default 500)")
    parser.add_argument("--zoom", type=int, default=0, help="nested zoom frames after the base frame")
    parser.add_argument("--out", default=None, help="output directory (default paper-CONFIG)")
    parser.add_argument("--chunk", type=int, default=0, help="grid points per task (default 0: automatic)")
    parser.add_argument("--workers", type=int, default=0,
                        help="single-threaded worker processes (default 0: one per core; 1: this process)")
    parser.add_argument("--offset-mode", choices=("init", "every_step"), default=None,
                        help="init-offset: add the offset once at init, or after every step (default: notebook's)")
    parser.add_argument("--write-yaml", default=None, metavar="FILE", help="write the grid as a sweep YAML, no run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except PaperError as exc:  # bad input: one clear line (raised before any training)
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, markup=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("\n[yellow]stopped.[/yellow] Paper mode writes its report at the end: nothing was written.")
        return 130


def run(args) -> int:
    paper, window = check_args(args)
    steps = mlp.DEFAULT_STEPS if args.steps == -1 else args.steps
    if args.write_yaml:
        cfg = sweep_config(paper, window, args.res, steps, args.offset_mode)
        Path(args.write_yaml).write_text(dump_sweep_yaml(cfg, header=f"fractal-llm paper {paper.name}"))
        console.print(f"sweep: {args.write_yaml} ({args.res}x{args.res} points)")
        return 0
    workers = args.workers or torch.get_num_threads()
    if workers == 1:
        torch.set_num_threads(1)  # the same single-threaded arithmetic as a worker process
    problem = mlp.problem_of(train_config(paper, steps, args.offset_mode))
    out = Path(args.out or f"paper-{paper.name}")
    start = time.perf_counter()
    with mlp.worker_pool(workers) as pool:
        if pool is not None:
            console.print(f"{workers} worker processes ready", highlight=False)
        frames = [run_frame(paper, problem, window, args.res, args.chunk, pool, label="frame 0")]
        for k in range(1, args.zoom + 1):
            nxt = zoom_window(frames[-1])
            if nxt is None:
                console.print(f"[yellow]frame {k - 1} has no boundary: zoom stops at {k} frame(s)[/]")
                break
            frames.append(run_frame(paper, problem, nxt, args.res, args.chunk, pool, label=f"frame {k}"))
    report = write_outputs(paper, frames, out, problem, args.res, workers)
    print_frames(paper, report["zoom_frames"])
    console.print(f"median D over {len(frames)} frame(s): ours {_fmt(report['zoom_median_dimension'])}, "
                  f"paper method {_fmt(report['zoom_median_paper_dimension'])} (published {paper.paper_dimension}); "
                  f"{time.perf_counter() - start:.1f} s; report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
