"""`fractal-llm paper CONFIG`: Sohl-Dickstein 2024's trainability fractals, through our report code.

    fractal-llm paper CONFIG [--frames A:B[:STEP] | --window x0:x1:y0:y1 [--zoom K]] [--res N] [--steps S]
                             [--weights notebook|torch] [--device cpu|cuda] [--out DIR] [--chunk N]
                             [--workers N] [--offset-mode init|every_step]
    fractal-llm paper CONFIG --write-yaml FILE [--res N] [--frames A:A | --window ...] [--steps S]

CONFIG: tanh, relu, linear, tanh-one-point, tanh-minibatch, init-offset. Windows are in log10 units:
x = lr_input, y = lr_output (init-offset: x = init_offset added to W0, y = one LR shared by both layers).
The grid is trained in batched chunks (fractal_llm.paper.mlp) straight into arrays; no per-point records. The
chunks run in --workers single-threaded processes (default: one per usable core), or on
CUDA in one process (--device cuda, float64).

The paper's protocol is the default: the notebook's weights and data (--weights notebook) and the frames of
its zoom sequence for CONFIG (one centre; frame k is widest / 2^k wide; the default is the published tile's
frame). --frames A:B[:STEP] runs frames A..B; the paper-method dimension of the run is the notebook's
statistic, one median over the local slopes of all its frames (report.json paper.pooled_paper_dimension).
Our own window-fit estimator is reported per frame beside it, never against the published value.

--window gives a free frame instead; --zoom K then adds K nested frames, each half as wide and centred on
the boundary point of the previous frame closest to its centre (our re-centring zoom, not the paper's).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from fractal_llm.paper import mlp
from fractal_llm.config import ConfigError, TrainConfig
from fractal_llm.errors import FractalLLMError
from fractal_llm.report.fractal import edge_mask, estimate_dimension, paper_dimension, pooled_paper_dimension
from fractal_llm.pool import usable_cores
from fractal_llm.sweep import AxisArg, dump_sweep_yaml, new_sweep
from fractal_llm.verdict import count_verdicts
from fractal_llm.plans.zoom import float64_problem

console = Console()
PAPER_MIN_RES = 21  # fractal.paper_dimension needs an edge image >= 20 pixels on its short side
# How deep a zoom sequence may go below its published tile: the tile labels pin the centre to about 1e-3 of
# the tile's width, which 3 octaves deeper is 0.8% of the frame's width (one pixel at 128x128).
DEEPER_THAN_TILE = 3


class PaperError(FractalLLMError):
    """A bad `fractal-llm paper` argument; raised before any training."""


@dataclass(frozen=True)
class ZoomSequence:
    """The notebook's zoom sequence of one configuration: every frame shares the centre, frame k is
    widest / 2^k decades wide on both axes, and the widest is the first frame at least 6 decades wide (the
    notebook zooms out of its deepest frame by factors of 2 until then). Centres and the tile's width and
    frame index are read off the tile labels of the paper repository's figure (docs/paper.md)."""
    centre: tuple[float, float]  # log10 x, log10 y
    tile_width: float  # decades, both axes, of the published tile
    tile: int  # the tile's frame index

    @property
    def deepest(self) -> int:
        """The deepest frame we run: the centre is known well enough DEEPER_THAN_TILE octaves below the tile."""
        return self.tile + DEEPER_THAN_TILE

    def width(self, k: int) -> float:
        # tile_width * 2^(tile - k): powers of two, so frame `tile` is exactly tile_width wide
        return self.tile_width * 2.0 ** (self.tile - k)

    def window(self, k: int) -> tuple[float, float, float, float]:
        half = self.width(k) / 2.0
        cx, cy = self.centre
        return cx - half, cx + half, cy - half, cy + half


@dataclass(frozen=True)
class PaperConfig:
    name: str
    fixed: dict  # TrainConfig fields (model_family mlp implied)
    sequence: ZoomSequence
    paper_dimension: float
    description: str
    x_name: str = "lr_input"
    y_name: str = "lr_output"
    shared_lr: bool = False  # init-offset: y is the LR of both layers, x is init_offset

    @property
    def window(self) -> tuple[float, float, float, float]:
        """The default frame: the published tile."""
        return self.sequence.window(self.sequence.tile)


CONFIGS: dict[str, PaperConfig] = {c.name: c for c in (
    PaperConfig("tanh", {"nonlinearity": "tanh"}, ZoomSequence((1.1238442669, 2.3018075671), 7.749e-7, 23),
                1.66, "tanh, full batch (272 examples)"),
    PaperConfig("relu", {"nonlinearity": "relu"}, ZoomSequence((-0.2383546474, 1.9108561363), 2.145e-6, 22),
                1.20, "ReLU, full batch (272 examples)"),
    PaperConfig("linear", {"nonlinearity": "linear"}, ZoomSequence((2.2787786522, 0.6791983840), 4.023e-6, 21),
                1.17, "deep linear (identity), full batch (16 examples)"),
    PaperConfig("tanh-one-point", {"nonlinearity": "tanh", "dataset_size": 1},
                ZoomSequence((1.6839376040, 1.2602310346), 3.696e-6, 21), 1.41, "tanh, a single training example"),
    PaperConfig("tanh-minibatch", {"nonlinearity": "tanh", "batch_size": 16},
                ZoomSequence((-0.5728404884, 2.2412214093), 5.058e-12, 41), 1.55,
                "tanh, minibatches of 16 drawn with replacement (loss recorded on the full batch)"),
    PaperConfig("init-offset", {"nonlinearity": "tanh", "init_offset_mode": "every_step"},
                ZoomSequence((-0.7076069516, 1.5913480399), 6.291e-10, 34), 1.98,
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
    index: int | None = None  # frame index in CONFIG's zoom sequence (None: a free --window frame)

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


def parse_frames(text: str, sequence: ZoomSequence) -> list[int]:
    """A:B[:STEP] -> frame indices A, A+STEP, ... <= B of the sequence."""
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise PaperError(f"--frames={text!r}: expected A:B or A:B:STEP (frame indices), e.g. 18:21")
    try:
        a, b, step = (int(v) for v in (*parts, "1")[:3])
    except ValueError:
        raise PaperError(f"--frames={text!r}: A, B and STEP must be integers") from None
    if not 0 <= a <= b:
        raise PaperError(f"--frames={text!r}: need 0 <= A <= B")
    if step < 1:
        raise PaperError(f"--frames={text!r}: STEP={step} must be >= 1")
    return list(range(a, b + 1, step))


def check_resolvable(window, res: int, what: str) -> None:
    """Refuse a frame that float64 cannot resolve: zoom_sequence.float64_problem on each log10 axis."""
    x0, x1, y0, y1 = window
    for lo, hi in ((x0, x1), (y0, y1)):
        problem = float64_problem(lo, hi, res, log=True)
        if problem is not None:
            raise PaperError(f"{what}: {problem}; lower --res or choose a shallower frame")


def check_args(args) -> tuple[PaperConfig, list[tuple[int | None, tuple[float, float, float, float]]]]:
    """Every argument, before any work; returns the config and the planned (frame index, window) list."""
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
    if args.device == "cuda" and not torch.cuda.is_available():
        raise PaperError("--device=cuda: torch sees no CUDA device here (torch.cuda.is_available() is False)")
    if args.frames is not None and args.window is not None:
        raise PaperError("--frames and --window: give one (frames of the paper's sequence, or a free window)")
    if args.frames is not None and args.zoom:
        raise PaperError(f"--zoom={args.zoom} with --frames: the sequence is the paper's own zoom; drop --zoom")
    if args.window is not None:
        window = parse_window(args.window)
        check_resolvable(window, args.res, f"--window={args.window!r}")
        return paper, [(None, window)]
    seq = paper.sequence
    indices = [seq.tile] if args.frames is None else parse_frames(args.frames, seq)
    if len(indices) > 1 and args.res < PAPER_MIN_RES:
        raise PaperError(f"--res={args.res}: --frames needs --res >= {PAPER_MIN_RES} (the paper's box sizes "
                         "start at 10 pixels)")
    for k in indices:
        check_resolvable(seq.window(k), args.res, f"--frames: frame {k} of {paper.name}")
        if k > seq.deepest:
            raise PaperError(f"--frames: frame {k} of {paper.name} is deeper than its centre is known: the "
                             f"published tile is frame {seq.tile}, whose labels place the centre to ~1e-3 of "
                             f"its width; frames 0..{seq.deepest} are allowed")
    return paper, [(k, seq.window(k)) for k in indices]


def train_config(paper: PaperConfig, steps: int, offset_mode: str | None = None,
                 weights: str = "notebook") -> TrainConfig:
    fixed = {**paper.fixed, "mlp_weights": weights}
    if offset_mode is not None:
        fixed["init_offset_mode"] = offset_mode
    return TrainConfig(model_family="mlp", num_iterations=steps, **fixed)


# ----------------------------------------------------------------------------------------------
# Frames and zoom

def exponent_axis(lo_exp: float, hi_exp: float, res: int) -> np.ndarray:
    """res values 10^lo_exp .. 10^hi_exp, log-spaced: a window's axis (windows are in log10 units). The
    sweep YAMLs' axes, given by their values, are sweep.axis_values."""
    return np.logspace(lo_exp, hi_exp, res)


def run_frame(paper: PaperConfig, problem: mlp.Problem, window, res: int, chunk: int, pool=None,
              label: str = "", index: int | None = None) -> Frame:
    x0, x1, y0, y1 = window
    xs, ys = exponent_axis(x0, x1, res), exponent_axis(y0, y1, res)
    xx, yy = np.meshgrid(xs, ys)  # (ny, nx): row i = y_values[i]
    lr_in, lr_out, offset = hyperparameters(paper, xx.ravel(), yy.ravel())
    with console.status(f"{label} {res}x{res} points x {problem.steps} steps") as status:
        def progress(done, total):
            status.update(f"{label} {done}/{total} points x {problem.steps} steps")
        summary = mlp.train_grid(problem, lr_in, lr_out, offset, chunk_size=chunk, progress=progress, pool=pool)
    shaped = {k: (v.reshape(res, res) if isinstance(v, np.ndarray) else v) for k, v in summary.items()}
    labels = shaped["trainable"].astype(np.float64)
    return Frame(window=tuple(window), x_values=xs, y_values=ys, summary=shaped, labels=labels, index=index)


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
    """One frame's numbers: counts, our window-fit D and, at >= PAPER_MIN_RES, the paper-method D."""
    ours = estimate_dimension(frame.labels)
    out = {"frame": frame.index, "window": list(frame.window), "counts": count_verdicts(frame.verdicts),
           "dimension": ours.dimension, "uncertainty": ours.uncertainty, "too_coarse": ours.too_coarse,
           "n_edge_pixels": ours.n_edge_pixels, "runtime_s": frame.summary["runtime_s"]}
    if min(frame.labels.shape) >= PAPER_MIN_RES:
        paper = paper_dimension(frame.labels)
        out["paper_dimension"] = paper.dimension
        out["paper_local_slopes"] = paper.local_slopes
        out["paper_box_sizes"] = paper.box_sizes
    return out


def pooled(frames: list[Frame]) -> dict:
    """The notebook's statistic over the run's frames (fractal.pooled_paper_dimension)."""
    if min(frames[0].labels.shape) < PAPER_MIN_RES:
        return {"pooled_paper_dimension": None, "pooled_frames": [], "pooled_slopes": 0, "pooled_dropped": 0}
    result = pooled_paper_dimension([paper_dimension(f.labels) for f in frames])
    return {"pooled_paper_dimension": result.dimension, "pooled_frames": [f.index for f in frames],
            "pooled_slopes": result.n_slopes, "pooled_dropped": result.n_dropped}


def _nanmedian(values) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(finite)) if finite else None


# ----------------------------------------------------------------------------------------------
# Output

def write_outputs(paper: PaperConfig, frames: list[Frame], out: Path, problem: mlp.Problem, res: int,
                  workers: int, gif: bool = False) -> dict:
    """report.md/json of the first frame in out/, every further frame's in out/frame_KK/ (KK: its index in
    the zoom sequence, or its position for --window/--zoom frames), and zoom.gif when asked."""
    from fractal_llm.report.grid import grid_from_arrays  # report modules load matplotlib: import when writing
    from fractal_llm.report.plots import write_zoom_gif
    from fractal_llm.report.writer import print_summary, write_report

    base = frames[0]
    per_frame = [frame_dimensions(f) for f in frames]
    seq = paper.sequence
    extra = {
        "paper": {"config": paper.name, "description": paper.description,
                  "paper_dimension_published": paper.paper_dimension,
                  "window_log10": list(base.window), "resolution": res, "steps": problem.steps,
                  "dataset_size": problem.dataset_size, "batch_size": problem.batch_size,
                  "init_offset_mode": problem.init_offset_mode, "weights": problem.weights,
                  "device": problem.device, "workers": workers,
                  "sequence": {"centre_log10": list(seq.centre), "tile_width": seq.tile_width, "tile_frame": seq.tile,
                               "deepest_frame": seq.deepest},
                  **pooled(frames)},
        "zoom_frames": per_frame,
        "zoom_median_dimension": _nanmedian([f["dimension"] for f in per_frame]),  # ours: not the paper's statistic
        "runtime_s": float(sum(f.summary["runtime_s"] for f in frames)),
    }
    fixed = {"model_family": "mlp", **paper.fixed, "num_iterations": problem.steps, "mlp_weights": problem.weights}
    title = f"Paper mode: {paper.description} ({res}x{res}, {problem.steps} steps)"
    report, grids = None, []
    for k, frame in enumerate(frames):
        grid = grid_from_arrays(paper.x_name, paper.y_name, frame.x_values, frame.y_values, frame.verdicts,
                                frame.summary["score"], final_loss=frame.summary["loss_last"], fixed=fixed,
                                name=f"paper-{paper.name}")
        grids.append(grid)
        label = k if frame.index is None else frame.index
        target = out if k == 0 else out / f"frame_{label:02d}"
        curve_at = lambda i, j, frame=frame: pixel_curve(paper, problem, frame, i, j)  # noqa: E731
        written = write_report(grid, target, title=title if k == 0 else f"{title}, frame {label}",
                               curve_at=curve_at, zoom_k=0, extra=extra if k == 0 else None)
        report = written if k == 0 else report
    if gif:
        captions = [f"{paper.name} frame {'-' if f['frame'] is None else f['frame']}: "
                    f"x {f['window'][0]:.10g}..{f['window'][1]:.10g}, y {f['window'][2]:.10g}..{f['window'][3]:.10g}"
                    f"\nD (paper method) {_fmt(f.get('paper_dimension'))}, D (ours) {_fmt(f['dimension'])}"
                    for f in per_frame]
        write_zoom_gif(grids, captions, out / "zoom.gif")
    print_summary(report, out)  # the first frame; the others are in the per-frame table
    return report


def print_frames(paper: PaperConfig, per_frame: list[dict]) -> None:
    table = Table(title=f"{paper.name}: D per frame")
    for col in ("frame", "window (log10)", "width", "trainable", "edges", "D (paper method)", "D (ours)", "s"):
        table.add_column(col)
    for k, f in enumerate(per_frame):
        x0, x1, y0, y1 = f["window"]
        ours = _fmt(f["dimension"]) + ("" if f["uncertainty"] is None else f" ± {_fmt(f['uncertainty'])}")
        table.add_row(str(k if f["frame"] is None else f["frame"]), f"{(x0 + x1) / 2:.10g}, {(y0 + y1) / 2:.10g}",
                      f"{x1 - x0:.3g}", str(f["counts"]["trainable"]), str(f["n_edge_pixels"]),
                      _fmt(f.get("paper_dimension")), ours, f"{f['runtime_s']:.1f}")
    console.print(table)


def _fmt(value) -> str:
    """report.json holds None where a number is undefined (NaN)."""
    return "-" if value is None or value != value else f"{value:.3f}"


# ----------------------------------------------------------------------------------------------
# Sweep YAML (the same grid as an ordinary sweep for `fractal-llm local`)

def sweep_config(paper: PaperConfig, window, res: int, steps: int, offset_mode: str | None = None,
                 weights: str = "notebook") -> dict:
    """The frame as a grid sweep. init-offset: x = init_offset, y = lr_input, with lr_output = -1 (tied)."""

    x0, x1, y0, y1 = window
    x_values, y_values = (10.0 ** x0, 10.0 ** x1, res), (10.0 ** y0, 10.0 ** y1, res)
    fixed = {"model_family": "mlp", **paper.fixed, "num_iterations": steps, "mlp_weights": weights}
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
    parser.add_argument("--frames", default=None, metavar="A:B[:STEP]",
                        help="frames A..B of CONFIG's zoom sequence (default: the published tile's frame)")
    parser.add_argument("--window", default=None, help="x0:x1:y0:y1 in log10 units: a free frame instead")
    parser.add_argument("--steps", type=int, default=-1, help="GD steps (default 500)")
    parser.add_argument("--zoom", type=int, default=0, help="re-centred zoom frames after the first (not with --frames)")
    parser.add_argument("--weights", choices=("notebook", "torch"), default="notebook",
                        help="initial weights and data: the notebook's JAX draws (default) or torch's from seed 0")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (float64 on both)")
    parser.add_argument("--out", default=None, help="output directory (default paper-CONFIG)")
    parser.add_argument("--chunk", type=int, default=0, help="grid points per task (default 0: automatic)")
    parser.add_argument("--workers", type=int, default=0,
                        help="CPU: single-threaded worker processes (default 0: one per core; 1: this process)")
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
    paper, plan = check_args(args)
    steps = mlp.DEFAULT_STEPS if args.steps == -1 else args.steps
    try:
        problem = replace(mlp.problem_of(train_config(paper, steps, args.offset_mode, args.weights)),
                          device=args.device)
    except ConfigError as exc:
        raise PaperError(str(exc)) from None
    if args.write_yaml:
        cfg = sweep_config(paper, plan[0][1], args.res, steps, args.offset_mode, args.weights)
        Path(args.write_yaml).write_text(dump_sweep_yaml(cfg, header=f"fractal-llm paper {paper.name}"))
        console.print(f"sweep: {args.write_yaml} ({args.res}x{args.res} points)")
        return 0
    workers = 1 if args.device == "cuda" else args.workers or usable_cores()
    if workers == 1:
        torch.set_num_threads(1)  # the same single-threaded arithmetic as a worker process
    out = Path(args.out or f"paper-{paper.name}")
    start = time.perf_counter()
    with mlp.worker_pool(workers) as pool:
        if pool is not None:
            console.print(f"{workers} worker processes ready", highlight=False)
        frames = [run_frame(paper, problem, window, args.res, args.chunk, pool, label=f"frame {k}", index=k)
                  for k, window in plan]
        for k in range(1, args.zoom + 1):
            nxt = zoom_window(frames[-1])
            if nxt is None:
                console.print(f"[yellow]frame {k - 1} has no boundary: zoom stops at {k} frame(s)[/]")
                break
            frames.append(run_frame(paper, problem, nxt, args.res, args.chunk, pool, label=f"zoom frame {k}"))
    report = write_outputs(paper, frames, out, problem, args.res, workers, gif=args.frames is not None)
    print_frames(paper, report["zoom_frames"])
    info = report["paper"]
    used = [f for f in info["pooled_frames"] if f is not None]
    where = f"frames {used[0]}..{used[-1]}" if used else f"{len(frames)} free frame(s)"
    console.print(f"paper-method D, one median over the local slopes of {where}: "
                  f"{_fmt(info['pooled_paper_dimension'])} (published {paper.paper_dimension}, 4096x4096 frames); "
                  f"{time.perf_counter() - start:.1f} s; report: {out / 'report.md'}")
    console.print(f"our window-fit estimator, median over the frames: {_fmt(report['zoom_median_dimension'])} "
                  "(a different estimator: not comparable with the published value)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
