"""`fractal-llm report --sequence DIR --out OUT`: one report over a zoom sequence written by `fractal-llm zoom`.

It writes each frame's own report (map, dimension, robustness) into OUT/frame_KK/, and over all frames:
- the paper method's pooled statistic (fractal.pooled_paper_dimension, the function paper mode uses: one
  median over the local slopes of every frame's paper_dimension);
- an interval for it: a percentile bootstrap over frames and, within each drawn frame, over its box sizes
  (RESAMPLES draws, BOOTSTRAP_SEED, the central INTERVAL_LEVEL);
- the local slopes of every frame against the absolute box size (in units of the x axis: decades on a log
  axis), one plot: a scale-free boundary gives one flat band across frames;
- the zoom animation, widest frame first (zoom.gif; zoom.mp4 too where ffmpeg is on PATH);
- the robustness checks pooled over frames (robustness.pooled_robustness).
Frames with no records yet are listed as pending. Adaptive frames are filled as the report fills them
(grid.apply_refinement). report.json: `sequence.pooled_dimension`, `sequence.interval`, `sequence.frames`.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from rich.console import Console

from fractal_llm.report.fractal import estimate_dimension, paper_dimension, pooled_paper_dimension
from fractal_llm.report.grid import Grid, GridError, apply_refinement, build_grid
from fractal_llm.records import json_safe
from fractal_llm.report.robustness import PAPER_MIN_SIDE, THRESHOLDS, pooled_robustness, threshold_labels
from fractal_llm.refine.levels import RefinePlan, RefineSettings, known_verdicts, next_level, read_settings
from fractal_llm.report.sources import (ApiSettings, SourceError, add_api_arguments, api_settings, connect,
                                        local_source, wandb_source)
from fractal_llm.verdict import VERDICTS
from fractal_llm.plans.zoom import Sequence, ZoomError, frame_name, read_sequence, read_wandb_frames
from fractal_llm.sweep import load_sweep

RESAMPLES = 2000  # bootstrap draws; on 6 synthetic 64² frames the ends moved by <= 0.03 between seeds (500: 0.05)
BOOTSTRAP_SEED = 0
INTERVAL_LEVEL = 0.95


@dataclass
class FrameMap:
    index: int
    window: tuple[float, float, float, float]  # x0, x1, y0, y1 in axis units
    grid: Grid | None  # None: no record yet (pending)
    sweep_config: dict | None = None
    complete: bool = False  # every point its sweep (or its adaptive refinement) asks for has a verdict


def load_frames(seq_dir: Path, seq: Sequence, api=None, settings: ApiSettings | None = None) -> list[FrameMap]:
    """Every frame of the sequence with its map (placed and, for an adaptive run, filled as the report does):
    from its local records (DIR/frame_KK/), else from its W&B level sweeps (DIR/wandb_sweeps.yaml)."""
    on_wandb = read_wandb_frames(seq_dir)
    frames = []
    for k in seq.frames:
        frame_dir = seq_dir / frame_name(k)
        if (frame_dir / "sweep.yaml").is_file():
            config, records = local_source(frame_dir)
            refinement = read_settings(frame_dir)
        elif on_wandb.get(frame_name(k)):
            api = api if api is not None else connect(on_wandb[frame_name(k)][0], settings or ApiSettings())
            config, records, refinement = wandb_frame(seq_dir / f"{frame_name(k)}.yaml", on_wandb[frame_name(k)],
                                                      api, settings)
        else:
            config, records, refinement = None, [], None
        frames.append(frame_map(k, seq.window(k), config, records, refinement))
    return frames


def wandb_frame(lattice: Path, sweeps: list[str], api, settings: ApiSettings | None
                ) -> tuple[dict, list, RefineSettings | None]:
    """A frame refined on W&B: its lattice (the frame's YAML), the runs of all its level sweeps, and the
    refinement settings its level 0 carries in its description."""
    records, refinement = [], None
    for path in sweeps:
        config, recs, _ = wandb_source(path, api=api, settings=settings)
        refinement = refinement or RefineSettings.from_text(str(config.get("description") or ""))
        records += recs
    return load_sweep(lattice).raw, records, refinement


def frame_map(k: int, window: tuple, config: dict | None, records: list,
              refinement: RefineSettings | None) -> FrameMap:
    if config is None or not any(r.outcome in VERDICTS[:3] for r in records):
        return FrameMap(k, window, None)
    grid = build_grid(config, records)
    grid.name = str(config.get("name") or frame_name(k))
    if refinement:
        plan = RefinePlan(grid.shape, refinement.levels, refinement.margin)
        complete = next_level(plan, known_verdicts(grid.verdicts)) is None
        apply_refinement(grid, refinement.levels, refinement.margin)
    else:
        complete = not np.isin(grid.verdicts, ("missing", "pending", "error")).any()
    return FrameMap(k, window, grid, config, complete)


def bootstrap_interval(slopes: list[np.ndarray], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
                       level: float = INTERVAL_LEVEL) -> tuple[float, float]:
    """Percentile interval of the pooled median: draw frames with replacement, then each drawn frame's finite
    local slopes with replacement, pool them and take the median; repeat `resamples` times."""
    slopes = [s[np.isfinite(s)] for s in slopes]
    slopes = [s for s in slopes if s.size]
    if not slopes:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    stats = np.empty(resamples)
    for b in range(resamples):
        drawn = [slopes[f] for f in rng.integers(0, len(slopes), len(slopes))]
        stats[b] = np.median(np.concatenate([s[rng.integers(0, s.size, s.size)] for s in drawn]))
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def pixel_width(seq: Sequence, k: int, res: int) -> float:
    """One pixel of frame k along x, in x's coordinates (decades on a log axis)."""
    lo, hi = seq.x.frame_coordinates(seq.centre[0], k)
    return (hi - lo) / (res - 1)


def frame_entry(frame: FrameMap, seq: Sequence, out: Path) -> dict:
    """report.json's entry of one frame (a pending one has no numbers)."""
    entry = {"index": frame.index, "window": list(frame.window), "resolution": seq.res}
    if frame.grid is None:
        return {**entry, "status": "pending", "dimension": None, "runs_used": 0}
    from fractal_llm.report.writer import write_report  # loads matplotlib
    frame_out = out / frame_name(frame.index)
    report = write_report(frame.grid, frame_out, title=f"{seq.parent}, frame {frame.index}",
                          sweep_config=frame.sweep_config, zoom_k=0)
    fractal = report["fractal"]
    status = "done" if frame.complete else "in progress"
    return {**entry, "status": status, "dimension": fractal["dimension"], "uncertainty": fractal["uncertainty"],
            "too_coarse": fractal["too_coarse"], "runs_used": report["runs_used"], "points": report["points"],
            "counts": report["counts"], "report": f"{frame_name(frame.index)}/report.md",
            "map": f"{frame_name(frame.index)}/score_map.png"}


def write_sequence_report(seq_dir: Path, out: Path, title: str | None = None, console: Console | None = None,
                          api=None, settings: ApiSettings | None = None) -> dict:
    """Write OUT/report.md, report.json, scale_slopes.png, zoom.gif (and zoom.mp4), OUT/frame_KK/; return the
    report dict. `api` replaces wandb.Api() for frames refined on W&B (tests pass a fake)."""
    from fractal_llm.report.plots import write_scale_slopes, write_zoom_gif
    console = console or Console()
    seq = read_sequence(seq_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = load_frames(seq_dir, seq, api, settings)
    entries = [frame_entry(f, seq, out) for f in frames]
    # A frame still running (points missing, or adaptive levels to go) is drawn and listed, never pooled:
    # its map lacks exactly the points near the boundary that decide its dimension.
    done = [f for f in frames if f.grid is not None and f.complete]
    paper = {f.index: paper_dimension(f.grid.labels) for f in done if min(f.grid.shape) >= PAPER_MIN_SIDE}
    for entry in entries:
        if entry["index"] in paper:
            entry["paper_dimension"] = paper[entry["index"]].dimension
    pooled = pooled_paper_dimension(list(paper.values()))
    interval = bootstrap_interval([np.asarray(e.local_slopes, dtype=float) for e in paper.values()])
    images = {}
    curves = []
    for f in done:
        width = pixel_width(seq, f.index, seq.res)
        ours = estimate_dimension(f.grid.labels)
        mids = [math.sqrt(a * b) * width for a, b in zip(ours.box_sizes, ours.box_sizes[1:])]
        e = paper.get(f.index)
        curves.append((f"frame {f.index}", mids, ours.local_slopes, [s * width for s in e.box_sizes] if e else [],
                       e.local_slopes if e else []))
    if any(np.isfinite(np.asarray([*c[2], *c[4]], dtype=float)).any() for c in curves):  # a boundary somewhere
        unit = "decades" if seq.x.log else "axis units"
        images["scale_slopes"] = write_scale_slopes(curves, pooled.dimension, f"box size along {seq.x.name} ({unit})",
                                                    out / "scale_slopes.png").name
    if done:
        captions = [f"frame {f.index}: {seq.x.name} {f.window[0]:.6g}..{f.window[1]:.6g}, "
                    f"{seq.y.name} {f.window[2]:.6g}..{f.window[3]:.6g}\nD (ours) {_num(e['dimension'])}, "
                    f"D (paper method) {_num(e.get('paper_dimension'))}"
                    for f, e in zip(frames, entries) if f in done]
        gif = write_zoom_gif([f.grid for f in done], captions, out / "zoom.gif")
        images["zoom_gif"] = gif.name
        if shutil.which("ffmpeg"):
            images["zoom_mp4"] = gif_to_mp4(gif).name
    robustness = pooled_robustness([f.grid.labels for f in done],
                                   {t: [threshold_labels(f.grid, t) for f in done] for t in THRESHOLDS})
    report = json_safe({
        "title": title or f"Zoom sequence: {seq.parent}",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "sequence": {"dir": str(seq_dir), "parent": seq.parent, "axes": [seq.x.name, seq.y.name],
                     "log": [seq.x.log, seq.y.log], "centre": list(seq.centre), "resolution": seq.res,
                     "pooled_dimension": pooled.dimension, "interval": list(interval),
                     "interval_method": f"percentile bootstrap over frames and box sizes, {RESAMPLES} resamples, "
                                        f"seed {BOOTSTRAP_SEED}, central {INTERVAL_LEVEL:.0%}",
                     "pooled_frames": sorted(paper), "pooled_slopes": pooled.n_slopes,
                     "pooled_dropped": pooled.n_dropped, "frames": entries,
                     "pending": [e["index"] for e in entries if e["status"] == "pending"],
                     "in_progress": [e["index"] for e in entries if e["status"] == "in progress"],
                     "robustness": robustness},
        "images": images,
    })
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "report.md").write_text(render_markdown(report))
    return report


def gif_to_mp4(gif: Path) -> Path:
    mp4 = gif.with_suffix(".mp4")
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-i", str(gif), "-movflags", "faststart", "-pix_fmt",
                    "yuv420p", "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", str(mp4)], check=True)
    return mp4


def _num(x) -> str:
    return "–" if x is None or x != x else f"{x + 0.0:.3f}"


def render_markdown(report: dict) -> str:
    seq = report["sequence"]
    x, y = seq["axes"]
    low, high = seq["interval"]
    lines = [f"# {report['title']}", "",
             f"Parent sweep `{seq['parent']}`; x = `{x}`, y = `{y}`; centre {x} = {seq['centre'][0]:.6g}, "
             f"{y} = {seq['centre'][1]:.6g}; {seq['resolution']}² per frame; frame k spans the parent's span / 2^k.",
             f"Created {report['created']}.", "",
             "## Pooled dimension (the paper's method)", "",
             f"**D = {_num(seq['pooled_dimension'])}, {seq['interval_method'].split(',')[0]}: "
             f"[{_num(low)}, {_num(high)}]** — one median over the local slopes of frames "
             f"{', '.join(map(str, seq['pooled_frames'])) or 'none'} ({seq['pooled_slopes']} slopes, "
             f"{seq['pooled_dropped']} non-finite left out); interval: {seq['interval_method']}.", "",
             "## Frames", "",
             f"| frame | {x} | {y} | runs used | D (ours) | D (paper method) | map |", "|---:|---|---|---:|---|---:|---|"]
    for f in seq["frames"]:
        x0, x1, y0, y1 = f["window"]
        if f["status"] == "pending":
            lines.append(f"| {f['index']} | {x0:.4g} … {x1:.4g} | {y0:.4g} … {y1:.4g} | pending | – | – | |")
            continue
        coarse = " (too coarse)" if f["too_coarse"] else ""
        running = " (in progress)" if f["status"] == "in progress" else ""
        lines.append(f"| [{f['index']}]({f['report']}) | {x0:.4g} … {x1:.4g} | {y0:.4g} … {y1:.4g} | "
                     f"{f['runs_used']} of {f['points']}{running} | {_num(f['dimension'])}{coarse} | "
                     f"{_num(f.get('paper_dimension'))} | ![frame {f['index']}]({f['map']}) |")
    if seq["in_progress"]:
        lines += ["", f"In progress (drawn, not pooled): frames {', '.join(map(str, seq['in_progress']))}."]
    if seq["pending"]:
        lines += ["", f"Pending (no records yet): frames {', '.join(map(str, seq['pending']))}; run the same "
                      "`fractal-llm zoom` command again to continue, then this report."]
    images = report["images"]
    if "scale_slopes" in images:
        lines += ["", "## Local slopes against absolute scale", "",
                  "Each frame's local slopes at its box sizes, in units of the x axis (solid: our estimator, from "
                  "1-pixel boxes; dotted: the paper method's, from 10 pixels, the slopes the pooled D pools): a "
                  "scale-free boundary gives one flat band across frames; a smooth one falls to 1 at small "
                  "scales, noise rises to 2.", "",
                  f"![local slopes]({images['scale_slopes']})"]
    if "zoom_gif" in images:
        lines += ["", "## Zoom", "", f"![zoom]({images['zoom_gif']})"]
        if "zoom_mp4" in images:
            lines.append(f"\nAlso as video: [{images['zoom_mp4']}]({images['zoom_mp4']}).")
    rob = seq["robustness"]
    lines += ["", "## Dynamics or noise (pooled over frames, paper method)", "",
              "| labels | pooled D |", "|---|---:|"]
    lines += [f"| loss-ratio threshold {row['threshold']:g} | {_num(row['pooled_dimension'])} |"
              for row in rob["thresholds"]]
    lines += [f"| the maps | {_num(rob['map'])} |", f"| labels shuffled (noise) | {_num(rob['shuffled'])} |",
              f"| smooth level set (a disc) | {_num(rob['smooth'])} |", "",
              "Each frame's own robustness tables are in its report."]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fractal-llm report --sequence", description=__doc__.split("\n\n")[0])
    p.add_argument("--sequence", required=True, metavar="DIR", help="a `fractal-llm zoom` directory")
    p.add_argument("--out", help="output directory (default DIR/report)")
    p.add_argument("--title")
    add_api_arguments(p)  # frames refined on W&B (`fractal-llm zoom --wandb`)
    return p


def main(argv: list[str] | None = None, api=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    console = Console()
    seq_dir = Path(args.sequence)
    out = Path(args.out) if args.out else seq_dir / "report"
    try:
        report = write_sequence_report(seq_dir, out, args.title, console, api, api_settings(args, parser))
    except (ZoomError, SourceError, GridError) as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
        return 2
    seq = report["sequence"]
    low, high = seq["interval"]
    done = [f for f in seq["frames"] if f["status"] == "done"]
    console.print(f"{len(done)} frame(s) reported, {len(seq['pending'])} pending; pooled D (paper method) "
                  f"{_num(seq['pooled_dimension'])} [{_num(low)}, {_num(high)}]; report: {out / 'report.md'}",
                  highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
