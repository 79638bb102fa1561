"""`--compare`: two maps over the same axes side by side: Δ trainable fraction, Δ D, a difference map."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from fractal_llm.report.fractal import dimension_sentence, estimate_dimension
from fractal_llm.report.grid import Grid, GridError, axis_index
from fractal_llm.report.plots import plot_difference
from fractal_llm.records import json_safe
from fractal_llm.verdict import OUTCOMES

console = Console()


def same_axes(grid_a: Grid, grid_b: Grid, rtol: float = 1e-6) -> None:
    """Raise GridError unless both grids have the same axis names and values."""
    for axis in ("x", "y"):
        name_a, name_b = getattr(grid_a, f"{axis}_name"), getattr(grid_b, f"{axis}_name")
        va, vb = getattr(grid_a, f"{axis}_values"), getattr(grid_b, f"{axis}_values")
        if name_a != name_b:
            raise GridError(f"compare: {axis} axis is {name_a!r} in one sweep and {name_b!r} in the other; "
                            "only sweeps over the same axes compare")
        # The placement rule of the map (grid.axis_index): on a deep zoom frame, values 1e-9 apart differ.
        if len(va) != len(vb) or any(axis_index(np.asarray(va), v, rtol) != k for k, v in enumerate(vb)):
            raise GridError(f"compare: {axis} axis {name_a!r} has {len(va)} values {va[0]:.3g}…{va[-1]:.3g} in one "
                            f"sweep and {len(vb)} values {vb[0]:.3g}…{vb[-1]:.3g} in the other; the values must match")


def compare_reports(grid_a: Grid, grid_b: Grid, out_dir, labels: tuple[str, str] = ("a", "b")) -> dict:
    """Δ trainable fraction, Δ D (combined uncertainty), a difference map: compare.json, compare.md, compare.png."""
    import matplotlib.pyplot as plt

    same_axes(grid_a, grid_b)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    est_a, est_b = estimate_dimension(grid_a.labels), estimate_dimension(grid_b.labels)
    frac_a, frac_b = grid_a.trainable_fraction(), grid_b.trainable_fraction()
    delta_d = est_b.dimension - est_a.dimension
    delta_u = math.hypot(est_a.uncertainty, est_b.uncertainty)
    coarse = [label for label, est in zip(labels, (est_a, est_b)) if est.too_coarse]
    note = (f"not meaningful: too coarse in {', '.join(coarse)}" if coarse
            else f"{abs(delta_d) / delta_u:.1f} combined sigma" if delta_u > 0 else "")
    fig, ax = plt.subplots(figsize=(7, 6.5))
    agreement = plot_difference(ax, grid_a, grid_b, labels)
    fig.savefig(out_dir / "compare.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    result = json_safe({
        "labels": list(labels),
        labels[0]: {"counts": grid_a.counts, "trainable_fraction": frac_a, "fractal": est_a.to_dict()},
        labels[1]: {"counts": grid_b.counts, "trainable_fraction": frac_b, "fractal": est_b.to_dict()},
        "delta_trainable_fraction": frac_b - frac_a,
        "delta_dimension": delta_d,
        "delta_dimension_uncertainty": delta_u,
        "delta_dimension_note": note,
        "agreement": agreement,
        "image": "compare.png",
    })
    (out_dir / "compare.json").write_text(json.dumps(result, indent=1))
    (out_dir / "compare.md").write_text(_compare_markdown(result, labels))
    table = Table(title=f"compare {labels[0]} vs {labels[1]}")
    for column in ("quantity", labels[0], labels[1], f"{labels[1]} − {labels[0]}"):
        table.add_column(column, justify="right")
    table.add_row("trainable fraction", _pct(frac_a), _pct(frac_b), _pct(frac_b - frac_a))
    table.add_row("D", _pm(est_a.dimension, est_a.uncertainty), _pm(est_b.dimension, est_b.uncertainty),
                  _pm(delta_d, delta_u) + (f" ({note})" if note else ""))
    console.print(table)
    console.print(f"compare: {out_dir / 'compare.md'}", soft_wrap=True)
    return result


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:+.1%}" if x < 0 else f"{x:.1%}"


def _pm(value: float, unc: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3f} ± {unc:.3f}" if unc is not None and math.isfinite(unc) else f"{value:.3f} (no error bar)"


def _compare_markdown(result: dict, labels: tuple[str, str]) -> str:
    a, b = result[labels[0]], result[labels[1]]
    lines = [f"# Compare {labels[0]} vs {labels[1]}", "",
             f"| quantity | {labels[0]} | {labels[1]} | {labels[1]} − {labels[0]} |", "|---|---:|---:|---:|"]
    for outcome in OUTCOMES:
        lines.append(f"| {outcome} | {a['counts'][outcome]} | {b['counts'][outcome]} | "
                     f"{b['counts'][outcome] - a['counts'][outcome]:+d} |")
    lines.append(f"| trainable fraction | {_pct(_nan(a['trainable_fraction']))} | "
                 f"{_pct(_nan(b['trainable_fraction']))} | {_pct(_nan(result['delta_trainable_fraction']))} |")
    lines.append(f"| D | {dimension_sentence(a['fractal'])} | {dimension_sentence(b['fractal'])} | "
                 f"{_pm(_nan(result['delta_dimension']), _nan(result['delta_dimension_uncertainty']))} "
                 f"{result['delta_dimension_note']} |")
    lines += ["", "Points by agreement: " + ", ".join(f"{k}: {v}" for k, v in result["agreement"].items()), "",
              "![difference map](compare.png)", ""]
    return "\n".join(lines)


def _nan(x):
    return math.nan if x is None else x
