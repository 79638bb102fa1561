"""The report: from a grid to report.md, report.json and PNGs; comparisons; the `report` command.

    python reports/generate_report.py ENTITY/PROJECT/SWEEP_ID [...] [--local DIR ...] [--out DIR]
        [--zoom K] [--zoom-res N] [--compare E/P/ID | --compare-local DIR] [--wandb] [--watch [SECONDS]]

report.json holds every number (counts, trainable fraction, the DimensionEstimate, axes, fixed
parameters, zoom boxes, the holes, per-point table for grids up to POINTS_IN_JSON points); report.md says
the same for a person, with the images. Several sources merge into one map: the first one's sweep defines
it, the others' runs are placed on it by value (a refill sweep's points are points of its parent).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fractal_llm.fractal import DimensionEstimate, estimate_dimension
from fractal_llm.grid import Grid, GridError, apply_refinement, build_grid
from fractal_llm.verdict import OUTCOMES, VERDICTS
from fractal_llm.plots import CurveFn, write_plots
from fractal_llm.records import json_safe
from fractal_llm.robustness import robustness_markdown, robustness_of
from fractal_llm import paths
from fractal_llm.sweep import load_sweep
from fractal_llm.sources import ApiSettings, HistoryFn, Loaded, SourceError, SourcePoller, load_sources, local_history
from fractal_llm.zoom import find_zoom_boxes, write_zoom_sweeps

POINTS_IN_JSON = 65536  # per-point table in report.json up to this many points (paper arrays are bigger)
DEFAULT_WATCH_S = 60.0  # --watch without SECONDS: a 4096-run sweep of minute-long runs changes every few s
HOLES_LISTED = 50  # report.md lists this many holes; report.json and `fractal-llm refill` take every one
console = Console()


# ---------------------------------------------------------------- one report


def write_report(grid: Grid, out_dir, *, title: str, sweep_config: dict | None = None,
                 history_of: HistoryFn | None = None, curve_at: CurveFn | None = None, zoom_k: int = 3,
                 zoom_resolution: int = 16, extra: dict | None = None, shown_dir=None,
                 refill_hint: str = "") -> dict:
    """Write report.md, report.json and the PNGs into out_dir; return the JSON dict (print_summary prints it).

    Loss curves (panel e): from the grid's run records through history_of (default: the local records), or,
    for a grid without records (paper mode), curve_at(i, j) for any cell. shown_dir: where the files will
    live when the report names them (--watch writes into a staging directory, then renames it). refill_hint:
    the command that re-runs the holes (default: the local runner's re-run)."""
    out_dir = Path(out_dir)
    shown_dir = Path(shown_dir) if shown_dir is not None else out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    timing = {}
    start = time.perf_counter()
    estimate = estimate_dimension(grid.labels)
    timing["dimension"] = time.perf_counter() - start

    start = time.perf_counter()
    boxes = find_zoom_boxes(grid, zoom_k) if zoom_k and min(grid.shape) >= 2 else []
    if boxes and sweep_config is not None:
        write_zoom_sweeps(grid, boxes, sweep_config, out_dir / "zoom", zoom_resolution)
        for box in boxes:
            box.yaml_path = str(shown_dir / "zoom" / Path(box.yaml_path).name)
    timing["zoom"] = time.perf_counter() - start

    start = time.perf_counter()
    has_curve = None
    if curve_at is None and grid.records:
        curve_at, has_curve = record_curves(grid, history_of or local_history)
    images = write_plots(grid, estimate, out_dir, boxes, curve_at, has_curve, title=title)
    timing["plots"] = time.perf_counter() - start

    report = {
        "title": title,
        "name": grid.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": dict(grid.counts),
        "points": int(grid.labels.size),
        "runs_used": int(sum(grid.counts[v] for v in VERDICTS)),  # of `points` (fewer with adaptive refinement)
        "trainable_fraction": grid.trainable_fraction(),
        "axes": {"names": [grid.x_name, grid.y_name], "values": [list(grid.x_values), list(grid.y_values)]},
        "fixed": grid.fixed,
        "fractal": estimate.to_dict(),
        "zoom": [box.to_dict() for box in boxes],
        "zoom_resolution": zoom_resolution,
        "images": {name: path.name for name, path in images.items()},
        "skipped_runs": grid.skipped,
        "holes": hole_list(grid),
        "refill_hint": refill_hint or "run the same `fractal-llm local` command again: it re-runs every point "
                                      "without a finished record",
        "point_table": _point_table(grid) if grid.labels.size <= POINTS_IN_JSON else None,
        "timing_s": timing,
        "robustness": robustness_of(grid),  # dynamics or noise: thresholds and noise floor (robustness.py)
        **(extra or {}),
    }
    report = json_safe(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    (out_dir / "report.md").write_text(render_markdown(report, estimate, shown_dir))
    return report


def hole_list(grid: Grid) -> list[dict]:
    """Every point without a result and not in flight: an error, or missing (no run, a run that ended without
    a verdict, a record file that does not parse), with what is known about why."""
    rows, cols = np.nonzero(np.isin(grid.verdicts, ("error", "missing")))
    out = []
    for i, j in zip(rows.tolist(), cols.tolist()):
        record = grid.records[grid.record_index[i, j]] if grid.record_index[i, j] >= 0 else None
        if record is None:
            state = "no run"
        elif grid.verdicts[i, j] == "error":
            state = record.state or "error"  # a W&B run's own state (failed, crashed, ...) says more
        else:
            state = record.state or "no verdict"
        out.append({"x": grid.x_values[j], "y": grid.y_values[i], "outcome": str(grid.verdicts[i, j]),
                    "state": state, "run": record.path if record else "",
                    "error": str(record.summary.get("error") or "") if record else ""})
    return out


def _point_table(grid: Grid) -> dict:
    """Column-wise table of every point (row-major over y, then x)."""
    ys, xs = np.meshgrid(grid.y_values, grid.x_values, indexing="ij")
    runs = [grid.records[k].path or grid.records[k].name if k >= 0 else "" for k in grid.record_index.ravel()]
    return {"x": xs.ravel().tolist(), "y": ys.ravel().tolist(), "verdict": grid.verdicts.ravel().tolist(),
            "score": grid.scores.ravel().tolist(), "final_loss": grid.final_loss.ravel().tolist(), "run": runs}


# ---------------------------------------------------------------- text


def shown_outcomes(counts: dict) -> list[str]:
    """The outcome rows of a report: every outcome, and `inferred` for an adaptive map."""
    return [*OUTCOMES, *(["inferred"] if "inferred" in counts else [])]


def dimension_sentence(fractal: dict) -> str:
    d, u = fractal.get("dimension"), fractal.get("uncertainty")
    if fractal.get("too_coarse"):
        hint = f" (rough hint: {d:.2f})" if d is not None else ""
        return f"too coarse to estimate a dimension{hint}: {fractal.get('reason', '')}"
    unc = f" ± {u:.3f}" if u is not None else ""
    return f"D = {d:.3f}{unc}"


def render_markdown(report: dict, estimate: DimensionEstimate, out_dir: Path) -> str:
    counts, points = report["counts"], report["points"]
    frac = report["trainable_fraction"]
    x_name, y_name = report["axes"]["names"]
    x_values, y_values = report["axes"]["values"]
    fractal = report["fractal"]
    lines = [f"# {report['title']}", "",
             f"Grid: {len(x_values)} × {len(y_values)} = {points} points; x = `{x_name}` "
             f"({x_values[0]:.3g} … {x_values[-1]:.3g}), y = `{y_name}` ({y_values[0]:.3g} … {y_values[-1]:.3g}).",
             f"Created {report['created']}.", "",
             "## Outcomes", "", "| outcome | points | share |", "|---|---:|---:|"]
    for outcome in shown_outcomes(counts):
        lines.append(f"| {outcome} | {counts[outcome]} | {counts[outcome] / points:.1%} |")
    lines += ["", f"**Trainable fraction** (of points with a result, errors and missing excluded): "
                  f"{'n/a' if frac is None else f'{frac:.1%}'}", ""]
    lines += ["## Fractal dimension of the boundary", "", f"**{dimension_sentence(fractal)}**", "",
              f"- method: {fractal.get('method', 'window-fit')}; {fractal['reason']}",
              f"- boundary pixels (2×2 blocks holding both classes): {fractal['n_edge_pixels']}",
              f"- fit range: box sizes {fractal['fit_range'][0]}–{fractal['fit_range'][1]} cells; "
              f"R² = {_num(fractal['r_squared'])}", "",
              "| box size s | boxes N(s) | local slope to next s |", "|---:|---:|---:|"]
    slopes = fractal["local_slopes"] + [None] * (len(fractal["box_sizes"]) - len(fractal["local_slopes"]))
    for s, n, slope in zip(fractal["box_sizes"], fractal["counts"], slopes):
        lines.append(f"| {s} | {n} | {_num(slope)} |")
    lines += ["", "![box counting](box_counting.png)", ""]
    lines += robustness_markdown(report.get("robustness"))
    lines += ["## Maps", "", "Trainability (blue = trainable, red = not trainable or diverged; pale = near the "
              "boundary, i.e. slow to converge or slow to fail; grey = missing, pale yellow = pending (in flight), "
              "dark grey = error):", "",
              "![score map](score_map.png)", "", "![final loss](final_loss.png)", "",
              "![boundary](boundary.png)", "", "Loss curves of neighbours across the boundary:", "",
              "![loss curves](loss_curves.png)", "", "All panels: ![overview](overview.png)", ""]
    lines += _zoom_markdown(report, out_dir)
    if report["fixed"]:
        lines += ["## Fixed parameters", "", "| parameter | value |", "|---|---|"]
        lines += [f"| `{k}` | `{v}` |" for k, v in sorted(report["fixed"].items())]
        lines.append("")
    lines += _holes_markdown(report)
    if report["skipped_runs"]:
        lines += ["## Runs not on this grid (ignored)", ""] + [f"- {s}" for s in report["skipped_runs"][:50]] + [""]
    return "\n".join(lines)


def _holes_markdown(report: dict) -> list[str]:
    holes = report["holes"]
    if not holes:
        return []
    x_name, y_name = report["axes"]["names"]
    states = ", ".join(f"{state}: {n}" for state, n in sorted(Counter(h["state"] for h in holes).items()))
    lines = [f"## Holes ({len(holes)} points without a result: {states})", "",
             f"To fill them: {report['refill_hint']}.", "",
             f"| {x_name} | {y_name} | outcome | state | run or file | message |", "|---:|---:|---|---|---|---|"]
    for hole in holes[:HOLES_LISTED]:
        message = hole["error"].strip().splitlines()[0][:160].replace("|", "\\|") if hole["error"].strip() else ""
        lines.append(f"| {hole['x']:.3g} | {hole['y']:.3g} | {hole['outcome']} | {hole['state']} | "
                     f"`{hole['run']}` | {message} |")
    if len(holes) > HOLES_LISTED:
        lines.append(f"| … | … | | | | {len(holes) - HOLES_LISTED} more in report.json |")
    return lines + [""]


def _zoom_markdown(report: dict, out_dir: Path) -> list[str]:
    if not report["zoom"]:
        return ["## Zoom", "", "No zoom box (no boundary, or zoom disabled).", ""]
    x_name, y_name = report["axes"]["names"]
    lines = ["## Zoom boxes (densest boundary first)", "",
             f"| # | {x_name} | {y_name} | boundary density | sweep YAML |", "|---:|---|---|---:|---|"]
    for box in report["zoom"]:
        path = Path(box["yaml_path"]).relative_to(out_dir) if box["yaml_path"] else "(no sweep config)"
        lines.append(f"| {box['rank']} | {box['x_range'][0]:.3g} … {box['x_range'][1]:.3g} | "
                     f"{box['y_range'][0]:.3g} … {box['y_range'][1]:.3g} | {box['density']:.3f} | `{path}` |")
    if any(box["yaml_path"] for box in report["zoom"]):
        lines += ["", f"Run one with `wandb sweep {out_dir}/zoom/<name>.yaml` or `fractal-llm local "
                      f"{out_dir}/zoom/<name>.yaml` ({report['zoom_resolution']}² points each)."]
    return lines + [""]


def _num(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def record_curves(grid: Grid, history_of: HistoryFn) -> tuple[CurveFn, np.ndarray]:
    """curve_at for a grid of run records (their train/loss histories), and the cells that have a record."""
    def curve_at(i: int, j: int) -> list[float]:
        return (history_of(grid.records[grid.record_index[i, j]]) or {}).get("train/loss", [])

    return curve_at, grid.record_index >= 0


def print_summary(report: dict, out_dir: Path) -> None:
    table = Table(title=report["title"])
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for outcome in shown_outcomes(report["counts"]):
        table.add_row(outcome, str(report["counts"][outcome]))
    frac = report["trainable_fraction"]
    table.add_row("trainable fraction", "n/a" if frac is None else f"{frac:.1%}")
    table.add_row("fractal dimension", dimension_sentence(report["fractal"]))
    fit = report["fractal"]["fit_range"]
    table.add_row("fit range (box sizes)", f"{fit[0]}–{fit[1]}")
    for box in report["zoom"]:
        table.add_row(f"zoom {box['rank']}", box["yaml_path"] or f"density {box['density']:.3f}")
    console.print(table)
    console.print(f"report: {out_dir / 'report.md'}\njson:   {out_dir / 'report.json'}", soft_wrap=True)
    for name in report["images"].values():
        console.print(f"image:  {out_dir / name}", soft_wrap=True)


# ---------------------------------------------------------------- W&B summary run


def log_to_wandb(report: dict, out_dir: Path, grid: Grid, *, project: str, entity: str = "", sweep_id: str = "",
                 mode: str | None = None) -> str:
    """Log the report as a run (job_type "report"): images, a table of points, D and counts in the summary.
    Returns the run's path (empty when W&B is disabled)."""
    import wandb

    tags = [sweep_id] if sweep_id else [grid.name or "local"]
    run = wandb.init(project=project or "fractal-llm", entity=entity or None, job_type="report", tags=tags,
                     name=f"report-{grid.name or sweep_id}", mode=mode,
                     config={"axes": report["axes"]["names"], "fixed": report["fixed"], "sweep_id": sweep_id})
    images = {f"report/{name}": wandb.Image(str(out_dir / file)) for name, file in report["images"].items()}
    rows = []
    for i, y in enumerate(grid.y_values):
        for j, x in enumerate(grid.x_values):
            rows.append([x, y, str(grid.verdicts[i, j]), _float(grid.scores[i, j]), _float(grid.final_loss[i, j])])
    table = wandb.Table(columns=[grid.x_name, grid.y_name, "verdict", "score", "final_loss"], data=rows)
    run.log({**images, "report/points": table})
    fractal = report["fractal"]
    run.summary.update({"fractal/dimension": fractal["dimension"], "fractal/uncertainty": fractal["uncertainty"],
                        "fractal/too_coarse": fractal["too_coarse"],
                        "trainable_fraction": report["trainable_fraction"],
                        **{f"counts/{k}": v for k, v in report["counts"].items()}})
    where = str(run.path)
    if (mode or os.environ.get("WANDB_MODE")) == "offline":
        where += f" (offline in {Path(run.dir).parent}; upload with `wandb sync`)"
    run.finish()
    return where


def _float(x) -> float | None:
    return float(x) if math.isfinite(x) else None


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generate_report", description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--wandb", action="store_true", help="log a summary run to the sweep's W&B project")
    parser.add_argument("--lattice", metavar="FILE",
                        help="the full-resolution sweep YAML whose axes define the map (for `fractal-llm refine` "
                             "level sweeps, which list only their own points)")
    parser.add_argument("--allow-mixed-base", action="store_true",
                        help="draw runs of different base models (e.g. two versions of a `latest` artifact) as one map")
    parser.add_argument("--wandb-project", help="project of the summary run (default: the sweep's)")
    parser.add_argument("--watch", type=float, nargs="?", const=DEFAULT_WATCH_S, metavar="SECONDS",
                        help=f"re-pull every SECONDS (default {DEFAULT_WATCH_S:g}) and rewrite the report until "
                             "Ctrl-C; W&B sweeps: only runs updated since the last pull")
    parser.add_argument("--sequence", metavar="DIR", help="one report over a `fractal-llm zoom` directory "
                                                          "(fractal_llm/sequence_report.py; with --out only)")
    add_api_arguments(parser)
    return parser


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """The W&B listing settings (sources.ApiSettings), shared with `fractal-llm refill`."""
    defaults = ApiSettings()
    parser.add_argument("--api-timeout", type=int, default=defaults.timeout_s, metavar="SECONDS",
                        help=f"HTTP timeout of one W&B API request (default {defaults.timeout_s})")
    parser.add_argument("--page-size", type=int, default=defaults.page_size, metavar="N",
                        help=f"runs per page of the W&B run listing (default {defaults.page_size})")


def api_settings(args, parser: argparse.ArgumentParser) -> ApiSettings:
    if args.api_timeout < 1 or args.page_size < 1:
        parser.error(f"--api-timeout={args.api_timeout} and --page-size={args.page_size} must be >= 1")
    return ApiSettings(timeout_s=args.api_timeout, page_size=args.page_size)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `fractal-llm report` and reports/generate_report.py: 0 on success, 2 on bad input
    (a bad source, a run that does not fit the grid, sweeps that do not compare), with the message only."""
    if argv and "--sequence" in argv:  # one report over a `fractal-llm zoom` sequence
        from fractal_llm.sequence_report import main as sequence_main
        return sequence_main(argv)
    try:
        run(argv)
    except (SourceError, GridError, FileNotFoundError) as e:
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
    if args.watch is not None and (args.watch <= 0 or args.compare or args.compare_local or args.wandb):
        parser.error(f"--watch={args.watch:g}: must be > 0 seconds, and draws one map: use --compare, "
                     "--compare-local and --wandb without it")
    poller = SourcePoller(args.sweeps, args.local, api=api, settings=api_settings(args, parser), console=console)
    if args.watch is not None:
        return watch(args, poller, refreshes)
    loaded = poller.pull()
    out_dir = Path(args.out) if args.out else Path("reports") / "out" / loaded.name
    grid, report = report_of(args, loaded, out_dir)
    print_summary(report, out_dir)
    if args.compare or args.compare_local:
        other = load_sources(args.compare, args.compare_local, api=poller.api, settings=poller.settings)
        grid_b = build_grid(other.sweep_config, other.records)
        grid_b.name = other.name
        labels = tuple(args.labels) if args.labels else (loaded.name, other.name)
        if labels[0] == labels[1]:
            labels = (f"{labels[0]} (a)", f"{labels[1]} (b)")
        from fractal_llm.compare import compare_reports  # compare imports this module's wording of D
        report["compare"] = compare_reports(grid, grid_b, out_dir / "compare", labels)
    if args.wandb:
        run_path = log_to_wandb(report, out_dir, grid, project=args.wandb_project or loaded.project,
                                entity=loaded.entity, sweep_id=loaded.sweep_id)
        console.print(f"W&B summary run: {run_path}", soft_wrap=True)
    return report


def report_of(args, loaded: Loaded, write_dir: Path, shown_dir: Path | None = None) -> tuple[Grid, dict]:
    sweep_config = load_sweep(args.lattice).raw if args.lattice else loaded.sweep_config
    grid = build_grid(sweep_config, loaded.records, allow_mixed_base=args.allow_mixed_base)
    grid.name = loaded.name
    refinement = loaded.refinement or wandb_refinement(loaded.sweep_config)
    if refinement:
        apply_refinement(grid, refinement["levels"], refinement["margin"])
    report = write_report(grid, write_dir, title=args.title or f"Trainability report: {loaded.name}",
                          sweep_config=sweep_config, history_of=loaded.history_of, zoom_k=args.zoom,
                          zoom_resolution=args.zoom_res, extra={"sources": loaded.sources}, shown_dir=shown_dir,
                          refill_hint=refill_hint(args.sweeps))
    return grid, report


def wandb_refinement(sweep_config: dict) -> dict | None:
    """The levels and margin of a `fractal-llm refine` level sweep (from its description), or None."""
    from fractal_llm.refine_sweeps import STATE
    match = STATE.search(str(sweep_config.get("description") or ""))
    return {"levels": int(match.group(2)), "margin": int(match.group(3))} if match else None


def refill_hint(sweep_paths: list[str]) -> str:
    """How the holes get runs. A W&B grid never hands out a point twice, so a re-run does nothing there."""
    if not sweep_paths:
        return ""
    paths = " ".join(sweep_paths)
    return (f"`fractal-llm refill {paths} -o refill.yaml` writes a sweep of exactly these points; start it "
            f"(`wandb sweep refill.yaml`, then `fractal-llm agents NEW_SWEEP_PATH`) and report all of them "
            f"as one map with `python reports/generate_report.py {paths} NEW_SWEEP_PATH`")


# ---------------------------------------------------------------- --watch


def watch(args, poller: SourcePoller, refreshes: int | None = None) -> dict:
    """Re-pull, rewrite the report directory whole (staging dir + paths.replace_dir), print one line; again
    every args.watch seconds until Ctrl-C, which leaves the last complete report in place."""
    report, out_dir, staging, seen = {}, None, None, []
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
            seen.append((time.monotonic(), finished_points(grid)))
            console.print(progress_line(grid, seen, loaded), highlight=False, soft_wrap=True)
            if refreshes is not None and len(seen) >= refreshes:
                return report
            time.sleep(args.watch)
    except KeyboardInterrupt:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        where = f" in {out_dir}" if out_dir is not None else ""
        console.print(f"\nstopped; the last complete report is{where}", highlight=False, soft_wrap=True)
        return report


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
