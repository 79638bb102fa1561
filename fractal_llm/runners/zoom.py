"""`fractal-llm zoom FILE.yaml --centre X,Y --frames A:B --res N --out DIR`: a zoom sequence on any sweep.

Frame k shares the centre (X, Y) and spans the parent sweep's span divided by 2^k on both axes (the log10
span of a log axis, the linear span of a linear one), as Sohl-Dickstein's zoom sequences and paper mode do.
Each frame is written as a sweep YAML (DIR/frame_KK.yaml: the parent's fixed values, two axes of N values)
and run locally into DIR/frame_KK/, by default with adaptive refinement; a re-run resumes. DIR/sequence.yaml
records the sequence (parent, centre, frames, resolution), which `fractal-llm report --sequence DIR` reads.
With --wandb each frame is refined on W&B instead, one point-list sweep per level as `fractal-llm refine` makes
them: a call creates each frame's next level (level 0 first) and prints its `fractal-llm agents` line, and is
run again once the agents have finished it; DIR/wandb_sweeps.yaml lists every frame's level sweeps.

The plan (the frames, their YAMLs, sequence.yaml, the float64 check) is fractal_llm/plans/zoom.py; this module
runs it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml
from rich.console import Console

from fractal_llm.paths import atomic_write_text
from fractal_llm.plans.zoom import (WANDB_FILE, ZoomError, frame_name, plan_sequence, read_wandb_frames,
                                    write_sequence)
from fractal_llm.sweep import SweepError, load_sweep


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fractal-llm zoom", description=__doc__.split("\n\n")[1])
    p.add_argument("file", help="the parent sweep YAML (gpt or mlp family)")
    p.add_argument("--centre", help="X,Y in axis units; x is the axis whose name sorts first")
    p.add_argument("--centre-from", metavar="REPORT_DIR", help="take the centre of a report's top-ranked zoom box")
    p.add_argument("--frames", default="0:5", help="A:B, frame indices, both included (default 0:5)")
    p.add_argument("--res", type=int, default=64, help="values per axis of each frame (default 64)")
    p.add_argument("--out", required=True, help="the sequence's directory")
    p.add_argument("--levels", type=int, help="adaptive levels (default: as `fractal-llm local --adaptive`; "
                                              "0 runs every point)")
    p.add_argument("--margin", type=int, help="adaptive margin (default: as `fractal-llm local --adaptive`)")
    p.add_argument("--workers", type=int, help="worker processes (default: as `fractal-llm local`)")
    p.add_argument("--write-only", action="store_true", help="write the frames' YAMLs and stop")
    p.add_argument("--wandb", action="store_true",
                   help="create each frame's next W&B level sweep (as `fractal-llm refine`) instead of running "
                        "here; run again when the agents have finished it")
    p.add_argument("--entity", help="--wandb: the W&B entity (default: yours)")
    p.add_argument("--project", help="--wandb: the W&B project (default: the parent's)")
    return p


def advance_wandb_frames(out: Path, files: dict[int, Path], levels: int | None, margin: int | None,
                         entity: str | None, project: str | None, console: Console, api=None) -> int:
    """Take every frame one step on W&B, as `fractal-llm refine` does: create its level 0, or, once the runs of
    its last level all have verdicts, the next level (refine.create_next_level). Run again after the agents
    until every frame says done; `fractal-llm report --sequence DIR` then reads the level sweeps recorded here."""
    from fractal_llm.refine import refine as refine_sweeps
    frames = read_wandb_frames(out)
    for k, path in files.items():
        name = frame_name(k)
        sweeps = frames.setdefault(name, [])
        created, level, pending = refine_sweeps.create_next_level(path, sweeps, levels, margin, out / "levels",
                                                                  entity, project, api=api, console=console)
        if created is not None:
            sweeps.append(created)
            atomic_write_text(out / WANDB_FILE, yaml.safe_dump(frames, sort_keys=True))
            status = f"fractal-llm agents {created}"
        elif pending:
            status = f"level {level}: {pending} points have no verdict yet; run this command again when they do"
        else:
            status = f"done, {len(sweeps)} level sweep(s)"
        console.print(f"{name}: {status}", highlight=False, soft_wrap=True)
    console.print(f"sequence report: fractal-llm report --sequence {out} --out {out}/report", highlight=False,
                  soft_wrap=True)
    return 0


def main(argv: list[str] | None = None, api=None) -> int:
    """`api` replaces wandb.Api() for --wandb (tests pass a fake)."""
    from fractal_llm.refine.levels import DEFAULT_MARGIN, RefineError, RefinePlan
    from fractal_llm.runners import local as runner
    args = build_parser().parse_args(argv)
    console, err = Console(), Console(stderr=True)
    margin = DEFAULT_MARGIN if args.margin is None else args.margin
    try:
        _parent, seq, configs = plan_sequence(args.file, args.centre, args.centre_from, args.frames, args.res)
        for k in seq.frames:
            RefinePlan((seq.res, seq.res), args.levels, margin)
        out = Path(args.out)
        files = write_sequence(out, seq, configs)
    except (ZoomError, SweepError, RefineError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 2
    console.print(f"zoom: {len(files)} frame(s) of {seq.parent} at {seq.res}x{seq.res}, centre "
                  f"{seq.x.name}={seq.centre[0]:.6g}, {seq.y.name}={seq.centre[1]:.6g}; YAMLs in {out}",
                  highlight=False, soft_wrap=True)
    if args.write_only:
        return 0
    if args.wandb:
        try:
            return advance_wandb_frames(out, files, args.levels, args.margin, args.entity, args.project, console,
                                        api=api)
        except (RefineError, SweepError) as e:
            err.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            return 2
    runner.preflight_sweep(load_sweep(files[seq.frames[0]]))
    status = 0
    for k, path in files.items():
        spec = load_sweep(path)
        frame_dir = out / frame_name(k)
        runner.check_out_dir(frame_dir, spec)
        rc = runner.run_adaptive(spec, frame_dir, args.levels, margin, workers=args.workers,
                                 wandb_mode=runner.point_wandb_mode(None, out), console=console)
        if rc == 130:
            return rc
        status = status or rc
    console.print(f"sequence report: fractal-llm report --sequence {out} --out {out}/report", highlight=False)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
