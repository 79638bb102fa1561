"""The report of one map: report.md, report.json and the PNGs of a Grid (the command: report_command.py).

report.json holds every number (counts, trainable fraction, the DimensionEstimate, axes, fixed parameters,
zoom boxes, the holes, the per-point table for grids up to POINTS_IN_JSON points); report.md says the same
for a person, with the images. A new part of the report adds its numbers in `write_report` and its text as
one function in MARKDOWN_SECTIONS.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fractal_llm.report.fractal import dimension_sentence, estimate_dimension
from fractal_llm.report.grid import Grid, hole_list
from fractal_llm.verdict import OUTCOMES, VERDICTS
from fractal_llm.report.plots import CurveFn, write_plots
from fractal_llm.records import json_safe
from fractal_llm.report.border_loss import border_loss_markdown, border_loss_of
from fractal_llm.report.robustness import robustness_markdown, robustness_of
from fractal_llm.report.sources import HistoryFn, local_history
from fractal_llm.report.zoom_boxes import find_zoom_boxes, write_zoom_sweeps

POINTS_IN_JSON = 65536  # per-point table in report.json up to this many points (paper arrays are bigger)
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
        "trainable_fraction": grid.trainable_fraction(),  # of the map, inferred pixels by their class
        # An adaptive map's runs crowd the boundary: their own fraction is not the map's.
        **({"trainable_fraction_of_runs": grid.run_trainable_fraction()} if grid.inferred is not None else {}),
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
        "point_table": point_table(grid) if grid.labels.size <= POINTS_IN_JSON else None,
        "timing_s": timing,
        "robustness": robustness_of(grid),  # dynamics or noise: thresholds and noise floor (robustness.py)
        "border_loss": border_loss_of(grid),  # the loss on each side of the border (border_loss.py)
        **(extra or {}),
    }
    report = json_safe(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    (out_dir / "report.md").write_text(render_markdown(report, shown_dir))
    return report


def point_table(grid: Grid) -> dict:
    """Column-wise table of every point (row-major over y, then x): values, outcome, colours, and the run
    that decided it (`run`: its W&B path or record file; `run_id`: the W&B run id, empty without one)."""
    ys, xs = np.meshgrid(grid.y_values, grid.x_values, indexing="ij")
    decided = [grid.records[k] if k >= 0 else None for k in grid.record_index.ravel()]
    return {"x": xs.ravel().tolist(), "y": ys.ravel().tolist(), "verdict": grid.verdicts.ravel().tolist(),
            "score": grid.scores.ravel().tolist(), "final_loss": grid.final_loss.ravel().tolist(),
            "run": [(r.path or r.name) if r else "" for r in decided],
            "run_id": [r.run_id if r else "" for r in decided]}


# ---------------------------------------------------------------- report.md, one function per section


def shown_outcomes(counts: dict) -> list[str]:
    """The outcome rows of a report: every outcome, and `inferred` for an adaptive map."""
    return [*OUTCOMES, *(["inferred"] if "inferred" in counts else [])]


def fraction_text(report: dict) -> str:
    """The trainable fraction for a person; an adaptive map's fraction among its run points beside it."""
    frac = report["trainable_fraction"]
    text = "n/a" if frac is None else f"{frac:.1%}"
    runs = report.get("trainable_fraction_of_runs")
    if runs is not None:
        text += f" (among the points that ran: {runs:.1%})"
    return text


def title_section(report: dict, shown_dir: Path) -> list[str]:
    x_name, y_name = report["axes"]["names"]
    x_values, y_values = report["axes"]["values"]
    return [f"# {report['title']}", "",
            f"Grid: {len(x_values)} × {len(y_values)} = {report['points']} points; x = `{x_name}` "
            f"({x_values[0]:.3g} … {x_values[-1]:.3g}), y = `{y_name}` ({y_values[0]:.3g} … {y_values[-1]:.3g}).",
            f"Created {report['created']}.", ""]


def outcomes_section(report: dict, shown_dir: Path) -> list[str]:
    counts, points = report["counts"], report["points"]
    lines = ["## Outcomes", "", "| outcome | points | share |", "|---|---:|---:|"]
    for outcome in shown_outcomes(counts):
        lines.append(f"| {outcome} | {counts[outcome]} | {counts[outcome] / points:.1%} |")
    inferred = " and inferred pixels by their class" if "inferred" in counts else ""
    return lines + ["", f"**Trainable fraction** (of points with a result{inferred}; errors, pending and missing "
                        f"excluded): {fraction_text(report)}", ""]


def dimension_section(report: dict, shown_dir: Path) -> list[str]:
    fractal = report["fractal"]
    lines = ["## Fractal dimension of the boundary", "", f"**{dimension_sentence(fractal)}**", "",
             f"- method: {fractal.get('method', 'window-fit')}; {fractal['reason']}",
             f"- boundary pixels (2×2 blocks holding both classes): {fractal['n_edge_pixels']}",
             f"- fit range: box sizes {fractal['fit_range'][0]}–{fractal['fit_range'][1]} cells; "
             f"R² = {_num(fractal['r_squared'])}", "",
             "| box size s | boxes N(s) | local slope to next s |", "|---:|---:|---:|"]
    slopes = fractal["local_slopes"] + [None] * (len(fractal["box_sizes"]) - len(fractal["local_slopes"]))
    for s, n, slope in zip(fractal["box_sizes"], fractal["counts"], slopes):
        lines.append(f"| {s} | {n} | {_num(slope)} |")
    return lines + ["", "![box counting](box_counting.png)", ""]


def maps_section(report: dict, shown_dir: Path) -> list[str]:
    return ["## Maps", "", "Trainability (blue = trainable, red = not trainable or diverged; pale = near the "
            "boundary, i.e. slow to converge or slow to fail; grey = missing, pale yellow = pending (in flight), "
            "dark grey = error):", "",
            "![score map](score_map.png)", "", "![final loss](final_loss.png)", "",
            "![boundary](boundary.png)", "", "Loss curves of neighbours across the boundary:", "",
            "![loss curves](loss_curves.png)", "", "All panels: ![overview](overview.png)", ""]


def zoom_section(report: dict, shown_dir: Path) -> list[str]:
    if not report["zoom"]:
        return ["## Zoom", "", "No zoom box (no boundary, or zoom disabled).", ""]
    x_name, y_name = report["axes"]["names"]
    lines = ["## Zoom boxes (densest boundary first)", "",
             f"| # | {x_name} | {y_name} | boundary density | sweep YAML |", "|---:|---|---|---:|---|"]
    for box in report["zoom"]:
        path = Path(box["yaml_path"]).relative_to(shown_dir) if box["yaml_path"] else "(no sweep config)"
        lines.append(f"| {box['rank']} | {box['x_range'][0]:.3g} … {box['x_range'][1]:.3g} | "
                     f"{box['y_range'][0]:.3g} … {box['y_range'][1]:.3g} | {box['density']:.3f} | `{path}` |")
    if any(box["yaml_path"] for box in report["zoom"]):
        lines += ["", f"Run one with `wandb sweep {shown_dir}/zoom/<name>.yaml` or `fractal-llm local "
                      f"{shown_dir}/zoom/<name>.yaml` ({report['zoom_resolution']}² points each)."]
    return lines + [""]


def fixed_section(report: dict, shown_dir: Path) -> list[str]:
    if not report["fixed"]:
        return []
    lines = ["## Fixed parameters", "", "| parameter | value |", "|---|---|"]
    return lines + [f"| `{k}` | `{v}` |" for k, v in sorted(report["fixed"].items())] + [""]


def holes_section(report: dict, shown_dir: Path) -> list[str]:
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


def skipped_section(report: dict, shown_dir: Path) -> list[str]:
    if not report["skipped_runs"]:
        return []
    return ["## Runs not on this grid (ignored)", ""] + [f"- {s}" for s in report["skipped_runs"][:50]] + [""]


# report.md, in this order: each function takes (report dict, the directory the report will live in).
MARKDOWN_SECTIONS = (title_section, outcomes_section, dimension_section, robustness_markdown, border_loss_markdown,
                     maps_section, zoom_section, fixed_section, holes_section, skipped_section)


def render_markdown(report: dict, shown_dir: Path) -> str:
    return "\n".join(line for section in MARKDOWN_SECTIONS for line in section(report, Path(shown_dir)))


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
    table.add_row("trainable fraction", fraction_text(report))
    table.add_row("fractal dimension", dimension_sentence(report["fractal"]))
    fit = report["fractal"]["fit_range"]
    table.add_row("fit range (box sizes)", f"{fit[0]}–{fit[1]}")
    for box in report["zoom"]:
        table.add_row(f"zoom {box['rank']}", box["yaml_path"] or f"density {box['density']:.3f}")
    console.print(table)
    console.print(f"report: {out_dir / 'report.md'}\njson:   {out_dir / 'report.json'}", soft_wrap=True)
    for name in report["images"].values():
        console.print(f"image:  {out_dir / name}", soft_wrap=True)
