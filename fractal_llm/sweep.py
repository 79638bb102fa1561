"""Grid sweep YAMLs: generate them (`sweep new`), check them (`sweep check`), expand them like W&B does.

One YAML serves both paths: `wandb sweep X.yaml` (W&B server + agents) and `fractal-llm local X.yaml`.
So the file must be a valid W&B grid sweep *and* every point must be a valid TrainConfig; check_sweep
enforces both before any run starts, with a message that names the key and the value.

A point-list sweep (docs/design.md, "Sweep YAMLs") sweeps one parameter, `grid_point`, whose values are the
points themselves: `grid_point: {values: [{matrix_lr: ..., unembedding_lr: ...}, ...]}`. W&B's grid engine
hands out each dict as one run; the run's config holds `grid_point` as a dict, and the CLI agent passes it
as `--grid_point={'matrix_lr': 0.001, ...}` (Python's str of the dict). unpack_point spreads it back into
train-config fields; the two axes are the dict keys, their values the distinct values of the points.
"""

import argparse
import ast
import copy
import itertools
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console

from fractal_llm.config import (DERIVED_WHEN_NONPOSITIVE, ConfigError, TrainConfig, check_field_value,
                                coerce_cli_value, field_types, format_float, parse_cli_overrides,
                                unknown_field_message)
from fractal_llm.errors import FractalLLMError

TRAIN_MODULE = "fractal_llm.train"
PROGRAM = "fractal_llm/train.py"  # what `wandb agent` reads as the sweep's program (the command runs it with -m)
PROJECT = "fractal-llm"  # the W&B project `wandb sweep` creates the sweep in when the YAML says so
MODULE_COMMAND = ["${env}", "${interpreter}", "-m", TRAIN_MODULE, "${args}"]
# Top-level keys W&B accepts in a sweep config; anything else is most likely a typo.
TOP_LEVEL_KEYS = ("program", "command", "method", "parameters", "metric", "name", "description", "project",
                  "entity", "run_cap", "early_terminate")
N_AXES = 2  # a map; a transect (fractal_llm/plans/transect.py) has one axis
POINT_KEY = "grid_point"  # the one swept parameter of a point-list sweep (not a train-config field)


class SweepError(FractalLLMError):
    """A sweep config that cannot run; the message names the key, the value and what is allowed."""


@dataclass
class SweepSpec:
    name: str
    axes: list[tuple[str, list]]  # sorted by name (W&B order); values normalised per field type
    fixed: dict  # parameters with a single `value`
    raw: dict  # the config as loaded
    warnings: list[str] = field(default_factory=list)  # allowed, but likely to surprise (`sweep check` shows them)
    points: list[dict] | None = None  # a point-list sweep's points (axis values only), in file order

    @property
    def axis_names(self) -> list[str]:
        return [name for name, _ in self.axes]

    @property
    def n_points(self) -> int:
        if self.points is not None:
            return len(self.points)
        return math.prod(len(values) for _, values in self.axes)


def parse_sweep_path(text: str) -> tuple[str, str, str]:
    """'ENTITY/PROJECT/SWEEP_ID' (as `wandb sweep` prints it) -> its three parts."""
    parts = text.strip().strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise SweepError(f"sweep path {text!r}: expected ENTITY/PROJECT/SWEEP_ID (as printed by `wandb sweep`)")
    return parts[0], parts[1], parts[2]


# ---------------------------------------------------------------------------------------------- checking

def load_sweep(path: str | Path) -> SweepSpec:
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    with open(path) as f:
        try:
            cfg = yaml.safe_load(f)
        except yaml.YAMLError as e:
            raise SweepError(f"{path}: not valid YAML: {yaml_problem(e)}") from None
    return check_sweep(cfg, default_name=path.stem)


def yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error on one line: where, and what (PyYAML's own text spans several lines)."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(e).split())
    context = f" ({e.context})" if getattr(e, "context", None) else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}{context}"


def check_sweep(cfg: dict, default_name: str = "sweep") -> SweepSpec:
    """Every rule a sweep must pass before a run starts; raises SweepError on the first broken one."""
    if not isinstance(cfg, dict):
        raise SweepError(f"sweep config: expected a mapping of keys (method, parameters, command, ...), "
                         f"got {type(cfg).__name__}")
    for key in cfg:
        if key not in TOP_LEVEL_KEYS:
            raise SweepError(f"{key}: not a W&B sweep key; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    method = cfg.get("method")
    if method != "grid":
        raise SweepError(f"method={method!r}: only grid sweeps are supported (method: grid)")
    _check_command(cfg)
    axes, fixed = parse_parameters(cfg.get("parameters"))
    points = parse_points(cfg.get("parameters"))
    if points is None:  # a point list's axes are its sorted distinct values
        for axis_name, values in axes:
            _check_monotonic(axis_name, values)
    name = cfg.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise SweepError(f"name={name!r}: must be a non-empty string")
    spec = SweepSpec(name=name, axes=axes, fixed=fixed, raw=cfg, points=points, warnings=_warnings(cfg))
    _check_points(spec)
    return spec


def _warnings(cfg: dict) -> list[str]:
    out = []
    if "program" not in cfg:
        out.append(f"program: missing; `wandb agent` reads it (add `program: {PROGRAM}`)")
    if "project" not in cfg:
        out.append(f"project: missing; `wandb sweep` then creates the sweep in your default project "
                   f"(add `project: {PROJECT}`, or pass --project)")
    return out


def _check_command(cfg: dict) -> None:
    """The command must run the train module with ${args} (the --name=value pairs W&B builds)."""
    expected = f"command: [{', '.join(MODULE_COMMAND)}]"
    command = cfg.get("command")
    if command is None:
        raise SweepError(f"command: missing; the sweep must run the train module with ${{args}}: {expected}")
    if not isinstance(command, list) or not all(isinstance(item, str) for item in command):
        raise SweepError(f"command={command!r}: must be a list of strings, e.g. {expected}")
    module_at = next((i for i in range(len(command) - 1)
                      if command[i] == "-m" and command[i + 1] == TRAIN_MODULE), None)
    if module_at is None:
        raise SweepError(f"command={command!r}: does not run the train module (-m {TRAIN_MODULE}); "
                         f"use {expected}")
    if "${args}" not in command[module_at + 2:]:
        raise SweepError(f"command={command!r}: does not pass ${{args}} to {TRAIN_MODULE} "
                         f"(the --name=value pairs of each point); use {expected}")


def parse_parameters(params, numeric_strings: bool = False) -> tuple[list[tuple[str, list]], dict]:
    """The one reader of a sweep's `parameters`: (axes sorted by name, each [(name, values in file order)],
    fixed values), every value checked and normalised per train-config field. A point-list sweep's axes are
    the keys of its points, each with the sorted distinct values the points hold.

    numeric_strings: accept '1e-4' for a number. yaml.safe_load reads an unquoted `1e-4` as a string, so a
    sweep created on the server without `sweep check` may hold them; the report reads such configs, while
    `sweep check` refuses them (the in-process agent would hand the string to the train function)."""
    axes, fixed, _points = _read_parameters(params, numeric_strings)
    return axes, fixed


def parse_points(params, numeric_strings: bool = False) -> list[dict] | None:
    """A point-list sweep's points (axis values only, checked, in file order); None for a product grid."""
    return _read_parameters(params, numeric_strings)[2]


def _read_parameters(params, numeric_strings: bool):
    if not isinstance(params, dict) or not params:
        raise SweepError(f"parameters={params!r}: must be a mapping of train-config fields to "
                         "{value: X} or {values: [...]}")
    axes: dict[str, list] = {}
    fixed: dict = {}
    points = None
    for name, spec in params.items():
        if name != POINT_KEY and name not in field_types():
            raise SweepError(f"parameters.{unknown_field_message(name)}")
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in ("value", "values"):
            raise SweepError(f"parameters.{name}={spec!r}: a grid parameter needs exactly one key, "
                             "`value: X` (fixed) or `values: [...]` (an axis)")
        if name == POINT_KEY:
            if "values" not in spec:
                raise SweepError(f"parameters.{POINT_KEY}={spec!r}: a point list needs `values: [{{...}}, ...]`, "
                                 "one mapping of the two axis fields per point")
            points = _check_points_list(spec["values"], numeric_strings)
        elif "value" in spec:
            fixed[name] = _checked_value(f"parameters.{name}.value", name, spec["value"], numeric_strings)
        else:
            axes[name] = _check_axis(name, spec["values"], numeric_strings)
    if points is not None:
        return _point_list_axes(points, axes, fixed), fixed, points
    if len(axes) not in (N_AXES, 1):
        raise SweepError(f"parameters: {len(axes)} axes ({', '.join(sorted(axes)) or 'none'}); a sweep needs "
                         f"exactly {N_AXES} parameters with `values` lists (the two axes of the map; one for a "
                         f"transect), every other parameter a single `value` (or one `{POINT_KEY}` list of points)")
    return [(name, axes[name]) for name in sorted(axes)], fixed, None


def _check_points_list(values, numeric_strings: bool) -> list[dict]:
    where = f"parameters.{POINT_KEY}.values"
    if not isinstance(values, list) or not values:
        raise SweepError(f"{where}={values!r}: must be a non-empty list of mappings, e.g. "
                         "[{matrix_lr: 1.0e-03, unembedding_lr: 1.0e-05}, ...]")
    points, seen = [], {}
    for i, point in enumerate(values):
        if not isinstance(point, dict) or len(point) != N_AXES:
            raise SweepError(f"{where}[{i}]={point!r}: each point must map exactly {N_AXES} train-config "
                             "fields (the axes of the map) to numbers")
        if points and set(point) != set(points[0]):
            raise SweepError(f"{where}[{i}]={point!r}: names {sorted(point)}, but {where}[0] names "
                             f"{sorted(points[0])}; every point names the same two axes")
        checked = {}
        for name in sorted(point):
            if name not in field_types():
                raise SweepError(f"{where}[{i}].{unknown_field_message(name)}")
            if field_types()[name] not in (int, float):
                raise SweepError(f"{where}[{i}].{name}: not a numeric field; an axis of the map must be a number")
            checked[name] = _checked_value(f"{where}[{i}].{name}", name, point[name], numeric_strings)
        key = tuple(checked.items())
        if key in seen:
            raise SweepError(f"{where}[{i}]={point!r}: duplicate of {where}[{seen[key]}]")
        seen[key] = i
        points.append(checked)
    return points


def _point_list_axes(points: list[dict], axes: dict, fixed: dict) -> list[tuple[str, list]]:
    if axes:
        raise SweepError(f"parameters: {', '.join(sorted(axes))} and {POINT_KEY} both have `values`; a point-list "
                         f"sweep sweeps only {POINT_KEY}, every other parameter is a single `value`")
    names = sorted(points[0])
    for name in names:
        if name in fixed:
            raise SweepError(f"parameters.{name}: fixed, and also an axis of the {POINT_KEY} points; "
                             "a parameter is either fixed or an axis")
    return [(name, sorted({p[name] for p in points})) for name in names]


def unpack_point(values: dict) -> dict:
    """A run's parameter values with a point-list sweep's grid_point spread into its fields (the CLI passes
    it as text: Python's str of a dict, or JSON). Values without grid_point come back unchanged."""
    if POINT_KEY not in values:
        return dict(values)
    point = values[POINT_KEY]
    if isinstance(point, str):
        point = _parse_point_text(point)
    if not isinstance(point, dict) or not all(isinstance(k, str) for k in point):
        raise ConfigError(f"{POINT_KEY}={point!r}: must be a mapping of train-config fields to values")
    rest = {k: v for k, v in values.items() if k != POINT_KEY}
    # The same value twice is fine: `fractal_llm.train` in a sweep passes its parsed config to wandb.init.
    clash = sorted(k for k in set(point) & set(rest) if rest[k] != point[k])
    if clash:
        raise ConfigError(f"{POINT_KEY}={point!r}: sets {', '.join(f'{k}={point[k]!r}' for k in clash)}, but "
                          f"{', '.join(f'{k}={rest[k]!r}' for k in clash)} is given on its own; a parameter is "
                          "either in the point or fixed")
    return {**rest, **point}


MAP_LINE = re.compile(r"^fractal-llm map: (.+?)\s*$", re.MULTILINE)


def sweep_map(sweep_config: dict) -> str:
    """The map a sweep's runs belong to, the W&B group its agents give them: the `fractal-llm map: NAME` line
    of a sweep made for another sweep's map (a refill, a refinement level), else the sweep's own name."""
    match = MAP_LINE.search(str(sweep_config.get("description") or ""))
    return match.group(1) if match else str(sweep_config.get("name") or "sweep")


def map_line(map_name: str) -> str:
    return f"fractal-llm map: {map_name}"


def refill_config(sweep_config: dict, points: list[dict], name: str) -> dict:
    """The sweep over exactly `points`: the parent's config, axes replaced by one grid_point list (checked);
    its runs belong to the parent's map (sweep_map)."""
    _axes, fixed = parse_parameters(sweep_config.get("parameters"), numeric_strings=True)
    cfg = copy.deepcopy(sweep_config)
    cfg.pop("run_cap", None)  # the parent's cap says nothing about the refill
    cfg["name"] = name
    cfg["description"] = (f"refill of {len(points)} points without a usable run\n"
                          + map_line(sweep_map(sweep_config)))
    # Fixed values as parsed: a server-side config may hold '1e-4' strings that `sweep check` refuses.
    cfg["parameters"] = {**{key: {"value": fixed[key]} for key in sorted(fixed)}, POINT_KEY: {"values": points}}
    check_sweep(cfg, default_name=name)
    return cfg


def _parse_point_text(text: str) -> dict:
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)  # what the CLI agent writes: f"--{name}={value}" of a dict
    except (ValueError, SyntaxError):
        raise ConfigError(f"{POINT_KEY}={text!r}: not a mapping; expected e.g. "
                          "{'matrix_lr': 0.001, 'unembedding_lr': 1e-05} or the same as JSON") from None


def run_overrides(argv: list[str]) -> dict:
    """`--name=value` arguments of the train entry point (what `${args}` builds) as train-config values, a
    `--grid_point=...` spread into its fields (config.parse_cli_overrides reads the rest). The agent always
    joins name and value with `=`, so that is the one form grid_point takes."""
    points = [arg for arg in argv if arg.startswith(f"--{POINT_KEY}=")]
    rest = [arg for arg in argv if not arg.startswith(f"--{POINT_KEY}=")]
    if f"--{POINT_KEY}" in rest:
        raise ConfigError(f"--{POINT_KEY}: write it as --{POINT_KEY}={{...}} (one argument)")
    values = parse_cli_overrides(rest)
    for arg in points[-1:]:
        values[POINT_KEY] = arg.split("=", 1)[1]
    return unpack_point(values)


def _checked_value(where: str, name: str, value, numeric_strings: bool = False):
    if numeric_strings and isinstance(value, str) and field_types()[name] in (int, float):
        try:
            value = float(value)
        except ValueError:
            pass  # check_field_value names the field and the value
    try:
        return check_field_value(name, value)
    except ConfigError as e:
        raise SweepError(f"{where}: {e}") from None


def _check_axis(name: str, values, numeric_strings: bool) -> list:
    where = f"parameters.{name}.values"
    if not isinstance(values, list):
        raise SweepError(f"{where}={values!r}: must be a list of numbers")
    if field_types()[name] not in (int, float):
        raise SweepError(f"{where}: {name} is not a numeric field; an axis of the map must be a number "
                         "(int or float field)")
    if len(values) < 2:
        raise SweepError(f"{where}={values!r}: an axis needs at least 2 values, got {len(values)}")
    checked = [_checked_value(f"{where}[{i}]", name, v, numeric_strings) for i, v in enumerate(values)]
    if name in DERIVED_WHEN_NONPOSITIVE:
        for i, v in enumerate(checked):
            if v <= 0:  # every such point would train at the same derived LR: a map with copied columns
                raise SweepError(f"{where}[{i}]={values[i]!r}: an LR axis needs values > 0; {name} <= 0 is the "
                                 f"sentinel for \"derived from learning_rate\", so those points would all train at "
                                 "one learning rate")
    seen: dict = {}
    for i, v in enumerate(checked):
        if v in seen:  # after normalisation, so 3e6 and 3000000 are the same point (as W&B sees them)
            raise SweepError(f"{where}[{i}]={values[i]!r}: duplicate of {where}[{seen[v]}]={values[seen[v]]!r}")
        seen[v] = i
    return checked


def _check_monotonic(name: str, values: list) -> None:
    """Axes in a sweep file run one way (W&B keeps the file's order; a shuffled axis is most likely a typo)."""
    where = f"parameters.{name}.values"
    steps = [b - a for a, b in zip(values, values[1:])]
    if not (all(s > 0 for s in steps) or all(s < 0 for s in steps)):
        i = next(i for i in range(1, len(steps)) if (steps[i] > 0) != (steps[0] > 0))
        raise SweepError(f"{where}[{i + 1}]={values[i + 1]!r}: axis values must be monotonic (all increasing "
                         f"or all decreasing); {values[i]!r} -> {values[i + 1]!r} breaks the order")


def _check_points(spec: SweepSpec) -> None:
    """Every grid point must be a valid TrainConfig (cross-field rules, e.g. a trainable group's LR > 0).
    Checking all points costs ~0.1 ms each (0.5 s for 64x64) and is exact, so no sampling."""
    for point in expand_grid(spec):
        try:
            TrainConfig.from_dict(point)
        except ConfigError as e:
            where = ", ".join(f"{name}={point[name]!r}" for name in spec.axis_names)
            raise SweepError(f"grid point {where}: {e}") from None


def expand_grid(spec: SweepSpec) -> list[dict]:
    """W&B grid order: names sorted, itertools.product over their values, the last name varying fastest
    (a point-list sweep: its points in file order, the one swept parameter's values).
    Each point is the full parameter dict (fixed values + this point's axis values)."""
    if spec.points is not None:
        return [{**spec.fixed, **point} for point in spec.points]
    names = [name for name, _ in sorted(spec.axes)]
    value_lists = [values for _, values in sorted(spec.axes)]
    return [{**spec.fixed, **dict(zip(names, combo))} for combo in itertools.product(*value_lists)]


def axis_point(spec: SweepSpec, point: dict) -> dict:
    """Only the axis values of a point (what records.record_name names it by)."""
    return {name: point[name] for name in spec.axis_names}


# ---------------------------------------------------------------------------------------------- writing

def axis_values(lo: float, hi: float, n: int, scale: str = "log") -> list[float]:
    """n values from lo to hi (both included), log- or linearly spaced."""
    if n < 2:
        raise SweepError(f"n={n!r}: an axis needs at least 2 values")
    if lo == hi:
        raise SweepError(f"min={lo!r}, max={hi!r}: an axis needs min != max")
    if scale == "log":
        if lo <= 0 or hi <= 0:
            raise SweepError(f"min={lo!r}, max={hi!r}: a log axis needs positive bounds (use :lin otherwise)")
        a, b = math.log10(lo), math.log10(hi)
        values = [10 ** (a + (b - a) * i / (n - 1)) for i in range(n)]
    elif scale == "lin":
        values = [lo + (hi - lo) * i / (n - 1) for i in range(n)]
    else:
        raise SweepError(f"scale={scale!r}: allowed values are log, lin")
    values[0], values[-1] = float(lo), float(hi)  # exact endpoints, not 10**log10(x)
    return values


def axis_is_log(values) -> bool:
    """Positive axes are drawn on a log scale (learning rates span decades); the report's and the plans' rule."""
    return all(float(v) > 0 for v in values)


class _SweepDumper(yaml.SafeDumper):
    pass


def _represent_float(dumper: yaml.SafeDumper, x: float):
    return dumper.represent_scalar("tag:yaml.org,2002:float", format_float(x))


_SweepDumper.add_representer(float, _represent_float)


def dump_sweep_yaml(cfg: dict, header: str = "") -> str:
    """YAML text for a sweep config; floats via format_float; short lists inline; `header` as # comments."""
    text = yaml.dump(cfg, Dumper=_SweepDumper, sort_keys=False, default_flow_style=None, width=100)
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comments + text


@dataclass
class AxisArg:
    name: str
    lo: float
    hi: float
    n: int
    scale: str = "log"


def parse_axis(text: str) -> AxisArg:
    """'NAME=MIN:MAX:N[:log|lin]' -> AxisArg."""
    if "=" not in text:
        raise SweepError(f"--axis {text!r}: expected NAME=MIN:MAX:N[:log|lin]")
    name, spec = text.split("=", 1)
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise SweepError(f"--axis {text!r}: expected NAME=MIN:MAX:N[:log|lin]")
    scale = parts[3] if len(parts) == 4 else "log"
    try:
        lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise SweepError(f"--axis {text!r}: MIN and MAX must be numbers and N an integer") from None
    return AxisArg(name=name.strip(), lo=lo, hi=hi, n=n, scale=scale)


def _axis_list(axis: AxisArg) -> list:
    types = field_types()
    if axis.name not in types:
        raise SweepError(f"--axis {unknown_field_message(axis.name)}")
    values = axis_values(axis.lo, axis.hi, axis.n, axis.scale)
    if types[axis.name] is int:
        rounded = [int(round(v)) for v in values]
        if len(set(rounded)) != len(rounded):
            raise SweepError(f"--axis {axis.name}={axis.lo:g}:{axis.hi:g}:{axis.n}: {axis.name} is an integer "
                             f"field and rounding gives duplicates {rounded}; use fewer points or a wider range")
        return rounded
    if types[axis.name] is not float:
        raise SweepError(f"--axis {axis.name}: not a numeric field")
    return values


def new_sweep(axes: list[AxisArg], fixed: dict, name: str | None = None, description: str | None = None,
              command: list[str] | None = None) -> dict:
    """A grid sweep config dict (checked), axis values generated from (min, max, n)."""
    cfg: dict = {}
    if name:
        cfg["name"] = name
    if description:
        cfg["description"] = description
    cfg["program"] = PROGRAM
    cfg["project"] = PROJECT
    cfg["method"] = "grid"
    cfg["metric"] = {"name": "score", "goal": "minimize"}  # W&B wants a metric; grid order ignores it
    cfg["command"] = list(command or MODULE_COMMAND)
    params: dict = {}
    for key in sorted(fixed):
        params[key] = {"value": fixed[key]}
    for axis in axes:
        if axis.name in params:
            raise SweepError(f"--axis {axis.name}: also given with --set; a parameter is either fixed or an axis")
        params[axis.name] = {"values": _axis_list(axis)}
    cfg["parameters"] = params
    check_sweep(cfg, default_name=name or "sweep")
    return cfg


def parse_set(text: str) -> tuple[str, object]:
    """'KEY=VALUE' -> (key, value typed per the train-config field)."""
    if "=" not in text:
        raise SweepError(f"--set {text!r}: expected KEY=VALUE")
    key, value = text.split("=", 1)
    key = key.strip()
    try:
        return key, check_field_value(key, coerce_cli_value(key, value))
    except ConfigError as e:
        raise SweepError(f"--set {e}") from None


# ---------------------------------------------------------------------------------------------- CLI

def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fractal-llm sweep", description="Create and check grid sweep YAMLs.")
    sub = parser.add_subparsers(dest="action", required=True)
    new = sub.add_parser("new", help="write a grid sweep YAML with generated axis values")
    new.add_argument("--axis", action="append", default=[], metavar="NAME=MIN:MAX:N[:log|lin]",
                     help="an axis of the map (give exactly two); log-spaced unless :lin")
    new.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="a fixed train-config value for every point")
    new.add_argument("--name", help="sweep name (default: the output file's stem)")
    new.add_argument("--description")
    new.add_argument("--note", action="append", default=[], help="a comment line for the YAML header")
    new.add_argument("--command-style", choices=("module", "this-python"), default="module",
                     help="module: ${env} ${interpreter} -m fractal_llm.train ${args} (activate the venv before "
                          "`wandb agent`); this-python: this interpreter's absolute path instead of ${interpreter}")
    new.add_argument("-o", "--output", required=True, help="the YAML file to write")
    check = sub.add_parser("check", help="check a sweep YAML (every rule that would stop a run)")
    check.add_argument("file")
    return parser


def main(argv: list[str]) -> int:
    args = _build_parser().parse_args(argv)
    console = Console()
    if args.action == "new":  # bad input raises SweepError: fractal_llm.cli prints it, exit 2
        return _main_new(args, argv, console)
    return _main_check(args, console)


def _main_new(args, argv: list[str], console: Console) -> int:
    output = Path(args.output)
    command = None
    if args.command_style == "this-python":
        command = [sys.executable, "-m", TRAIN_MODULE, "${args}"]
    fixed = dict(parse_set(text) for text in args.set)
    axes = [parse_axis(text) for text in args.axis]
    cfg = new_sweep(axes, fixed, name=args.name or output.stem, description=args.description, command=command)
    header = "\n".join([*args.note, "Generated by (--note comments left out):",
                        "  fractal-llm sweep " + shlex.join(_without_notes(argv))])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(dump_sweep_yaml(cfg, header=header))
    spec = load_sweep(output)  # what users will run: re-read from disk
    console.print(f"wrote {output}: {_describe(spec)}", highlight=False, soft_wrap=True)
    return 0


def _without_notes(argv: list[str]) -> list[str]:
    """The command line that regenerates the values; the header comments would only repeat themselves."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--note":
            skip = True
        elif not arg.startswith("--note="):
            kept.append(arg)
    return kept


def _main_check(args, console: Console) -> int:
    spec = load_sweep(args.file)
    console.print(f"[green]ok[/green] {args.file}: {_describe(spec)}", highlight=False, soft_wrap=True)
    for warning in spec.warnings:
        console.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    return 0


def _describe(spec: SweepSpec) -> str:
    axes = " x ".join(f"{name}[{len(values)}: {values[0]:g}..{values[-1]:g}]" for name, values in spec.axes)
    listed = f" (a list of {POINT_KEY}s)" if spec.points is not None else ""
    return f"sweep {spec.name!r}, {spec.n_points} points{listed}, axes {axes}"


if __name__ == "__main__":
    from fractal_llm.cli import run_as_script
    sys.exit(run_as_script("sweep"))
