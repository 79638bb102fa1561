"""`fractal-llm report`: read the sources, write the report (report.py), compare, log it to W&B, --watch.

    fractal-llm report ENTITY/PROJECT/SWEEP_ID [...] [--local DIR ...] [--out DIR] [--zoom K] [--zoom-res N]
        [--compare E/P/ID | --compare-local DIR] [--wandb] [--watch [SECONDS]]

Several sources merge into one map: the first one's sweep defines it, the others' runs are placed on it by
value (a refill sweep's points are points of its parent). reports/generate_report.py runs the same command.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from rich.console import Console

from fractal_llm import paths
from fractal_llm.report.compare import compare_reports
from fractal_llm.report.grid import Grid, GridError, apply_refinement, build_grid, build_line, sweep_axes
from fractal_llm.report.line_report import LineReportError, print_line_summary, write_line_report
from fractal_llm.refine.levels import RefineSettings
from fractal_llm.report.writer import point_table, print_summary, write_report
from fractal_llm.report.sources import (Loaded, SourceError, SourcePoller, add_api_arguments, api_settings,
                                 load_sources)
from fractal_llm.sweep import load_sweep, sweep_map
from fractal_llm.verdict import OUTCOMES

DEFAULT_WATCH_S = 60.0  # --watch without SECONDS: a 4096-run sweep of minute-long runs changes every few s
# --watch --wandb: at most one artifact version per this many minutes (and the last state when it ends). A
# refresh every minute made ~60 versions an hour, each holding the whole report directory; 10 min keeps a
# 10-hour sweep to ~60 versions.
DEFAULT_WANDB_EVERY_MIN = 10.0
console = Console()


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-llm report",
                                     description="Boundary images and fractal dimension of a sweep's map "
                                                 "(W&B sweeps and/or local runner directories).")
    parser.add_argument("sweeps", nargs="*", metavar="ENTITY/PROJECT/SWEEP_ID",
                        help="W&B sweeps, merged into one map: the first one's sweep defines it (give the "
                             "original sweep first, then its refill sweeps)")
    parser.add_argument("--local", action="append", default=[], metavar="DIR",
                        help="local runner directory (sweep.yaml + records); repeatable, merged")
    parser.add_argument("--out", help="output directory (default reports/out/<sweep name>)")
    parser.add_argument("--title", help="report title (default: the sweep name)")
    parser.add_argument("--zoom", type=int, default=3, metavar="K", help="zoom boxes to propose (0: none)")
    parser.add_argument("--zoom-res", type=int, default=16, metavar="N", help="points per axis of a zoom sweep")
    parser.add_argument("--compare", action="append", default=[], metavar="ENTITY/PROJECT/SWEEP_ID",
                        help="second sweep over the same axes to compare with")
    parser.add_argument("--compare-local", action="append", default=[], metavar="DIR",
                        help="second sweep as a local directory")
    parser.add_argument("--labels", nargs=2, metavar=("A", "B"), help="names of the two sweeps in a comparison")
    parser.add_argument("--wandb", action="store_true",
                        help="log the report to W&B: a run (job_type report) with the report directory and "
                             "the table of points as an artifact of type `report`, and a W&B Report (online: "
                             "the boundary, the runs by verdict, neighbours' loss curves, the dimension)")
    parser.add_argument("--lattice", metavar="FILE",
                        help="the full-resolution sweep YAML whose axes define the map (for `fractal-llm refine` "
                             "level sweeps, which list only their own points)")
    parser.add_argument("--allow-mixed-base", action="store_true",
                        help="draw runs of different base models or datasets (e.g. two versions of a `latest` "
                             "artifact) as one map")
    parser.add_argument("--wandb-project", help="project of the report run (default: the sweep's)")
    parser.add_argument("--watch", type=float, nargs="?", const=DEFAULT_WATCH_S, metavar="SECONDS",
                        help=f"re-pull every SECONDS (default {DEFAULT_WATCH_S:g}) and rewrite the report until "
                             "Ctrl-C; W&B sweeps: only runs updated since the last pull; with --wandb, a new "
                             "version of the report artifact when points changed, at most every --wandb-every "
                             "minutes, and the last state when it ends")
    parser.add_argument("--wandb-every", type=float, default=DEFAULT_WANDB_EVERY_MIN, metavar="MINUTES",
                        help=f"--watch --wandb: minutes between artifact versions at most (default "
                             f"{DEFAULT_WANDB_EVERY_MIN:g}; 0: every refresh where points changed)")
    parser.add_argument("--sequence", metavar="DIR", help="one report over a `fractal-llm zoom` directory "
                                                          "(fractal_llm/report/sequence.py; with --out only)")
    add_api_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `fractal-llm report` and reports/generate_report.py: 0 on success, 2 on bad input
    (a bad source, a run that does not fit the grid, sweeps that do not compare), with the message only."""
    if argv and "--sequence" in argv:  # one report over a `fractal-llm zoom` sequence
        from fractal_llm.report.sequence import main as sequence_main
        return sequence_main(argv)
    try:
        run(argv)
    except (SourceError, GridError, LineReportError, FileNotFoundError) as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", markup=True, highlight=False, soft_wrap=True)
        return 2
    return 0


def run(argv: list[str] | None = None, api=None, refreshes: int | None = None) -> dict:
    """Parse argv, read the sources, write the report (and comparison, W&B run); return the report dict.
    `api` replaces wandb.Api() (tests pass a fake); `refreshes` ends --watch after that many (tests)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.sweeps and not args.local:
        parser.error("give at least one source: ENTITY/PROJECT/SWEEP_ID or --local DIR")
    if args.zoom < 0 or args.zoom_res < 2:
        parser.error(f"--zoom={args.zoom} must be >= 0 and --zoom-res={args.zoom_res} >= 2")
    if args.watch is not None and (args.watch <= 0 or args.compare or args.compare_local):
        parser.error(f"--watch={args.watch:g}: must be > 0 seconds, and draws one map: use --compare and "
                     "--compare-local without it")
    if not args.wandb_every >= 0:
        parser.error(f"--wandb-every={args.wandb_every:g}: must be >= 0 minutes")
    poller = SourcePoller(args.sweeps, args.local, api=api, settings=api_settings(args, parser), console=console)
    if args.watch is not None:
        return watch(args, poller, refreshes)
    loaded = poller.pull()
    out_dir = Path(args.out) if args.out else Path("reports") / "out" / loaded.name
    if is_transect(loaded.sweep_config):
        return transect_report(args, loaded, out_dir)
    grid, report = report_of(args, loaded, out_dir)
    print_summary(report, out_dir)
    if args.compare or args.compare_local:
        other = load_sources(args.compare, args.compare_local, api=poller.api, settings=poller.settings)
        grid_b = map_of(other, other.sweep_config, args.allow_mixed_base)
        labels = tuple(args.labels) if args.labels else (loaded.name, other.name)
        if labels[0] == labels[1]:
            labels = (f"{labels[0]} (a)", f"{labels[1]} (b)")
        report["compare"] = compare_reports(grid, grid_b, out_dir / "compare", labels)
    if args.wandb:
        wandb_report = WandbReport(loaded, project=args.wandb_project)
        wandb_report.log(report, out_dir, grid)
        console.print(f"W&B Report: {wandb_report.publish(report, grid)}", highlight=False, soft_wrap=True)
        console.print(f"W&B report run: {wandb_report.finish()}", soft_wrap=True)
    return report


def is_transect(sweep_config: dict) -> bool:
    return len(sweep_axes(sweep_config)[0]) == 1


def transect_report(args, loaded: Loaded, out_dir: Path) -> dict:
    """A sweep with one axis (`fractal-llm transect`): the line's scale analysis (report/line_report.py)."""
    for flag, given in (("--compare", args.compare or args.compare_local), ("--wandb", args.wandb),
                        ("--lattice", args.lattice)):
        if given:
            raise GridError(f"{flag}: not for a transect ({loaded.name} has one axis); report it alone")
    line = build_line(loaded.sweep_config, loaded.records, allow_mixed_base=args.allow_mixed_base)
    line.name = loaded.name
    report = write_line_report(line, out_dir, args.title or f"Transect: {loaded.name}",
                               extra={"sources": loaded.sources})
    print_line_summary(report, out_dir)
    return report


def map_of(loaded: Loaded, sweep_config: dict, allow_mixed_base: bool) -> Grid:
    """The sources' runs placed on the sweep's grid and, for an adaptive map (local or W&B levels), filled."""
    grid = build_grid(sweep_config, loaded.records, allow_mixed_base=allow_mixed_base)
    grid.name = loaded.name
    refinement = loaded.refinement or RefineSettings.from_text(str(loaded.sweep_config.get("description") or ""))
    if refinement:
        apply_refinement(grid, refinement.levels, refinement.margin)
    return grid


def report_of(args, loaded: Loaded, write_dir: Path, shown_dir: Path | None = None) -> tuple[Grid, dict]:
    sweep_config = load_sweep(args.lattice).raw if args.lattice else loaded.sweep_config
    grid = map_of(loaded, sweep_config, args.allow_mixed_base)
    report = write_report(grid, write_dir, title=args.title or f"Trainability report: {loaded.name}",
                          sweep_config=sweep_config, history_of=loaded.history_of, zoom_k=args.zoom,
                          zoom_resolution=args.zoom_res, extra={"sources": loaded.sources}, shown_dir=shown_dir,
                          refill_hint=refill_hint(args.sweeps))
    return grid, report


def refill_hint(sweep_paths: list[str]) -> str:
    """How the holes get runs. A W&B grid never hands out a point twice, so a re-run does nothing there."""
    if not sweep_paths:
        return ""
    joined = " ".join(sweep_paths)
    return (f"`fractal-llm refill {joined} -o refill.yaml` writes a sweep of exactly these points; start it "
            f"(`wandb sweep refill.yaml`, then `fractal-llm agents NEW_SWEEP_PATH`) and report all of them "
            f"as one map with `fractal-llm report {joined} NEW_SWEEP_PATH`")


# ---------------------------------------------------------------- the report in W&B


class WandbReport:
    """The report's W&B run (job_type "report"), one per command: a --watch session is one run, whose
    artifact gets a new version when points changed (at most every --wandb-every minutes), and the W&B Report
    (report/wandb_report.py) that shows it with the map's runs, created once (publish).

    Each log puts the report directory and the table of points (with the run id that decided each point) in
    an artifact of type `report`, the images in the run's media, D and the counts in its summary. The table
    goes in the artifact, not through run.log: run.log cuts a wandb.Table at 10,000 rows (a 128x128 map came
    out with 10,000 of its 16,384), an artifact at wandb.Table.MAX_ARTIFACT_ROWS = 200,000 (measured with
    wandb 0.31 offline: a 250,000-row table came back with 200,000 and a warning). A bigger map's points go
    in as points.csv instead, whole."""

    def __init__(self, loaded: Loaded, project: str | None = None, mode: str | None = None):
        import wandb

        self.name = loaded.name or loaded.sweep_id or "local"
        self.loaded, self.group = loaded, sweep_map(loaded.sweep_config)  # the W&B group of the map's runs
        self.mode = mode
        self.run = wandb.init(project=project or loaded.project or "fractal-llm", entity=loaded.entity or None,
                              job_type="report", tags=[loaded.sweep_id or self.name], name=f"report-{self.name}",
                              group=self.group,
                              mode=mode, config={"sources": loaded.sources, "sweep_id": loaded.sweep_id})
        self.logged_state: int | None = None  # points_state of the last version logged
        self.logged_at = -math.inf  # time.monotonic() of it
        self.report_url: str | None = None

    def log(self, report: dict, out_dir: Path, grid: Grid):
        """Log this refresh's report; returns the artifact."""
        import wandb

        self.run.config.update({"axes": report["axes"]["names"], "fixed": report["fixed"]}, allow_val_change=True)
        fractal = report["fractal"]
        # A too-coarse map has no dimension: its rough hint (often 0) must not read as a measurement.
        measured = {} if fractal["too_coarse"] else {"fractal/dimension": fractal["dimension"],
                                                     "fractal/uncertainty": fractal["uncertainty"]}
        artifact = wandb.Artifact(artifact_name(self.name), type="report", description=report["title"],
                                  metadata={"counts": report["counts"], "dimension": measured.get("fractal/dimension"),
                                            "trainable_fraction": report["trainable_fraction"]})
        artifact.add_dir(str(out_dir))
        table = points_table(grid)
        if len(table.data) <= wandb.Table.MAX_ARTIFACT_ROWS:
            artifact.add(table, "points")
        else:
            with artifact.new_file("points.csv") as f:
                f.write(",".join(table.columns) + "\n")
                f.writelines(",".join("" if v is None else str(v) for v in row) + "\n" for row in table.data)
        self.run.log_artifact(artifact)
        self.run.log({f"report/{name}": wandb.Image(str(out_dir / file)) for name, file in report["images"].items()})
        self.run.summary.update({**measured, "fractal/too_coarse": fractal["too_coarse"],
                                 "trainable_fraction": report["trainable_fraction"],
                                 **{f"counts/{k}": v for k, v in report["counts"].items()}})
        self.logged_state, self.logged_at = points_state(grid), time.monotonic()
        return artifact

    def due(self, grid: Grid, every_s: float) -> bool:
        """--watch: whether this refresh gets a new version (points changed, and every_s passed since the last)."""
        return points_state(grid) != self.logged_state and time.monotonic() - self.logged_at >= every_s

    def publish(self, report: dict, grid: Grid) -> str:
        """Create the W&B Report once (it reads the runs live, so later refreshes need no new one); returns its
        URL, or why there is none: a Report lives on a server."""
        if self.report_url is None and (self.mode or os.environ.get("WANDB_MODE")) in ("offline", "disabled"):
            return ("not created (offline: a W&B Report lives on a server; after `wandb sync`, run the same "
                    "command online)")
        if self.report_url is None:
            from fractal_llm.report.wandb_report import build_report
            page = build_report(report, grid, entity=self.run.entity, project=self.run.project,
                                report_run_id=self.run.id, map_group=self.group,
                                runs_entity=self.loaded.entity or None, runs_project=self.loaded.project or None)
            self.report_url = page.save().url
        return self.report_url
    def finish(self) -> str:
        """End the run; returns where it is (with the `wandb sync` hint when offline)."""
        where = str(self.run.path)
        if (self.mode or os.environ.get("WANDB_MODE")) == "offline":
            where += f" (offline in {Path(self.run.dir).parent}; upload with `wandb sync`)"
        self.run.finish()
        return where


def artifact_name(name: str) -> str:
    """W&B artifact names take letters, digits, '-', '_' and '.'."""
    return "report-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", name)


def points_state(grid: Grid) -> int:
    """What a new artifact version would show that the last did not: each point's outcome and its run."""
    table = point_table(grid)
    return hash((tuple(table["verdict"]), tuple(table["run"])))


def points_table(grid: Grid):
    """Every point of the map as a wandb.Table (report.point_table's columns; NaN written as None)."""
    import wandb

    table = point_table(grid)
    columns = [grid.x_name, grid.y_name, "verdict", "score", "final_loss", "run_id", "run"]
    rows = zip(table["x"], table["y"], table["verdict"], map(_float, table["score"]),
               map(_float, table["final_loss"]), table["run_id"], table["run"])
    return wandb.Table(columns=columns, data=[list(row) for row in rows])


def _float(x) -> float | None:
    return float(x) if math.isfinite(x) else None


# ---------------------------------------------------------------- --watch


def watch(args, poller: SourcePoller, refreshes: int | None = None) -> dict:
    """Re-pull, rewrite the report directory whole (staging dir + paths.replace_dir), print one line; again
    every args.watch seconds until Ctrl-C, which leaves the last complete report in place. With --wandb, one
    report run for the whole session, logged at the first refresh, then when points changed and
    args.wandb_every minutes passed, and at the end when the last state was not logged yet."""
    report, out_dir, staging, seen, wandb_report, last = {}, None, None, [], None, None
    try:
        while True:
            loaded = poller.pull()
            if out_dir is None:
                out_dir = Path(args.out) if args.out else Path("reports") / "out" / loaded.name
                check_watch_dir(out_dir)
                staging = out_dir.with_name(f".{out_dir.name}.staging-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            grid, report = report_of(args, loaded, staging, shown_dir=out_dir)
            paths.replace_dir(staging, out_dir)
            last = (report, grid)  # the complete report in out_dir
            seen.append((time.monotonic(), finished_points(grid)))
            console.print(progress_line(grid, seen, loaded), highlight=False, soft_wrap=True)
            if args.wandb:
                if wandb_report is None:
                    wandb_report = WandbReport(loaded, project=args.wandb_project)
                if wandb_report.due(grid, args.wandb_every * 60):
                    wandb_report.log(report, out_dir, grid)
                if len(seen) == 1:  # one Report for the session: it reads the runs live
                    console.print(f"W&B Report: {wandb_report.publish(report, grid)}", highlight=False,
                                  soft_wrap=True)
            if refreshes is not None and len(seen) >= refreshes:
                return report
            time.sleep(args.watch)
    except KeyboardInterrupt:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        where = f" in {out_dir}" if out_dir is not None else ""
        console.print(f"\nstopped; the last complete report is{where}", highlight=False, soft_wrap=True)
        return report
    finally:
        if wandb_report is not None:
            if wandb_report.due(last[1], 0):  # the last state, whatever --wandb-every
                wandb_report.log(last[0], out_dir, last[1])
            console.print(f"W&B report run: {wandb_report.finish()}", highlight=False, soft_wrap=True)


def check_watch_dir(out_dir: Path) -> None:
    """--watch replaces the whole directory each refresh: never one that holds anything but a report."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "report.json").is_file():
        raise SourceError(f"--out {out_dir}: holds files but no report.json; --watch replaces the whole "
                          "directory at each refresh, so give it a new or a report directory")


def finished_points(grid: Grid) -> int:
    """Points whose run is over (a result, an error, a run that ended without a verdict)."""
    has_run = grid.record_index >= 0
    return int(np.count_nonzero(has_run & (grid.verdicts != "pending")))


def progress_line(grid: Grid, seen: list[tuple[float, int]], loaded: Loaded) -> str:
    """One refresh: counts per outcome, the runs pulled, and the ETA from the finish rate since the first
    refresh (points still to go: pending ones and those with no run yet)."""
    counts = "  ".join(f"{outcome} {grid.counts[outcome]}" for outcome in OUTCOMES)
    finished = seen[-1][1]
    to_go = int(grid.labels.size) - finished
    elapsed = seen[-1][0] - seen[0][0]
    rate = (finished - seen[0][1]) / elapsed if elapsed > 0 else 0.0
    if to_go == 0:
        eta = "done"
    elif rate > 0:
        eta = f"ETA {_duration(to_go / rate)} ({rate * 60:.1f} points/min)"
    else:
        eta = "ETA n/a (no point finished since the first refresh)"
    pulled = f"{loaded.changed} runs pulled ({'all' if loaded.full_pull else 'updated since the last pull'})"
    return (f"{datetime.now().strftime('%H:%M:%S')}  {counts}  |  {finished}/{grid.labels.size} finished, "
            f"{eta}  |  {pulled}")


def _duration(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{max(minutes, 1)} min"
