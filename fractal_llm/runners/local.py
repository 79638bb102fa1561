"""`fractal-llm local FILE`: run a sweep YAML's grid on this machine, no W&B server needed.

The grid is expanded exactly as W&B does (sweep.expand_grid). Each point ends as one JSON record in DIR,
named by its axis values, so re-running the same command runs only the points without a finished record
(`error` records are retried). Two runners on one DIR (two terminals, or two hosts on a shared
filesystem) split the points: each claims a point before running it (fractal_llm.runners.claims), and its last line
says how many points it ran. A claim whose heartbeat stops (its runner was killed) is taken over after
--claim-timeout seconds; SIGTERM (a scheduler's stop) releases this runner's claims, keeps its finished records
and exits 143. Points run in N long-lived worker processes (gpt: one per visible GPU, else
one single-threaded worker per core, runner.default_workers); a worker imports the train module once, so its
base-model and tokenized-data caches serve all of its points. mlp-family points run batched
(fractal_llm.paper.mlp.train_many) in chunks of --mlp-chunk points, one single-threaded worker per core. A single
worker runs in this process.

W&B: the runner never uses an agent (agents need a server). run_point logs each gpt point as a W&B run in
WANDB_MODE, which defaults to "offline" here (files under DIR/wandb/, upload with `wandb sync`);
`--wandb disabled` skips W&B (~0.05-0.5 s per point). mlp points write records only.
"""

import argparse
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from fractal_llm import paths
from fractal_llm.progress import LineClock

from fractal_llm.runners import claims
from fractal_llm.config import TrainConfig
from fractal_llm.errors import FractalLLMError
from fractal_llm.pool import WorkerPool, detect_local_gpus, usable_cores
from fractal_llm.records import (error_record, file_name, read_record, record_from_result, record_name, run_name,
                                 write_record)
from fractal_llm.refine.levels import (DEFAULT_MARGIN, LEVEL0_POINTS, RefinePlan, RefineSettings, fill, known_verdicts,
                                next_level, write_settings)
from fractal_llm.sweep import SweepError, SweepSpec, axis_point, dump_sweep_yaml, expand_grid, load_sweep
from fractal_llm.verdict import VERDICTS, count_verdicts

DEFAULT_MLP_CHUNK = 512  # mlp points per train_many call: big enough to batch well, small enough for progress
CLAIM_POLL_S = 2.0  # --adaptive: seconds between looks at the points another runner holds


class Outcome(NamedTuple):
    """What became of one point of a task."""
    name: str
    verdict: str | None  # None: another runner holds its claim and runs it
    ran: bool  # this process ran it (False: claimed by another runner, or finished by one meanwhile)


@dataclass
class Task:
    """One unit of work for a worker: one gpt point, or a chunk of mlp points trained together."""
    family: str
    names: list[str]
    params: list[dict]
    run_names: list[str] = field(default_factory=list)  # gpt: the W&B run's short name (records.run_name)


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


def make_tasks(points: list[dict], names: list[str], mlp_chunk: int, axes: list[tuple[str, list]] = ()) -> list[Task]:
    """The tasks of these points; `axes` (the map's, SweepSpec.axes) shorten a gpt run's W&B name."""
    if model_family(points) == "mlp":
        return [Task("mlp", names[i:i + mlp_chunk], points[i:i + mlp_chunk]) for i in range(0, len(points), mlp_chunk)]
    axes = dict(axes)
    return [Task("gpt", [n], [p], [run_name({k: p[k] for k in axes}, axes)]) for n, p in zip(names, points)]


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

def run_task(task: Task, out_dir: Path, wandb_mode: str,
             claim_timeout_s: float = claims.CLAIM_TIMEOUT_S) -> list[Outcome]:
    """Claim the task's points, run those this process got, write their records, release the claims; one
    Outcome per point. A point's failure is an error record, never an exception, so one bad point cannot
    stop the others."""
    outcomes, names, params = [], [], []
    try:
        for name, point in zip(task.names, task.params):
            if claims.try_claim(out_dir, name, claim_timeout_s) is not None:
                outcomes.append(Outcome(name, None, False))
                continue
            done = finished_verdict(out_dir, name)  # another runner finished it after this one looked
            if done is not None:
                claims.release(out_dir, name)
                outcomes.append(Outcome(name, done, False))
                continue
            names.append(name)
            params.append(point)
        if names:
            if task.family == "mlp":
                finished = _run_mlp_chunk(names, params, out_dir, wandb_mode)
            else:
                short = task.run_names[0] if task.run_names else None
                finished = _run_gpt_point(names, params, out_dir, wandb_mode, short)
            outcomes += [Outcome(name, verdict, True) for name, verdict in finished]
    finally:
        for name in names:
            claims.release(out_dir, name)
    return outcomes


def finished_verdict(out_dir: Path, name: str) -> str | None:
    """The verdict of the point's record if it has a finished one (not `error`), else None."""
    verdict = existing_verdict(out_dir, name, Console(stderr=True))
    return None if verdict == "error" else verdict


def _run_gpt_point(names: list[str], params: list[dict], out_dir: Path, wandb_mode: str,
                   short_name: str | None = None) -> list[tuple[str, str]]:
    from fractal_llm import train
    from fractal_llm.runners import point
    name, config = names[0], TrainConfig(**params[0])
    t0 = time.perf_counter()
    try:
        record = point.run_point(train.train, config, name, out_dir, wandb_mode=wandb_mode, run_name=short_name)
    except Exception as exc:  # run_point records its own failures; this catches failures around it (W&B init...)
        record = error_record(config.resolved().to_dict(), name, exc, time.perf_counter() - t0)
        write_record(record, out_dir)
    return [(name, record.verdict)]


def _run_mlp_chunk(names: list[str], params: list[dict], out_dir: Path, wandb_mode: str) -> list[tuple[str, str]]:
    from fractal_llm.paper import mlp
    configs = [TrainConfig(**p) for p in params]
    t0 = time.perf_counter()
    try:
        results = mlp.train_many(configs)
    except Exception as exc:  # the whole chunk failed: every point of it gets the error, to retry next time
        elapsed = time.perf_counter() - t0
        records = [error_record(c.resolved().to_dict(), n, exc, elapsed) for c, n in zip(configs, names)]
    else:
        records = [record_from_result(r, n) for r, n in zip(results, names)]
    for record in records:
        write_record(record, out_dir)
    return [(r.name, r.verdict) for r in records]


@dataclass
class TaskRunner:
    """run_task bound to the sweep's record directory and W&B mode (what a worker process calls)."""
    out_dir: str
    wandb_mode: str
    claim_timeout_s: float = claims.CLAIM_TIMEOUT_S

    def __call__(self, task: Task) -> list[Outcome]:
        return run_task(task, Path(self.out_dir), self.wandb_mode, self.claim_timeout_s)

    def lost(self, task: Task, exitcode: int) -> list[Outcome]:
        """A worker died running the task (e.g. killed for memory): the points it held become error records
        with their parameters, retried by the next run, and its claims are removed. Points another runner
        holds are left to it."""
        out_dir = Path(self.out_dir)
        message = f"worker process died with exit code {exitcode} while running this point"
        outcomes = []
        for name, params in zip(task.names, task.params):
            holder = claims.read_claim(claims.claim_path(out_dir, name))
            if holder is not None and not claims.is_stale(holder):
                outcomes.append(Outcome(name, None, False))
                continue
            claims.claim_path(out_dir, name).unlink(missing_ok=True)
            done = finished_verdict(out_dir, name)  # its record was written before the worker died
            if done is not None:
                outcomes.append(Outcome(name, done, True))
                continue
            write_record(error_record(params, name, message, 0.0), out_dir)
            outcomes.append(Outcome(name, "error", True))
        return outcomes


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
    parser.add_argument("--claim-timeout", type=float, default=claims.CLAIM_TIMEOUT_S, metavar="SECONDS",
                        help="another runner takes over this runner's points when their claims' heartbeat is "
                             "older than this, e.g. after a SIGKILL or a lost host "
                             f"(default {claims.CLAIM_TIMEOUT_S:g})")
    return parser


class RunnerError(FractalLLMError):
    """A bad `fractal-llm local` argument; raised before any point runs."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's stop, `kill`): raised in the main thread, so it ends the run as Ctrl-C does:
    workers stopped, claims released, finished records kept; the exit code is 143 instead of 130."""


def on_sigterm(signum, frame) -> None:
    raise Terminated()


def stop_code(stop: KeyboardInterrupt) -> int:
    return 128 + signal.SIGTERM if isinstance(stop, Terminated) else 130


def make_out_dir(out_dir: Path) -> None:
    """The record directory, created and writable, before any work (a bad --out is one error line)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunnerError(f"--out {out_dir}: cannot create the record directory ({e.strerror})") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise RunnerError(f"--out {out_dir}: the record directory is not writable")


def main(argv: list[str]) -> int:
    """`fractal-llm local`; bad input raises (fractal_llm.cli prints it: one line, exit 2)."""
    args = _build_parser().parse_args(argv)
    console = Console()
    for flag in ("workers", "limit", "mlp_chunk"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise RunnerError(f"--{flag.replace('_', '-')}={value}: must be >= 1")
    if not args.claim_timeout > 0:
        raise RunnerError(f"--claim-timeout={args.claim_timeout:g}: must be > 0 seconds")
    spec = load_sweep(args.file)
    out_dir = Path(args.out) if args.out else paths.runs_dir() / spec.name
    check_out_dir(out_dir, spec)
    make_out_dir(out_dir)
    if args.adaptive and len(spec.axes) != 2:
        raise RunnerError(f"--adaptive: {spec.name} has one axis (a transect); refinement needs a map's two axes")
    if args.adaptive:
        _, xs, _, ys = lattice(spec)
        RefinePlan((len(ys), len(xs)), args.levels, args.margin)  # bad --levels/--margin: before any run
    preflight_sweep(spec)
    wandb_mode = point_wandb_mode(args.wandb, out_dir)
    signal.signal(signal.SIGTERM, on_sigterm)  # from here on this runner holds claims: release them first
    if args.adaptive:
        return run_adaptive(spec, out_dir, args.levels, args.margin, workers=args.workers, wandb_mode=wandb_mode,
                            mlp_chunk=args.mlp_chunk, console=console, claim_timeout_s=args.claim_timeout)
    return run_sweep(spec, out_dir, workers=args.workers, limit=args.limit, wandb_mode=wandb_mode,
                     mlp_chunk=args.mlp_chunk, console=console, claim_timeout_s=args.claim_timeout)


@dataclass
class Ran:
    """What one _run_pending call did."""
    stopped: int = 0  # the exit code after Ctrl-C (130) or SIGTERM (143)
    ran: int = 0  # points this process ran
    busy: list[str] = field(default_factory=list)  # the points another runner holds (not run here)


def run_sweep(spec: SweepSpec, out_dir: Path, workers: int | None = None, limit: int | None = None,
              wandb_mode: str = "offline", mlp_chunk: int = DEFAULT_MLP_CHUNK, console: Console | None = None,
              claim_timeout_s: float = claims.CLAIM_TIMEOUT_S) -> int:
    console = console or Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    paths.atomic_write_text(out_dir / "sweep.yaml", dump_sweep_yaml(spec.raw))  # a second runner may read it
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
    result = _run_pending(spec, pending, counts, len(points), done_before, out_dir, workers, wandb_mode, mlp_chunk,
                          console, label=spec.name, claim_timeout_s=claim_timeout_s)
    if result.stopped:
        console.print(f"ran {result.ran} of {len(names)} points", highlight=False)
        return result.stopped
    return _finish(console, out_dir, names, result.ran)


def lattice(spec: SweepSpec) -> tuple[str, list, str, list]:
    """(x name, x values ascending, y name, y values ascending): the full-resolution lattice refinement runs
    on, with the sweep's own (normalised) values, so its points get the names a full run gives them."""
    (x_name, xs), (y_name, ys) = spec.axes
    return x_name, sorted(xs), y_name, sorted(ys)


def lattice_names(spec: SweepSpec) -> dict[tuple[int, int], str]:
    """{(iy, ix): record name} over the lattice: the names a full run of the sweep gives its points."""
    x_name, xs, y_name, ys = lattice(spec)
    return {(iy, ix): record_name({x_name: x, y_name: y}) for iy, y in enumerate(ys) for ix, x in enumerate(xs)}


def lattice_known(out_dir: Path, plan: RefinePlan, name_of: dict, console: Console) -> dict:
    """The known verdicts (refine.known_verdicts) of the records in out_dir, placed on the lattice."""
    verdicts = np.full(plan.shape, "missing", dtype=object)
    for point, name in name_of.items():
        verdicts[point] = existing_verdict(out_dir, name, console) or "missing"
    return known_verdicts(verdicts)


def run_adaptive(spec: SweepSpec, out_dir: Path, levels: int | None, margin: int, workers: int | None = None,
                 wandb_mode: str = "offline", mlp_chunk: int = DEFAULT_MLP_CHUNK,
                 console: Console | None = None, claim_timeout_s: float = claims.CLAIM_TIMEOUT_S) -> int:
    """`--adaptive`: refinement by levels (fractal_llm.refine.levels.next_level) on the sweep's lattice, level after
    level with the same workers and records as a full run. A re-run starts at the level it stopped in; errors
    are retried by the next run. Points of a level that another runner holds are waited for (their verdicts
    decide the next level), and run here when their runner died without a record."""
    console = console or Console()
    x_name, xs, y_name, ys = lattice(spec)
    plan = RefinePlan((len(ys), len(xs)), levels, margin)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths.atomic_write_text(out_dir / "sweep.yaml", dump_sweep_yaml(spec.raw))
    write_settings(out_dir, RefineSettings(plan.levels, plan.margin, spec.name))
    name_of = lattice_names(spec)
    known = lattice_known(out_dir, plan, name_of, console)
    ran, level = 0, 0
    while (step := next_level(plan, known, start=level)) is not None:
        label = f"{spec.name} level {step.level}/{plan.levels}"
        points = step.points
        while points:
            pending = [({**spec.fixed, x_name: xs[ix], y_name: ys[iy]}, name_of[(iy, ix)]) for iy, ix in points]
            done = [v for v in known.values() if v != "error"]
            result = _run_pending(spec, pending, count_verdicts(done), len(done) + len(pending), len(done), out_dir,
                                  workers, wandb_mode, mlp_chunk, console, label=label,
                                  claim_timeout_s=claim_timeout_s)
            ran += result.ran
            if result.stopped:
                console.print(f"ran {ran} of {len(name_of)} points", highlight=False)
                return result.stopped
            busy = [p for p in points if name_of[p] in result.busy]
            try:
                _wait_for_claims(out_dir, [name_of[p] for p in busy], label, console)
            except KeyboardInterrupt as stop:
                console.print(f"\n[yellow]stopped.[/yellow] run the same command again to resume.\n"
                              f"ran {ran} of {len(name_of)} points", highlight=False)
                return stop_code(stop)
            # a point whose runner let go of it with no record (it died): run here
            points = [p for p in busy if existing_verdict(out_dir, name_of[p], console) is None]
        known = lattice_known(out_dir, plan, name_of, console)
        level = step.level + 1
    refined = fill(plan, known)
    runs = sum(1 for v in known.values() if v != "error")
    console.print(f"adaptive: {runs} of {plan.shape[0] * plan.shape[1]} lattice points run "
                  f"({runs / (plan.shape[0] * plan.shape[1]):.0%}), {int(refined.inferred.sum())} inferred, "
                  f"{int(refined.undecided.sum())} undecided", highlight=False)
    return _finish(console, out_dir, [name_of[p] for p in known], ran, of=len(name_of))


def _wait_for_claims(out_dir: Path, names: list[str], label: str, console: Console) -> None:
    """Block until no live claim of another runner holds any of these points (released, its process died, or
    its heartbeat older than the claim's timeout)."""
    clock = LineClock()
    while True:
        held = {name: claim for name in names
                if (claim := claims.read_claim(claims.claim_path(out_dir, name))) is not None
                and not claims.is_stale(claim)}
        if not held:
            return
        if clock.due():
            console.print(f"{label}: waiting for {len(held)} point(s) another runner holds "
                          f"({_holders(out_dir, list(held))})", highlight=False, soft_wrap=True)
        time.sleep(CLAIM_POLL_S)


def _run_pending(spec: SweepSpec, pending: list[tuple[dict, str]], counts: dict, total: int, done_before: int,
                 out_dir: Path, workers: int | None, wandb_mode: str, mlp_chunk: int, console: Console,
                 label: str, claim_timeout_s: float = claims.CLAIM_TIMEOUT_S) -> Ran:
    """Run (point, name) pairs with the workers, a progress bar over `total` (plain lines when the console is
    not a terminal). Points another runner holds are skipped: Ran.busy."""
    family = model_family([p for p, _ in pending])
    tasks = make_tasks([p for p, _ in pending], [n for _, n in pending], mlp_chunk, spec.axes)
    # More workers than tasks would idle; one worker runs in this process. (The default imports torch.)
    n_workers = min(workers or (default_workers(spec, family) if tasks else 1), max(1, len(tasks)))
    devices, threads = [], None
    if n_workers > 1:
        devices = detect_local_gpus() if spec.fixed.get("device") != "cpu" and family != "mlp" else []
        if not devices:
            n_workers, threads = cpu_workers(n_workers, usable_cores())
    console.print(f"{label}: {total} points, {done_before} already done, running {len(pending)} with "
                  f"{n_workers} worker(s); records in {out_dir}", highlight=False, soft_wrap=True)
    result = Ran()
    progress = RunProgress(console, label, total, done_before, counts)
    try:
        with progress:
            for outcome in _execute(tasks, n_workers, devices, threads, out_dir, wandb_mode, claim_timeout_s):
                result.ran += outcome.ran
                if outcome.verdict is None:
                    result.busy.append(outcome.name)
                progress.advance(outcome.verdict)
    except KeyboardInterrupt as stop:
        console.print(f"\n[yellow]stopped.[/yellow] {sum(counts.values())} of {total} points have records "
                      f"in {out_dir}; run the same command again to resume.", highlight=False, soft_wrap=True)
        result.stopped = stop_code(stop)
    if result.busy:
        console.print(f"{label}: {len(result.busy)} point(s) left to the runner(s) that hold them "
                      f"({_holders(out_dir, result.busy)}); claims in {out_dir}", highlight=False, soft_wrap=True)
    return result


def _holders(out_dir: Path, names: list[str]) -> str:
    """Who holds these points' claims: 'pid P on HOST, AGE ago' each (a claim of a dead process on another
    host is only freed by deleting its file)."""
    held = [claims.read_claim(claims.claim_path(out_dir, name)) for name in names]
    return "; ".join(sorted({claim.describe() for claim in held if claim is not None})) or "released since"


class RunProgress:
    """The progress of _run_pending: rich's live bar on a terminal; elsewhere (nohup, a tmux log, CI) a plain
    line every progress.PLAIN_LINE_S seconds and one at the end. rich's bar on a console that is not a terminal
    is drawn once, at the end, squeezed into the default 80 columns: `16/… 0:0… ETA 0:00…`."""

    def __init__(self, console: Console, label: str, total: int, done_before: int, counts: dict):
        self.console, self.label, self.total, self.counts = console, label, total, counts
        self.done, self.shown = done_before, None
        self.live = _progress(console) if console.is_terminal else None
        self.clock = LineClock(start_now=True)

    def __enter__(self) -> "RunProgress":
        if self.live is not None:
            self.live.start()
            self.bar = self.live.add_task(self.label, total=self.total, completed=self.done,
                                          counts=_counts_text(self.counts))
        return self

    def advance(self, verdict: str | None) -> None:
        self.done += 1
        if verdict is not None:
            self.counts[verdict] += 1
        if self.live is not None:
            self.live.update(self.bar, advance=1, counts=_counts_text(self.counts))
        elif self.clock.due():
            self._line()

    def _line(self) -> None:
        self.shown = self.done
        self.console.print(f"{self.label}: {self.done}/{self.total}  {_counts_text(self.counts)}", highlight=False,
                           soft_wrap=True)

    def __exit__(self, exc_type, *exc) -> None:
        if self.live is not None:
            self.live.stop()
        elif exc_type is None and self.shown != self.done:
            self._line()  # the last count, whole


def _execute(tasks: list[Task], n_workers: int, devices: list[str], threads: int | None, out_dir: Path,
             wandb_mode: str, claim_timeout_s: float = claims.CLAIM_TIMEOUT_S):
    if not tasks:
        return
    if n_workers == 1:
        for task in tasks:  # in-process: the train module's caches live in this process
            yield from run_task(task, out_dir, wandb_mode, claim_timeout_s)
        return
    runner = TaskRunner(str(out_dir), wandb_mode, claim_timeout_s)
    try:
        with WorkerPool(runner, n_workers, devices or [None], threads, on_lost=runner.lost) as pool:
            for _index, finished in pool.map_unordered(tasks):
                yield from finished
    finally:
        # A worker stopped mid-write: its record never existed. Another runner's temp files are its own.
        if not claims.live_claims(out_dir):
            for tmp in out_dir.glob(".tmp-*"):
                tmp.unlink(missing_ok=True)


def _finish(console: Console, out_dir: Path, names: list[str], ran: int, of: int | None = None) -> int:
    """The records line, what is left to do, and last `ran N of M points` (M: the sweep's points)."""
    verdicts = [existing_verdict(out_dir, n, console) for n in names]
    counts = count_verdicts([v for v in verdicts if v is not None])
    errors, pending = counts["error"], verdicts.count(None)
    console.print(f"records: {out_dir}  ({_counts_text(counts)}{f'  pending {pending}' if pending else ''})",
                  soft_wrap=True)
    if errors:
        console.print(f"[magenta]{errors} point(s) ended in error[/magenta] (see their records' summary.error); "
                      "run the same command again to retry them.", soft_wrap=True)
    elif pending:
        console.print(f"{pending} point(s) not run yet (--limit, or another runner holds them); run the same "
                      "command again to continue.", soft_wrap=True)
    else:
        console.print(f"report: fractal-llm report --local {out_dir}", highlight=False, soft_wrap=True)
    console.print(f"ran {ran} of {len(names) if of is None else of} points", highlight=False)
    return 1 if errors else 0


if __name__ == "__main__":
    from fractal_llm.cli import run_as_script
    sys.exit(run_as_script("local"))
