"""Run results and run records: what a run returns, and what the report reads back.

A local record is one JSON file per grid point, named after the point so a re-run finds it,
written atomically (temp file + rename) so a crash never leaves half a record.
"""

import hashlib
import json
import math
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fractal_llm.paths import atomic_write
from fractal_llm.verdict import run_outcome

SUMMARY_KEYS = ("verdict", "trainable", "stable", "loss_first", "loss_last", "loss_mean_last_k", "loss_ratio",
                "score", "diverged_at_step", "steps", "tokens_seen", "runtime_s", "error")
RECORD_FORMAT = 1
UNREADABLE = "unreadable record file"  # the state of a hole left by a record file that does not parse
MAX_NAME = 150  # longer names (many values, e.g. a point list) are cut and get a hash tail


@dataclass
class RunResult:
    """What train() returns for one grid point."""
    config: dict  # resolved TrainConfig.to_dict() plus "repro" (git commit, versions, device)
    summary: dict  # exactly SUMMARY_KEYS
    history: dict[str, list[float]]  # "train/loss", "lr/<group>", "train/tokens_seen": one entry per step
    samples: list[dict] | None = None


@dataclass
class RunRecord:
    """One run as the report sees it, from a local JSON file or a W&B run."""
    name: str
    config: dict
    summary: dict
    history: dict[str, list[float]] | None  # None: not fetched (W&B runs fetch it only when plotted)
    created_at: float
    run_id: str = ""
    source: str = "local"
    path: str = ""
    samples: list[dict] | None = field(default=None)
    # The run's state where its source has one: W&B's (finished, running, crashed, ...); UNREADABLE for a record
    # file that does not parse. "" for a local record (its verdict says everything).
    state: str = ""

    @property
    def verdict(self) -> str:
        return self.summary.get("verdict", "error")

    @property
    def outcome(self) -> str:
        """The map cell this run fills (verdict.run_outcome): its verdict, "pending" or "missing"."""
        return run_outcome(self.summary.get("verdict"), self.state)


def point_name(point: dict) -> str:
    """A stable name for a grid point from its axis values, e.g. 'matrix_lr=0.001,unembedding_lr=1e-05'."""
    return ",".join(f"{key}={_format_value(point[key])}" for key in sorted(point))


def record_name(values: dict) -> str:
    """The one record-name rule (local runner, CLI, agents, W&B source): the point's values sorted by key,
    so a re-run finds its record; "defaults" with no values at all; a long name gets a hash tail."""
    name = point_name(values) or "defaults"
    if len(name) <= MAX_NAME:
        return name
    return f"{name[:100]}-{hashlib.sha1(name.encode()).hexdigest()[:12]}"


RUN_NAME_DIGITS = 4  # significant digits of a float in a run's display name (more where a map needs them)


def run_name(values: dict, axes: list[tuple[str, list]] | dict) -> str:
    """A run's display name in W&B: its values sorted by key, each float to RUN_NAME_DIGITS significant digits,
    or to as many more as tell apart every value its axis holds in the map (`axes`: name -> the map's values),
    so no two points of one map share a name. The record keeps the exact name (record_name)."""
    axes = dict(axes)
    digits = {key: name_digits(axes.get(key, [value])) for key, value in values.items()}
    return ",".join(f"{key}={_short_value(values[key], digits[key])}" for key in sorted(values)) or "defaults"


def name_digits(axis_values) -> int:
    """The fewest significant digits, at least RUN_NAME_DIGITS, that give every float of an axis its own text."""
    floats = {float(v) for v in axis_values if isinstance(v, float)}
    for digits in range(RUN_NAME_DIGITS, 18):  # 17 digits tell every two float64 apart
        if len({f"{v:.{digits}g}" for v in floats}) == len(floats):
            return digits
    return 17


def _short_value(value, digits: int) -> str:
    return f"{value:.{digits}g}" if isinstance(value, float) else str(value)


def values_from_name(name: str) -> dict[str, str]:
    """A record name read back ('matrix_lr=0.001,unembedding_lr=1e-05' -> {key: text}); hashed names give
    what their kept head holds."""
    return dict(part.split("=", 1) for part in name.split(",") if "=" in part)


def _format_value(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def file_name(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.=,+-]", "_", name)
    return f"{safe}.json"


def record_from_result(result: RunResult, name: str, run_id: str = "") -> RunRecord:
    return RunRecord(name=name, config=result.config, summary=result.summary, history=result.history,
                     created_at=time.time(), run_id=run_id, source="local", samples=result.samples)


def error_summary(message: str, runtime_s: float) -> dict:
    summary = {key: None for key in SUMMARY_KEYS}
    summary.update(verdict="error", trainable=False, stable=False, runtime_s=runtime_s, error=message)
    return summary


def error_message(exc: BaseException) -> str:
    """'Type: message' and the traceback: our own bugs must be told apart from a run's failure."""
    trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__}: {exc}\n{trace}"


def error_record(config: dict, name: str, exc: BaseException | str, runtime_s: float, run_id: str = "") -> RunRecord:
    """The one `error` record: the point's config (so the grid places it), and the exception with its
    traceback (or a message, for a worker that died and left no exception)."""
    message = exc if isinstance(exc, str) else error_message(exc)
    return RunRecord(name=name, config=config, summary=error_summary(message, runtime_s), history=None,
                     created_at=time.time(), run_id=run_id)


def json_safe(value, keep_non_finite: bool = False):
    """Strict JSON: numpy scalars -> Python, tuples -> lists, keys -> str; NaN/inf -> None (report.json), or
    with keep_non_finite (run records) -> "nan"/"inf"/"-inf" strings that read_record turns back into floats."""
    if isinstance(value, dict):
        return {str(k): json_safe(v, keep_non_finite) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, keep_non_finite) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value) if keep_non_finite else None
    return value


def _from_json(value):
    if value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def write_record(record: RunRecord, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / file_name(record.name)
    payload = {"format": RECORD_FORMAT, **asdict(record)}
    payload.pop("path")
    atomic_write(path, lambda f: json.dump(json_safe(payload, keep_non_finite=True), f))
    record.path = str(path)
    return path


def read_record(path: str | Path) -> RunRecord:
    with open(path) as f:
        payload = _from_json(json.load(f))
    payload.pop("format", None)
    return RunRecord(**payload, path=str(path))


def read_records(directory: str | Path, keep_unreadable: bool = False) -> list[RunRecord]:
    """Every record in directory. keep_unreadable: a file that does not parse (truncated JSON, a foreign
    file) becomes a hole at the point its name gives (unreadable_record) instead of raising."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such run-record directory")
    records = []
    for path in sorted(directory.glob("*.json")):
        if path.name.startswith(".tmp-"):
            continue
        try:
            records.append(read_record(path))
        except (ValueError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
            if not keep_unreadable:
                raise
            records.append(unreadable_record(path, e))
    return records


def unreadable_record(path: Path, exc: Exception) -> RunRecord:
    """A hole for a record file that does not parse: named by its file (= its point), no verdict."""
    message = f"{path.name}: {type(exc).__name__}: {exc}"
    return RunRecord(name=path.stem, config={}, summary={"verdict": None, "error": message}, history={},
                     created_at=path.stat().st_mtime, path=str(path), state=UNREADABLE)
