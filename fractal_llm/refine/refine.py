"""`fractal-llm refine FILE.yaml [SWEEP_PATH...]`: adaptive refinement on W&B, one point-list sweep per level.

FILE.yaml is the full-resolution sweep (its two axes are the lattice, fractal_llm.refine.levels). With no sweep
paths, the command writes and creates level 0; with the level sweeps created so far, it reads their runs,
places them on the lattice by value, and writes and creates the next level: a point-list sweep (`grid_point`,
sweep.py) over exactly the points that level runs (refine.next_level). The agents need no change: `fractal-llm
agents` runs any sweep. The state lives in each level sweep's description, as the refine.RefineSettings line
("fractal-llm refine: level=K levels=L margin=M lattice=NAME"), so anyone with FILE.yaml and the sweep paths
can continue on another host. `--auto` waits
for each level's runs to finish and creates the next, until no cell is left to refine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console

from fractal_llm.errors import FractalLLMError
from fractal_llm.report.grid import build_grid
from fractal_llm.refine.levels import DEFAULT_MARGIN, LEVEL0_POINTS, RefinePlan, RefineSettings, fill, known_verdicts, next_level
from fractal_llm.report.sources import wandb_source
from fractal_llm.sweep import (dump_sweep_yaml, load_sweep, map_line, parse_sweep_path, refill_config,
                               sweep_map)


class RefineSweepError(FractalLLMError):
    """Bad input to `fractal-llm refine`; raised before anything is created."""


def read_state(description: str | None, where: str) -> RefineSettings:
    settings = RefineSettings.from_text(description)
    if settings is None or settings.level is None:
        raise RefineSweepError(f"{where}: its description has no 'fractal-llm refine: level=K ...' line; only "
                               "level sweeps this command created can be continued")
    return settings


def lattice_known(full_cfg: dict, records) -> tuple[dict, int]:
    """{(iy, ix): verdict} of the runs placed on the full lattice, and how many points are still pending."""
    grid = build_grid(full_cfg, records)
    return known_verdicts(grid.verdicts), int(grid.counts.get("pending", 0))


def level_config(full_cfg: dict, plan: RefinePlan, level: int, points: list[tuple[int, int]]) -> dict:
    """The point-list sweep of one level, over the lattice's axis values (sorted, as the grid places them)."""
    grid = build_grid(full_cfg, [])
    name = str(full_cfg.get("name") or "sweep")
    values = [{grid.x_name: _typed(grid.x_values[ix], full_cfg, grid.x_name),
               grid.y_name: _typed(grid.y_values[iy], full_cfg, grid.y_name)} for iy, ix in points]
    cfg = refill_config(full_cfg, values, f"{name}-level{level}")
    cfg["description"] = (f"level {level} of {plan.levels} ({len(points)} points) of {name}\n"
                          + RefineSettings(plan.levels, plan.margin, name, level).to_text() + "\n"
                          + map_line(sweep_map(full_cfg)))  # the W&B group of its runs: the map's
    return cfg


def _typed(value: float, full_cfg: dict, axis: str):
    """The axis value as the YAML holds it (an int axis stays int)."""
    raw = full_cfg["parameters"][axis]["values"]
    return next((v for v in raw if float(v) == value), value)


def create_sweep(cfg: dict, entity: str | None, project: str | None) -> str:
    import wandb
    sweep_id = wandb.sweep(cfg, entity=entity, project=project or cfg.get("project"))
    return f"{entity or wandb.Api().default_entity}/{project or cfg.get('project')}/{sweep_id}"


def create_next_level(full_path: Path, sweep_paths: list[str], levels: int | None, margin: int | None, out_dir: Path,
                      entity: str | None, project: str | None, api=None, console: Console | None = None
                      ) -> tuple[str | None, int, int]:
    """Create the next level sweep. Returns (its path, level, 0); or (None, level, pending) when nothing is
    created: refinement is done (pending 0), or `pending` points of a level already created have no verdict yet."""
    console = console or Console()
    spec = load_sweep(full_path)
    full_cfg = spec.raw
    records, states = [], []
    for path in sweep_paths:
        config, recs, _ = wandb_source(path, api=api)
        states.append(read_state(config.get("description"), path))
        records += recs
    state = states[0] if states else None
    last_level = max((s.level for s in states), default=None)
    if state is not None:
        if state.lattice != spec.name:
            raise RefineSweepError(f"the level sweeps refine lattice {state.lattice!r}, not {spec.name!r} ({full_path})")
        if (levels is not None and levels != state.levels) or (margin is not None and margin != state.margin):
            raise RefineSweepError(f"--levels {levels} --margin {margin}: the level sweeps were made with "
                                   f"--levels {state.levels} --margin {state.margin}")
        levels, margin = state.levels, state.margin
    grid = build_grid(full_cfg, [])
    plan = RefinePlan(grid.shape, levels, DEFAULT_MARGIN if margin is None else margin)
    known, pending = lattice_known(full_cfg, records)
    step = next_level(plan, known)
    if step is None:
        refined = fill(plan, known)
        console.print(f"refinement done: {len(known)} of {refined.labels.size} points run, "
                      f"{int(refined.inferred.sum())} inferred", highlight=False)
        return None, plan.levels, pending
    level, points = step
    if pending or (last_level is not None and level <= last_level):
        # Points of a level already created still lack a verdict (queued, running, or failed): creating the
        # level again would run them twice.
        return None, level, pending or len(points)
    cfg = level_config(full_cfg, plan, level, points)
    out_dir.mkdir(parents=True, exist_ok=True)
    yaml_path = out_dir / f"{cfg['name']}.yaml"
    yaml_path.write_text(dump_sweep_yaml(cfg, header=f"fractal-llm refine {full_path} level {level}"))
    load_sweep(yaml_path)  # what the agents will run: re-read and checked
    created = create_sweep(cfg, entity, project)
    console.print(f"level {level} of {plan.levels}: {len(points)} points, {yaml_path}; sweep {created}\n"
                  f"  run it: fractal-llm agents {created}\n"
                  f"  then:   fractal-llm refine {full_path} {' '.join([*sweep_paths, created])}", highlight=False,
                  soft_wrap=True)
    return created, level, 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-llm refine", description=__doc__.split("\n\n")[0])
    parser.add_argument("file", help="the full-resolution sweep YAML (its axes are the lattice)")
    parser.add_argument("sweeps", nargs="*", metavar="ENTITY/PROJECT/SWEEP_ID", help="the level sweeps so far")
    parser.add_argument("--levels", type=int, help=f"level 0 runs every 2^LEVELS-th value (default: the most that "
                                                   f"leave level 0 {LEVEL0_POINTS} values per axis)")
    parser.add_argument("--margin", type=int, help=f"cells added around each mixed cell (default {DEFAULT_MARGIN})")
    parser.add_argument("--auto", action="store_true", help="wait for each level and create the next, until done")
    parser.add_argument("--poll", type=float, default=60.0, help="--auto: seconds between checks (default 60)")
    parser.add_argument("-o", "--out", default="sweeps/levels", help="where the level YAMLs go")
    parser.add_argument("--entity")
    parser.add_argument("--project")
    return parser


def main(argv: list[str], api=None) -> int:
    args = _build_parser().parse_args(argv)
    console = Console()
    sweeps = list(args.sweeps)
    for path in sweeps:
        parse_sweep_path(path)
    while True:
        created, level, pending = create_next_level(Path(args.file), sweeps, args.levels, args.margin,
                                                    Path(args.out), args.entity, args.project, api=api,
                                                    console=console)
        if created is None and not pending:
            console.print(f"report: fractal-llm report --lattice {args.file} {' '.join(sweeps)}", highlight=False,
                          soft_wrap=True)  # one line, to copy whole
            return 0
        if not args.auto:
            if pending:
                console.print(f"level {level}: {pending} points have no verdict yet (queued, running or failed; "
                              "`fractal-llm refill` re-runs failed ones); run again when they finish",
                              highlight=False, soft_wrap=True)
            return 0
        if created is not None:
            sweeps.append(created)
        time.sleep(args.poll)


if __name__ == "__main__":
    from fractal_llm.cli import run_as_script
    sys.exit(run_as_script("refine"))
