"""A zoom sequence's plan: its frames, where each lives, and the checks made before any run.

Frame k shares the centre (X, Y) and spans the parent sweep's span divided by 2^k on both axes (the log10
span of a log axis, the linear span of a linear one), as Sohl-Dickstein's zoom sequences and paper mode do.
Each frame is a sweep YAML (DIR/frame_KK.yaml: the parent's fixed values, two axes of N values) whose records
go to DIR/frame_KK/. DIR/sequence.yaml records the sequence (parent, centre, frames, resolution) and
DIR/wandb_sweeps.yaml each frame's W&B level sweeps. Frames float64 cannot place are refused (float64_problem).

`fractal-llm zoom` (runners/zoom.py) runs the frames; `fractal-llm report --sequence` (report/sequence.py) and
paper mode (paper/paper.py) read this plan. It imports neither runners/ nor report/: both point down to it.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import yaml

from fractal_llm.config import field_types
from fractal_llm.errors import FractalLLMError
from fractal_llm.paths import atomic_write_text
from fractal_llm.sweep import (POINT_KEY, SweepError, SweepSpec, axis_is_log, axis_values, check_sweep,
                               dump_sweep_yaml, load_sweep)

SEQUENCE_FILE = "sequence.yaml"
# float64 and deep frames (one rule for paper mode and zoom sequences: float64_problem). On a log axis a
# frame's pixel coordinates are log10 values (near 0.1..2.3 in paper mode, where float64 spaces numbers
# 2.8e-17..4.4e-16 apart). Neighbouring pixels must be at least MIN_PIXEL_ULPS float64 steps apart, both in
# their coordinate and in the value a run is given (else neighbours share a value), and no frame may be
# narrower than MIN_WINDOW_DECADES (a linear axis: the same relative width, 1e-12 * ln 10): there the values
# across the whole frame differ by 2.3e-12 of their size, a few float64 steps per pixel at 4096x4096. The
# deepest published frame is 5.1e-12 decades wide (tanh-minibatch, frame 41; docs/paper.md).
MIN_PIXEL_ULPS = 2
MIN_WINDOW_DECADES = 1e-12


class ZoomError(FractalLLMError):
    """A bad zoom sequence (a `fractal-llm zoom` argument, a frame float64 cannot place); raised before any run."""


@dataclass(frozen=True)
class Axis:
    name: str
    lo: float  # the parent's smallest value
    hi: float  # the parent's largest value
    log: bool  # log-spaced (every value > 0) or linear

    def span(self) -> float:
        return math.log10(self.hi / self.lo) if self.log else self.hi - self.lo

    def frame_coordinates(self, centre: float, k: int) -> tuple[float, float]:
        """The ends of frame k where its pixels are evenly spaced (log10 of the value on a log axis)."""
        half = self.span() / 2.0 ** (k + 1)
        c = math.log10(centre) if self.log else centre
        return c - half, c + half

    def frame_range(self, centre: float, k: int) -> tuple[float, float]:
        """The axis values at the ends of frame k: the parent's span / 2^k, centred on `centre`."""
        lo, hi = self.frame_coordinates(centre, k)
        return (10.0 ** lo, 10.0 ** hi) if self.log else (lo, hi)


@dataclass(frozen=True)
class Sequence:
    """What DIR/sequence.yaml holds: enough to rebuild every frame's sweep."""
    parent: str  # the parent sweep's name
    x: Axis  # the axis whose name sorts first (the report's x)
    y: Axis
    centre: tuple[float, float]  # axis units, (x, y)
    frames: tuple[int, ...]
    res: int

    def window(self, k: int) -> tuple[float, float, float, float]:
        """[x0, x1, y0, y1] of frame k in axis units."""
        return (*self.x.frame_range(self.centre[0], k), *self.y.frame_range(self.centre[1], k))

    def to_dict(self) -> dict:
        out = asdict(self)
        out["centre"], out["frames"] = list(self.centre), list(self.frames)
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Sequence":
        return cls(parent=d["parent"], x=Axis(**d["x"]), y=Axis(**d["y"]), centre=tuple(d["centre"]),
                   frames=tuple(d["frames"]), res=int(d["res"]))


def frame_name(k: int) -> str:
    return f"frame_{k:02d}"


def parent_axes(spec: SweepSpec) -> tuple[Axis, Axis]:
    """(x, y) in the report's order: the axis whose name sorts first is x."""
    if len(spec.axes) != 2:
        raise ZoomError(f"{spec.name}: {len(spec.axes)} axis ({spec.axis_names[0]}), a transect; zoom frames and "
                        "transects need a parent map with two axes")
    (x_name, xs), (y_name, ys) = sorted(spec.axes)
    axes = []
    for name, values in ((x_name, xs), (y_name, ys)):
        values = sorted(float(v) for v in values)
        axes.append(Axis(name, values[0], values[-1], is_log_spaced(values)))
    return axes[0], axes[1]


def is_log_spaced(values: list[float]) -> bool:
    """A linearly spaced axis (`sweep new --axis NAME=A:B:N:lin`) is linear even when every value is > 0;
    otherwise the report's rule (sweep.axis_is_log: positive values are drawn on a log scale)."""
    steps = np.diff(values)
    if len(values) > 2 and np.allclose(steps, steps.mean(), rtol=1e-6, atol=0.0):
        return False
    return axis_is_log(values)


def parse_centre(text: str, x: Axis, y: Axis) -> tuple[float, float]:
    parts = text.split(",")
    try:
        cx, cy = (float(p) for p in parts)
    except ValueError:
        raise ZoomError(f"--centre={text!r}: expected X,Y (numbers in axis units: {x.name},{y.name})") from None
    for axis, value in ((x, cx), (y, cy)):
        if not math.isfinite(value) or (axis.log and value <= 0):
            raise ZoomError(f"--centre={text!r}: {axis.name}={value!r} must be finite"
                            f"{' and > 0 (a log axis)' if axis.log else ''}")
        check_inside(axis, value, f"--centre={text!r}")
    return cx, cy


def check_inside(axis: Axis, value: float, what: str) -> None:
    """A centre outside the parent sweep's window trains frames (or a line) on a map nobody drew: refused."""
    if not axis.lo <= value <= axis.hi:
        raise ZoomError(f"{what}: {axis.name}={value:.6g} lies outside the parent sweep's window, "
                        f"{axis.name} in [{axis.lo:.6g}, {axis.hi:.6g}]")


def centre_from_report(report_dir: Path, x: Axis, y: Axis) -> tuple[float, float]:
    """The centre of the top-ranked zoom box of a report (its report.json's `zoom`), on each axis's scale."""
    path = report_dir / "report.json"
    if not path.exists():
        raise ZoomError(f"--centre-from {report_dir}: no report.json there (write one with `fractal-llm report`)")
    boxes = json.loads(path.read_text()).get("zoom") or []
    if not boxes:
        raise ZoomError(f"--centre-from {report_dir}: its report found no zoom box (a map with no boundary?)")
    box = min(boxes, key=lambda b: b["rank"])

    def middle(axis: Axis, lo: float, hi: float) -> float:
        return math.sqrt(lo * hi) if axis.log else (lo + hi) / 2

    return middle(x, *box["x_range"]), middle(y, *box["y_range"])


def parse_frames(text: str) -> tuple[int, ...]:
    parts = text.split(":")
    try:
        a, b = (int(p) for p in parts)
    except ValueError:
        raise ZoomError(f"--frames={text!r}: expected A:B (frame indices, both included), e.g. 0:5") from None
    if not 0 <= a <= b:
        raise ZoomError(f"--frames={text!r}: need 0 <= A <= B")
    return tuple(range(a, b + 1))


def float64_problem(lo: float, hi: float, res: int, log: bool) -> str | None:
    """Why float64 cannot place `res` evenly spaced pixels from lo to hi, or None when it can. lo, hi are
    coordinates: log10 of the value on a log axis, the value on a linear one. The one rule of paper mode
    (paper.check_resolvable) and zoom sequences (frame_values); see MIN_PIXEL_ULPS, MIN_WINDOW_DECADES."""
    width = hi - lo
    unit = "decades" if log else "(axis units)"
    if log and width < MIN_WINDOW_DECADES:
        return (f"{width:.3g} decades wide, narrower than float64 can resolve (frames must be >= "
                f"{MIN_WINDOW_DECADES:g} decades wide)")
    size = max(abs(lo), abs(hi))
    if not log and width < MIN_WINDOW_DECADES * math.log(10) * size:
        return (f"{width:.3g} wide at values near {size:.3g}, narrower than float64 can resolve (frames must be "
                f">= {MIN_WINDOW_DECADES * math.log(10):.3g} of their values wide)")
    step = width / (res - 1)
    spacing = MIN_PIXEL_ULPS * max(np.spacing(abs(lo)), np.spacing(abs(hi)))
    if step < spacing:
        return (f"at --res={res} its pixels are {step:.3g} {unit} apart, less than {MIN_PIXEL_ULPS} float64 "
                f"steps of its coordinates ({spacing:.3g})")
    if log:
        values = 10.0 ** np.linspace(lo, hi, res)
        steps, ulps = np.diff(values), np.spacing(values[1:])
        if np.any(steps < MIN_PIXEL_ULPS * ulps):
            return (f"at --res={res} neighbouring values are {float(steps.min()):.3g} apart, less than "
                    f"{MIN_PIXEL_ULPS} float64 steps of the values ({float(ulps.max()):.3g})")
    return None


def frame_values(axis: Axis, lo: float, hi: float, res: int, what: str) -> list:
    """res values from lo to hi on the axis's scale; refused when float64 cannot place them apart."""
    if axis.log and lo <= 0:
        raise ZoomError(f"{what}: {axis.name} would reach {lo:.3g}, not > 0 on a log axis")
    coordinates = (math.log10(lo), math.log10(hi)) if axis.log else (lo, hi)
    problem = float64_problem(*coordinates, res, axis.log)
    if problem is not None:
        raise ZoomError(f"{what}: {axis.name} {problem}; float64 cannot place this frame's pixels: stop at a "
                        "shallower frame or lower --res")
    values = axis_values(lo, hi, res, "log" if axis.log else "lin")
    if field_types()[axis.name] is int:
        values = sorted({int(round(v)) for v in values})
        if len(values) < res:
            raise ZoomError(f"{what}: {axis.name} is an integer field and this frame holds only {len(values)} "
                            f"distinct integers, not {res}: stop at a shallower frame or lower --res")
    return values


def frame_config(parent: dict, seq: Sequence, k: int) -> dict:
    """Frame k as a sweep config: the parent with both axes replaced, checked by sweep.check_sweep."""
    x0, x1, y0, y1 = seq.window(k)
    what = f"frame {k}"
    axes = {seq.x.name: {"values": frame_values(seq.x, x0, x1, seq.res, what)},
            seq.y.name: {"values": frame_values(seq.y, y0, y1, seq.res, what)}}
    description = (f"Frame {k} of a zoom sequence on {seq.parent}: centre {seq.x.name}={seq.centre[0]:.6g}, "
                   f"{seq.y.name}={seq.centre[1]:.6g}, span / 2^{k}")
    return derived_sweep(parent, axes, f"{seq.parent}-{frame_name(k)}", description, what)


def derived_sweep(parent: dict, parameters: dict, name: str, description: str, what: str) -> dict:
    """A sweep made from a parent sweep (a zoom frame, a transect): the parent's fixed values with `parameters`
    replacing its axes, checked by sweep.check_sweep; a point-list parent gives a full grid."""
    cfg = copy.deepcopy(parent)
    cfg.pop("run_cap", None)
    cfg["parameters"].pop(POINT_KEY, None)
    cfg["parameters"].update(parameters)
    cfg["name"], cfg["description"] = name, description
    try:
        check_sweep(cfg)
    except SweepError as e:
        raise ZoomError(f"{what}: {e}") from None
    return cfg


def plan_sequence(parent_file: str, centre: str | None, centre_from: str | None, frames: str,
                  res: int) -> tuple[dict, Sequence, dict[int, dict]]:
    """Every argument and every frame's sweep, checked before any run."""
    if res < 4:
        raise ZoomError(f"--res={res}: must be >= 4 (values per axis)")
    if (centre is None) == (centre_from is None):
        raise ZoomError("give one of --centre X,Y and --centre-from REPORT_DIR")
    spec = load_sweep(parent_file)
    x, y = parent_axes(spec)
    c = parse_centre(centre, x, y) if centre is not None else centre_from_report(Path(centre_from), x, y)
    seq = Sequence(parent=spec.name, x=x, y=y, centre=c, frames=parse_frames(frames), res=res)
    return spec.raw, seq, {k: frame_config(spec.raw, seq, k) for k in seq.frames}


def write_sequence(out: Path, seq: Sequence, configs: dict[int, dict]) -> dict[int, Path]:
    """DIR/sequence.yaml (merged with the frames an earlier call wrote) and one YAML per frame."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / SEQUENCE_FILE
    if path.exists():
        old = Sequence.from_dict(yaml.safe_load(path.read_text()))
        if (old.parent, old.x, old.y, old.centre, old.res) != (seq.parent, seq.x, seq.y, seq.centre, seq.res):
            raise ZoomError(f"--out {out}: holds another sequence ({old.parent}, centre {old.centre}, res {old.res}); "
                            "use another --out")
        seq = Sequence(seq.parent, seq.x, seq.y, seq.centre, tuple(sorted(set(old.frames) | set(seq.frames))), seq.res)
    atomic_write_text(path, yaml.safe_dump(seq.to_dict(), sort_keys=False))
    files = {}
    for k, cfg in configs.items():
        files[k] = out / f"{frame_name(k)}.yaml"
        atomic_write_text(files[k], dump_sweep_yaml(cfg))
    return files


def read_sequence(out: Path) -> Sequence:
    path = out / SEQUENCE_FILE
    if not path.exists():
        raise ZoomError(f"{out}: no {SEQUENCE_FILE} (write a sequence with `fractal-llm zoom`)")
    return Sequence.from_dict(yaml.safe_load(path.read_text()))


WANDB_FILE = "wandb_sweeps.yaml"  # --wandb: {frame name: its level sweeps, level 0 first}; a re-run continues them


def read_wandb_frames(out: Path) -> dict[str, list[str]]:
    """DIR/wandb_sweeps.yaml: each frame's level sweeps so far (a single path: level 0 alone)."""
    record = out / WANDB_FILE
    created = (yaml.safe_load(record.read_text()) if record.exists() else None) or {}
    return {name: [paths] if isinstance(paths, str) else list(paths) for name, paths in created.items()}
