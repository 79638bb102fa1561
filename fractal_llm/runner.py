"""`fractal-llm local FILE`: run a sweep YAML's grid on this machine, no W&B server needed.

The grid is expanded exactly as W&B does (sweep.expand_grid). Each point ends as one JSON record in DIR,
named by its axis values, so re-running the same command runs only the points without a finished record
(`error` records are retried). Points run in N long-lived worker processes (gpt: one per visible GPU, else
one single-threaded worker per core, runner.default_workers); a worker imports the train module once, so its
base-model and tokenized-data caches serve all of its points. mlp-family points run batched
(fractal_llm.mlp.train_many) in chunks of --mlp-chunk points, one single-threaded worker per core. A single
worker runs in this process.

W&B: the runner never uses an agent (agents need a server). run_point logs each gpt point as a W&B run in
WANDB_MODE, which defaults to "offline" here (files under DIR/wandb/, upload with `wandb sync`);
`--wandb disabled` skips W&B (~0.05-0.5 s per point). mlp points write records only.
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fractal_llm import paths
from fractal_llm.paths import atomic_write_text
from fractal_llm.config import ConfigError, TrainConfig
from fractal_llm.pool import WorkerPool, detect_local_gpus, usable_cores
from fractal_llm.records import error_record, file_name, record_name, read_record, record_from_result, write_record
from fractal_llm.refine import (ADAPTIVE_FILE, DEFAULT_MARGIN, LEVEL0_POINTS, RefineError, RefinePlan, current_level,
                                fill, points_for_level)
from fractal_llm.sweep import SweepError, SweepSpec, axis_point, dump_sweep_yaml, expand_grid, load_sweep
from fractal_llm.verdict import VERDICTS, count_verdicts

PLAIN_PROGRESS_S = 10.0  # seconds between progress lines when stdout is not a terminal
DEFAULT_MLP_CHUNK = 512  # mlp points per train_many call: big enough to batch well, small enough for progress


@dataclass
class Task:
    """One unit of work for a worker: one gpt point, or a chunk of mlp points trained together."""
    family: str
    names: list[str]
    params: list[dict]


# ---------------------------------------------------------------------------------------------- planning

def point_names(spec: SweepSpec, points: list[dict]) -> list[str]:
    return [record_name(axis_point(spec, p)) for p in points]


def existing_verdict(out_dir: Path, name: str, console: Console) -> str | None:
    """The verdict of the point's record in out_dir, or None if it has none."""
    path = out_dir / file_name(name)
    if not path.exists():
        return None
    try:
        return read_record(path).verdict
    except (ValueError, TypeError, KeyError) as e:  # unreadable record: say so and run the point again
        console.print(f"[yellow]warning:[/yellow] {path}: unreadable record ({e}); running the point again")
        return None


def check_out_dir(out_dir: Path, spec: SweepSpec) -> None:
    """Records in out_dir are reused by name (= axis values), so the fixed values must be the same sweep's."""
    previous_path = out_dir / "sweep.yaml"
    if not previous_path.exists():
        return
    previous = load_sweep(previous_path)
    if previous.fixed != spec.fixed:
        changed = sorted(k for k in set(previous.fixed) | set(spec.fixed)
                         if previous.fixed.get(k, "<unset>") != spec.fixed.get(k, "<unset>"))
        detail = ", ".join(f"{k}: {previous.fixed.get(k, '<unset>')!r} -> {spec.fixed.get(k, '<unset>')!r}"
                           for k in changed)
        raise SweepError(f"--out {out_dir}: holds records of a sweep with other fixed values ({detail}); "
                         "its records would be reused for the wrong config. Use another --out or remove the dir.")


def preflight_sweep(spec: SweepSpec) -> None:
    """The train preflight (model source, dataset) once on the sweep's fixed values, before any point: a
    missing model directory is one clear error, not an error record per point."""
    from fractal_llm.train import preflight
    preflight(TrainConfig(**expand_grid(spec)[0]))


def cpu_workers(requested: int, cores: int) -> tuple[int, int]:
    """(workers, torch threads each) on the CPU: workers x threads never exceeds the cores. Two CPU-busy
    processes with torch's default threads (one per core each) slowed each other 5.8x on a 2-core machine,
    where a fair share is 2x (benchmarks/bench_threads.py)."""
    workers = max(1, min(requested, cores))
    return workers, max(1, cores // workers)


def model_family(points: list[dict]) -> str:
    return TrainConfig(**points[0]).model_family if points else "gpt"


def make_tasks(points: list[dict], names: list[str], mlp_chunk: int) -> list[Task]:
    if model_family(points) == "mlp":
        return [Task("mlp", names[i:i + mlp_chunk], points[i:i + mlp_chunk]) for i in range(0, len(points), mlp_chunk)]
    return [Task("gpt", [n], [p]) for n, p in zip(names, points)]


def default_workers(spec: SweepSpec, family: str) -> int:
    """mlp: one single-threaded worker per core (its points are tiny float64 CPU work; see mlp.worker_pool).
    gpt: one worker per visible CUDA device; on the CPU also one single-threaded worker per core, which
    measured faster than one worker with a thread per core (1.80 against 2.01 s per point, 24 points of
    sweeps/smoke.yaml on 2 idle cores, start-up included: benchmarks/bench_threads.py)."""
    gpus = detect_local_gpus() if family == "gpt" and spec.fixed.get("device") != "cpu" else []
    return len(gpus) or usable_cores()


def point_wandb_mode(requested: str | None, out_dir: Path) -> str:
    """The W&B mode of each point's run: `requested`, else $WANDB_MODE, else offline. One W&B run per point:
    its console summary is kept out of the progress bar, and its files go with the records."""
    wandb_mode = requested or os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    if wandb_mode != "disabled" and "WANDB_DIR" not in os.environ:
        out_dir.mkdir(parents=True, exist_ok=True)
        os.environ["WANDB_DIR"] = str(out_dir)
    return wandb_mode


# ---------------------------------------------------------------------------------------------- running a task

def run_task(task: Task, out_dir: Path, wandb_mode: str) -> list[tuple[str, str]]:
    """Run one task, write its record(s); returns (name, verdict) per point. A point's failure is an error
    record, never an exception, so one bad point cannot stop the others."""
    if task.family == "mlp":
        return _run_mlp_chunk(task, out_dir)
    from fractal_llm import point, train
    name, params = task.names[0], task.params[0]
    config = TrainConfig(**params)
    t0 = time.perf_counter()
    try:
        record = point.run_point(train.train, config, name, out_dir, wandb_mode=wandb_mode)
    except Exception as exc:  # run_point records its own failures; this catches failures around it (W&B init...)
        record = error_record(config.resolved().to_dict(), name, exc, time.perf_counter() - t0)
        write_record(record, out_dir)
    return [(name, record.verdict)]


def _run_mlp_chunk(task: Task, out_dir: Path) -> list[tuple[str, str]]:
    from fractal_llm import mlp
    configs = [TrainConfig(**p) for p in task.params]
    t0 = time.perf_counter()
    try:
        results = mlp.train_many(configs)
    except Exception as exc:  # the whole chunk failed: every point of it gets the error, to retry next time
        elapsed = time.perf_counter() - t0
        records = [error_record(c.resolved().to_dict(), n, exc, elapsed) for c, n in zip(configs, task.names)]
    else:
        records = [record_from_result(r, n) for r, n in zip(results, task.names)]
    for record in records:
        write_record(record, out_dir)
    return [(r.name, r.verdict) for r in records]


@dataclass
class TaskRunner:
    """run_task bound to the sweep's record directory and W&B mode (what a worker process calls)."""
    out_dir: str
    wandb_mode: str

    def __call__(self, task: Task) -> list[tuple[str, str]]:
        return run_task(task, Path(self.out_dir), self.wandb_mode)

    def lost(self, task: Task, exitcode: int) -> list[tuple[str, str]]:
        """A worker died running the task (e.g. killed for memory): its points become error records with
        their parameters, retried by the next run."""
        message = f"worker process died with exit code {exitcode} while running this point"
        for name, params in zip(task.names, task.params):
            write_record(error_record(params, name, message, 0.0), Path(self.out_dir))
        return [(name, "error") for name in task.names]


# ---------------------------------------------------------------------------------------------- progress + CLI

def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[counts]}"), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console)


def _counts_text(counts: dict) -> str:
    colours = {"trainable": "green", "not_trainable": "yellow", "diverged": "red", "error": "magenta"}
    return "  ".join(f"[{colours[v]}]{v} {counts[v]}[/{colours[v]}]" for v in VERDICTS)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-llm local",
                                     description="Run a sweep YAML's grid on this machine (no W&B server).")
    parser.add_argument("file", help="sweep YAML (checked first)")
    parser.add_argument("--workers", type=int,
                        help="worker processes (default: one per visible GPU, else one single-threaded worker "
                             "per core)")
    parser.add_argument("--out", help="record directory (default: <cache>/runs/<sweep name>)")
    parser.add_argument("--limit", type=int, help="run at most this many pending points (the rest stay pending)")
    parser.add_argument("--wandb", choices=("offline", "disabled", "online"),
                        help="W&B mode of each point's run (default: $WANDB_MODE, else offline)")
    parser.add_argument("--adaptive", action="store_true",
                        help="refine near the boundary instead of running every point (docs/design.md)")
    parser.add_argument("--levels", type=int,
                        help=f"--adaptive: level 0 runs every 2^LEVELS-th value of each axis (default: the most "
                             f"that leave level 0 {LEVEL0_POINTS} values per axis)")
    parser.add_argument("--margin", type=int, default=DEFAULT_MARGIN,
                        help=f"--adaptive: cells added around each mixed cell before the next level "
                             f"(default {DEFAULT_MARGIN})")
    parser.add_argument("--mlp-chunk", type=int, default=DEFAULT_MLP_CHUNK,
                        help=f"mlp-family points per batched train_many call (default {DEFAULT_MLP_CHUNK})")
    return parser


def main(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    console = Console()
    err = Console(stderr=True)
    for flag in ("workers", "limit", "mlp_chunk"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            err.print(f"[red]error:[/red] --{flag.replace('_', '-')}={value}: must be >= 1")
            return 2
    from fractal_llm.data import DatasetError
    try:
        spec = load_sweep(args.file)
        out_dir = Path(args.out) if args.out else paths.runs_dir() / spec.name
        check_out_dir(out_dir, spec)
        preflight_sweep(spec)
    except (SweepError, ConfigError, DatasetError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 2
    wandb_mode = point_wandb_mode(args.wandb, out_dir)
    if args.adaptive:
        try:
            x_name, xs, y_name, ys = lattice(spec)
            RefinePlan((len(ys), len(xs)), args.levels, args.margin)  # bad --levels/--margin: before any run
        except RefineError as e:
            err.print(f"[red]error:[/red] --levels/--margin: {e}", highlight=False, soft_wrap=True)
            return 2
        return run_adaptive(spec, out_dir, args.levels, args.margin, workers=args.workers, wandb_mode=wandb_mode,
                            mlp_chunk=args.mlp_chunk, console=console)
    return run_sweep(spec, out_dir, workers=args.workers, limit=args.limit, wandb_mode=wandb_mode,
                     mlp_chunk=args.mlp_chunk, console=console)


def run_sweep(spec: SweepSpec, out_dir: Path, workers: int | None = None, limit: int | None = None,
              wandb_mode: str = "offline", mlp_chunk: int = DEFAULT_MLP_CHUNK, console: Console | None = None) -> int:
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.yaml").write_text(dump_sweep_yaml(spec.raw))
    points = expand_grid(spec)
    names = point_names(spec, points)
    pending, done = [], []
    for point, name in zip(points, names):
        verdict = existing_verdict(out_dir, name, console)
        if verdict is not None and verdict != "error":
            done.append(verdict)
        else:
            pending.append((point, name))
    counts = count_verdicts(done)
    done_before = len(points) - len(pending)
    if limit is not None:
        pending = pending[:limit]
    stopped = _run_pending(spec, pending, counts, len(points), done_before, out_dir, workers, wandb_mode, mlp_chunk,
                           console, label=spec.name)
    if stopped:
        return 130
    return _finish(console, out_dir, names)


def lattice(spec: SweepSpec) -> tuple[str, list, str, list]:
    """(x name, x values ascending, y name, y values ascending): the full-resolution lattice refinement runs
    on, with the sweep's own (normalised) values, so its points get the names a full run gives them."""
    (x_name, xs), (y_name, ys) = spec.axes
    return x_name, sorted(xs), y_name, sorted(ys)


def lattice_names(spec: SweepSpec) -> dict[tuple[int, int], str]:
    """{(iy, ix): record name} over the lattice: the names a full run of the sweep gives its points."""
    x_name, xs, y_name, ys = lattice(spec)
    return {(iy, ix): record_name({x_name: x, y_name: y}) for iy, y in enumerate(ys) for ix, x in enumerate(xs)}


def run_adaptive(spec: SweepSpec, out_dir: Path, levels: int | None, margin: int, workers: int | None = None,
                 wandb_mode: str = "offline", mlp_chunk: int = DEFAULT_MLP_CHUNK,
                 console: Console | None = None) -> int:
    """`--adaptive`: refinement by levels (fractal_llm.refine) on the sweep's lattice, level after level with
    the same workers and records as a full run. A re-run starts at the level it stopped in; errors are
    retried by the next run."""
    console = console or Console()
    x_name, xs, y_name, ys = lattice(spec)
    plan = RefinePlan((len(ys), len(xs)), levels, margin)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "sweep.yaml").write_text(dump_sweep_yaml(spec.raw))
    atomic_write_text(out_dir / ADAPTIVE_FILE, yaml.safe_dump({"levels": plan.levels, "margin": plan.margin}))
    name_of = lattice_names(spec)
    known = {point: verdict for point, name in name_of.items()
             if (verdict := existing_verdict(out_dir, name, console)) is not None}
    start = current_level(plan, known)
    for level in range(start if start is not None else plan.levels + 1, plan.levels + 1):
        points = points_for_level(plan, level, known)
        pending = [({**spec.fixed, x_name: xs[ix], y_name: ys[iy]}, name_of[(iy, ix)]) for iy, ix in points]
        done = [v for v in known.values() if v != "error"]
        if _run_pending(spec, pending, count_verdicts(done), len(done) + len(pending), len(done), out_dir,
                        workers, wandb_mode, mlp_chunk, console, label=f"{spec.name} level {level}/{plan.levels}"):
            return 130
        for point in points:
            verdict = existing_verdict(out_dir, name_of[point], console)
            if verdict is not None:
                known[point] = verdict
    refined = fill(plan, known)
    runs = sum(1 for v in known.values() if v != "error")
    console.print(f"adaptive: {runs} of {plan.shape[0] * plan.shape[1]} lattice points run "
                  f"({runs / (plan.shape[0] * plan.shape[1]):.0%}), {int(refined.inferred.sum())} inferred, "
                  f"{int(refined.undecided.sum())} undecided", highlight=False)
    return _finish(console, out_dir, [name_of[p] for p in known])


def _run_pending(spec: SweepSpec, pending: list[tuple[dict, str]], counts: dict, total: int, done_before: int,
                 out_dir: Path, workers: int | None, wandb_mode: str, mlp_chunk: int, console: Console,
                 label: str) -> bool:
    """Run (point, name) pairs with the workers, a progress bar over `total`; True when Ctrl-C stopped it."""
    family = model_family([p for p, _ in pending])
    tasks = make_tasks([p for p, _ in pending], [n for _, n in pending], mlp_chunk)
    # More workers than tasks would idle; one worker runs in this process. (The default imports torch.)
    n_workers = min(workers or (default_workers(spec, family) if tasks else 1), max(1, len(tasks)))
    devices, threads = [], None
    if n_workers > 1:
        devices = detect_local_gpus() if spec.fixed.get("device") != "cpu" and family != "mlp" else []
        if not devices:
            n_workers, threads = cpu_workers(n_workers, usable_cores())
    console.print(f"{label}: {total} points, {done_before} already done, running {len(pending)} with "
                  f"{n_workers} worker(s); records in {out_dir}", highlight=False, soft_wrap=True)
    last_line = time.monotonic()
    try:
        with _progress(console) as progress:
            bar = progress.add_task(label, total=total, completed=done_before, counts=_counts_text(counts))
            for _name, verdict in _execute(tasks, n_workers, devices, threads, out_dir, wandb_mode):
                counts[verdict] += 1
                progress.update(bar, advance=1, counts=_counts_text(counts))
                if not console.is_terminal and time.monotonic() - last_line >= PLAIN_PROGRESS_S:
                    # nohup and tmux logs get no live bar: a plain line every few seconds instead
                    last_line = time.monotonic()
                    console.print(f"{label}: {sum(counts.values())}/{total}  {_counts_text(counts)}",
                                  highlight=False, soft_wrap=True)
    except KeyboardInterrupt:
        console.print(f"\n[yellow]stopped.[/yellow] {sum(counts.values())} of {total} points have records "
                      f"in {out_dir}; run the same command again to resume.", highlight=False, soft_wrap=True)
        return True
    return False


def _execute(tasks: list[Task], n_workers: int, devices: list[str], threads: int | None, out_dir: Path,
             wandb_mode: str):
    if not tasks:
        return
    if n_workers == 1:
        for task in tasks:  # in-process: the train module's caches live in this process
            yield from run_task(task, out_dir, wandb_mode)
        return
    runner = TaskRunner(str(out_dir), wandb_mode)
    try:
        with WorkerPool(runner, n_workers, devices or [None], threads, on_lost=runner.lost) as pool:
            for _index, finished in pool.map_unordered(tasks):
                yield from finished
    finally:
        for tmp in out_dir.glob(".tmp-*"):  # a worker stopped mid-write: its record never existed
            tmp.unlink(missing_ok=True)


def _finish(console: Console, out_dir: Path, names: list[str]) -> int:
    verdicts = [existing_verdict(out_dir, n, console) for n in names]
    counts = count_verdicts([v for v in verdicts if v is not None])
    errors, pending = counts["error"], verdicts.count(None)
    console.print(f"records: {out_dir}  ({_counts_text(counts)}{f'  pending {pending}' if pending else ''})",
                  soft_wrap=True)
    if errors:
        console.print(f"[magenta]{errors} point(s) ended in error[/magenta] (see their records' summary.error); "
                      "run the same command again to retry them.", soft_wrap=True)
        return 1
    if pending:
        console.print(f"{pending} point(s) not run yet (--limit); run the same command again to continue.",
                      soft_wrap=True)
    else:
        console.print(f"report: python reports/generate_report.py --local {out_dir}", highlight=False,
                      soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
