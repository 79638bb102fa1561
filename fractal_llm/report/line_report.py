"""The report of a transect (a sweep with one axis): report.md, report.json, line.png and scaling.png.

The scale analysis is fractal_llm/report/transect.py; this module turns a Line (grid.build_line) into files.
report.json's `transect` holds the crossings at every spacing ([[spacing, count], ...], spacings in decades on
a log axis), the line's dimension with its interval, the roughness exponent and the crossover spacing, with
the same figures for a smooth reference and for shuffled labels; `border_loss` gives the losses on each side
(report/border_loss.py).
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.table import Table  # noqa: E402

from fractal_llm.errors import FractalLLMError  # noqa: E402
from fractal_llm.records import json_safe  # noqa: E402
from fractal_llm.report.border_loss import border_loss_from, border_loss_markdown  # noqa: E402
from fractal_llm.report.grid import Line  # noqa: E402
from fractal_llm.report.transect import LineScaling, TransectAnalysis, analyse_transect  # noqa: E402
from fractal_llm.sweep import axis_is_log  # noqa: E402
from fractal_llm.verdict import NOT_TRAINABLE, VERDICTS  # noqa: E402

console = Console()
COLOURS = {"trainable": "tab:blue", "not_trainable": "tab:red", "diverged": "black"}


class LineReportError(FractalLLMError):
    """A transect that cannot be analysed yet (points without a verdict, uneven spacing)."""


def line_coordinates(line: Line) -> tuple[np.ndarray, bool]:
    """The points' coordinates (log10 of the value on a log axis) and whether the axis is log."""
    log = axis_is_log(line.values)
    x = np.log10(line.values) if log else np.asarray(line.values, float)
    return x, log


def check_line(line: Line, x: np.ndarray) -> float:
    """The line's step; refused while a point has no result or when the points are not evenly spaced."""
    unfinished = [o for o in line.verdicts if o not in ("trainable", "not_trainable", "diverged")]
    if unfinished:
        counts = {o: unfinished.count(o) for o in sorted(set(unfinished))}
        raise LineReportError(f"transect {line.name}: {len(unfinished)} of {len(x)} points have no result yet "
                              f"({', '.join(f'{n} {o}' for o, n in counts.items())}); the scale analysis needs "
                              "every point (re-run the transect, or `fractal-llm refill` on W&B)")
    steps = np.diff(x)
    if not np.allclose(steps, steps.mean(), rtol=1e-6, atol=1e-12):
        raise LineReportError(f"transect {line.name}: its points are not evenly spaced "
                              f"(steps {steps.min():.4g} .. {steps.max():.4g})")
    return float(steps.mean())


def threshold_of(line: Line) -> float:
    values = {float(r.config["trainable_loss_ratio_threshold"]) for r in line.records
              if "trainable_loss_ratio_threshold" in r.config}
    if len(values) != 1:
        raise LineReportError(f"transect {line.name}: its runs record {len(values)} loss-ratio thresholds "
                              f"({sorted(values)}); one line, one threshold")
    return values.pop()


def border_loss_of_line(line: Line, labels: np.ndarray) -> dict:
    """report.json `border_loss` (report/border_loss.py) of the points next to a crossing of the line."""
    near = np.zeros(len(labels), bool)
    change = labels[1:] != labels[:-1]
    near[:-1] |= change
    near[1:] |= change
    summaries = [line.records[line.record_index[i]].summary for i in np.nonzero(near)[0]]
    return {**border_loss_from(summaries, line.records), "where": "the two points of each crossing"}


def write_line_report(line: Line, out_dir: Path, title: str, extra: dict | None = None) -> dict:
    x, log = line_coordinates(line)
    step = check_line(line, x)
    threshold = threshold_of(line)
    labels = line.verdicts == "trainable"
    ratio = np.where(np.isin(line.verdicts, NOT_TRAINABLE) & ~np.isfinite(line.loss_ratio), np.inf, line.loss_ratio)
    analysis = analyse_transect(labels, ratio, step, threshold)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unit = "decades" if log else "axis units"
    report = {"title": title, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "kind": "transect", "axis": line.axis, "log_axis": log, "spacing_unit": unit,
              "points": len(x), "range": [line.values[0], line.values[-1]], "threshold": threshold,
              "counts": {v: int(line.counts.get(v, 0)) for v in VERDICTS}, "fixed": line.fixed,
              "scope": scope_of(line), "transect": analysis.to_dict(), "border_loss": border_loss_of_line(line, labels),
              "images": {"line": "line.png", "scaling": "scaling.png"}, **(extra or {})}
    plot_line(line, x, ratio, threshold, log, out_dir / "line.png")
    plot_scaling(analysis, unit, out_dir / "scaling.png")
    (out_dir / "report.json").write_text(json.dumps(json_safe(report), indent=1))
    (out_dir / "report.md").write_text(render_markdown(report))
    return report


SCOPE_FIELDS = ("model_id", "model_family", "num_iterations", "lr_schedule", "seed", "trainable_param_groups")


def scope_of(line: Line) -> dict:
    """What a figure of this line holds for: the model, budget, schedule and data order it was measured at,
    and where on the map (the held axis is one of the fixed values)."""
    return {key: line.fixed[key] for key in SCOPE_FIELDS if key in line.fixed}


def scope_sentence(report: dict) -> str:
    s = report["scope"]
    parts = [text.format(s[key]) for key, text in (("num_iterations", "{} steps"), ("lr_schedule", "{} schedule"),
                                                    ("seed", "data-order seed {}"), ("model_id", "model {}"))
             if key in s]
    held = {k: v for k, v in report["fixed"].items() if k.endswith("_lr") or k in ("lr_input", "lr_output")}
    held.pop(report["axis"], None)
    where = ", ".join(f"{k}={v:.6g}" for k, v in held.items() if isinstance(v, (int, float)))
    return ", ".join(parts) + f", along {report['axis']}" + (f" at {where}" if where else "")


def scaling_sentence(s: dict, unit: str) -> str:
    crossover = f"{s['crossover']:.3g} {unit}" if s["crossover"] is not None else "none (rough at the finest spacing)"
    lo, hi = s["interval"]
    return (f"D_line {s['line_dimension']:.3f} [{lo:.3f}, {hi:.3f}] (border D = 1 + D_line), roughness exponent "
            f"{s['roughness_exponent']:.3f}, smooth below: {crossover}")


def render_markdown(report: dict) -> str:
    t, unit = report["transect"], report["spacing_unit"]
    lines = [f"# {report['title']}", "",
             f"A transect of {report['points']} points along {report['axis']} "
             f"({report['range'][0]:.6g} .. {report['range'][1]:.6g}, one step = {t['step']:.3g} {unit}), "
             f"loss-ratio threshold {report['threshold']:g}. Created {report['created']}.", "",
             "Outcomes: " + ", ".join(f"{n} {v}" for v, n in report["counts"].items() if n), "",
             f"Scope: every figure here holds for {scope_sentence(report)}, and nowhere else.", "",
             "## Scale", "",
             f"- **measured**: {scaling_sentence(t, unit)}",
             f"- smooth reference (the loss ratio smoothed): {scaling_sentence(t['smooth_reference'], unit)}",
             f"- shuffled labels (noise): {scaling_sentence(t['shuffled_labels'], unit)}", "",
             f"| spacing ({unit}) | crossings | mean abs change of the loss ratio | local dimension | local exponent |",
             "|---:|---:|---:|---:|---:|"]
    dims, exps = t["local_dimensions"] + [None], t["local_exponents"] + [None]
    for (s, c), (_, v), d, e in zip(t["crossings"], t["structure"], dims, exps):
        lines.append(f"| {s:.3g} | {c:.2f} | {_fmt(v)} | {_fmt(d)} | {_fmt(e)} |")
    lines += ["", "The local figures are measured between a spacing and twice it. A smooth border gives a flat "
              "crossing count (D_line 0) and exponent 1; noise gives D_line 1 and exponent 0. The interval is a "
              "95% bootstrap over 8 contiguous blocks of the line.", ""]
    lines += border_loss_markdown(report)
    lines += ["", "![line](line.png)", "", "![scaling](scaling.png)", ""]
    return "\n".join(lines)


def _fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4g}"


def plot_line(line: Line, x: np.ndarray, ratio: np.ndarray, threshold: float, log: bool, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.5))
    shown = np.where(np.isfinite(ratio), ratio, np.nan)
    ax.plot(x, shown, color="0.6", lw=0.7, zorder=1)
    for verdict, colour in COLOURS.items():
        mask = line.verdicts == verdict
        if mask.any():
            ax.scatter(x[mask], np.where(np.isfinite(shown[mask]), shown[mask], np.nanmax(shown) if
                       np.isfinite(shown).any() else threshold), s=6, color=colour, label=verdict, zorder=2)
    ax.axhline(threshold, color="k", ls="--", lw=0.8, label=f"threshold {threshold:g}")
    ax.set_xlabel(f"log10 {line.axis}" if log else line.axis)
    ax.set_ylabel("loss ratio")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(line.name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scaling(analysis: TransectAnalysis, unit: str, path: Path) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    series: list[tuple[str, LineScaling, str]] = [("measured", analysis.measured, "tab:blue"),
                                                  ("smooth reference", analysis.smooth, "tab:green"),
                                                  ("shuffled labels", analysis.noise, "tab:gray")]
    for label, s, colour in series:
        counts = np.asarray(s.crossings)
        a.loglog(np.asarray(s.spacings)[counts > 0], counts[counts > 0], "o-", color=colour, ms=3, label=label)
        b.loglog(s.spacings, s.structure, "o-", color=colour, ms=3, label=label)
    a.set_xlabel(f"spacing ({unit})")
    a.set_ylabel("threshold crossings")
    b.set_xlabel(f"spacing ({unit})")
    b.set_ylabel("mean |Δ loss ratio|")
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_line_summary(report: dict, out_dir: Path) -> None:
    t, unit = report["transect"], report["spacing_unit"]
    table = Table(title=report["title"])
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for verdict, n in report["counts"].items():
        if n:
            table.add_row(verdict, str(n))
    table.add_row("line dimension (border D - 1)", escape(f"{t['line_dimension']:.3f} [{t['interval'][0]:.3f}, "
                                                          f"{t['interval'][1]:.3f}]"))
    table.add_row("roughness exponent", f"{t['roughness_exponent']:.3f}")
    table.add_row("smooth below", f"{t['crossover']:.3g} {unit}" if t["crossover"] is not None else "none")
    table.add_row("spacings", f"{t['crossings'][0][0]:.3g} .. {t['crossings'][-1][0]:.3g} {unit}")
    console.print(table)
    console.print(f"holds for: {scope_sentence(report)}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {out_dir / 'report.md'}\njson:   {out_dir / 'report.json'}", soft_wrap=True)
