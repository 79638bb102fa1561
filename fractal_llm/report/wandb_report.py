"""The W&B Report of a map (`fractal-llm report ... --wandb`): a page a reader opens in W&B, built with the
`wandb-workspaces` package (wandb_workspaces.reports.v2) from the report run and the map's runs.

It holds, in this order: the counts and trainable fraction; the boundary image (the report run's logged
`report/boundary` image in a media panel: a Report's image block takes only a URL); a scatter of the map's
runs on the two axes, log scales, coloured by `config.verdict` (each run writes its verdict into its config,
runners/point.py, because W&B groups by config, not summary); the loss curves of neighbours across the
border; the dimension with its interval. The map's runs are found by their W&B group, the map's name
(sweep.sweep_map), which every run of the map gets: its level sweeps', refill sweeps' and local runs' too.
The axes are read from each run's `resolved` config (runners/point.py), which a point-list sweep's runs have
too (their swept parameter is one `grid_point` dict).

build_report only builds the objects (no server: tests check its blocks); save() needs a W&B server.
"""

from __future__ import annotations

import numpy as np

from fractal_llm.report.fractal import dimension_sentence
from fractal_llm.report.grid import Grid
from fractal_llm.report.plots import boundary_pairs

# The report's images' colours (report/plots.py): blue trainable, red failing, grey no result.
VERDICT_COLOURS = {"trainable": "#2166ac", "not_trainable": "#d6604d", "diverged": "#b2182b", "error": "#4d4d4d"}
MAP_RUNSET = "map runs"
NEIGHBOUR_PAIRS = 3  # pairs of neighbours across the border whose loss curves are shown


def border_run_ids(grid: Grid, n: int = NEIGHBOUR_PAIRS) -> list[str]:
    """The W&B run ids of up to n pairs of neighbouring points across the border (plots.boundary_pairs),
    trainable point first in each pair."""
    with_id = np.array([[k >= 0 and bool(grid.records[k].run_id) for k in row] for row in grid.record_index],
                       dtype=bool).reshape(grid.shape)
    return [grid.records[grid.record_index[cell]].run_id for pair in boundary_pairs(grid, with_id, n)
            for cell in pair]


def interval_sentence(report: dict) -> str:
    """The dimension, its interval (D ± its uncertainty) and, where the report has it, the calibrated range of
    true dimensions that D allows."""
    fractal = report["fractal"]
    text = dimension_sentence(fractal)
    d, u = fractal.get("dimension"), fractal.get("uncertainty")
    if not fractal.get("too_coarse") and d is not None and u is not None:
        text += f"; interval {d - u:.3f} to {d + u:.3f}"
    calibrated = (report.get("robustness") or {}).get("dimension_calibrated") or {}
    if not fractal.get("too_coarse") and calibrated.get("lo") is not None:
        text += f"; true D consistent with it (calibrated): {calibrated['lo']:.2f} to {calibrated['hi']:.2f}"
    return text


def build_report(report: dict, grid: Grid, *, entity: str, project: str, report_run_id: str, map_group: str,
                 runs_entity: str | None = None, runs_project: str | None = None):
    """The W&B Report (wr.Report, not saved) of one map. entity/project: where the report run is and the Report
    is saved; runs_entity/runs_project: where the map's runs are (default: the same)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    runs_entity, runs_project = runs_entity or entity, runs_project or project
    x_name, y_name = report["axes"]["names"]
    counts = ", ".join(f"{outcome} {n}" for outcome, n in report["counts"].items() if n)
    fraction = report["trainable_fraction"]

    report_run = wr.Runset(entity=entity, project=project, name="report run",
                           filters=expr.And(expr.Metric("ID") == report_run_id))
    of_the_map = expr.And(expr.Metric("Group") == map_group, expr.Metric("JobType") == "train")
    by_verdict = wr.Runset(entity=runs_entity, project=runs_project, name=MAP_RUNSET, groupby=["config.verdict"],
                           filters=of_the_map)
    colours = {wr.RunsetGroup(MAP_RUNSET, (wr.RunsetGroupKey(wr.Config("verdict"), verdict),)): colour
               for verdict, colour in VERDICT_COLOURS.items()}
    neighbours = border_run_ids(grid)
    blocks = [
        wr.P(f"{report['points']} points of {x_name} x {y_name} (W&B group {map_group}): {counts}. Trainable "
             f"fraction: {'n/a' if fraction is None else f'{fraction:.1%}'}."),
        wr.H2("Boundary"),
        wr.PanelGrid(runsets=[report_run], panels=[wr.MediaBrowser(title="boundary",
                                                                   media_keys=["report/boundary"])]),
        wr.H2("The map's runs, coloured by verdict"),
        wr.PanelGrid(runsets=[by_verdict], custom_run_colors=colours,
                     panels=[wr.ScatterPlot(title=f"{y_name} against {x_name}", x=wr.Config(f"resolved.{x_name}"),
                                            y=wr.Config(f"resolved.{y_name}"), log_x=True, log_y=True)]),
        wr.H2("Loss curves of neighbours across the border"),
    ]
    if neighbours:
        pairs = wr.Runset(entity=runs_entity, project=runs_project, name="neighbours",
                          filters=expr.And(expr.Metric("ID").isin(neighbours)))
        blocks.append(wr.PanelGrid(runsets=[pairs],
                                   panels=[wr.LinePlot(title="train/loss", x="step", y=["train/loss"],
                                                       log_y=True)]))
    else:
        blocks.append(wr.P("No pair of neighbouring W&B runs across the border (no border yet, or the runs "
                           "have no W&B run id)."))
    blocks += [wr.H2("Fractal dimension of the boundary"), wr.P(interval_sentence(report))]
    return wr.Report(entity=entity, project=project, title=report["title"][:128],
                     description=f"fractal-llm report of the map {map_group}", blocks=blocks)
