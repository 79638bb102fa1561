"""Where run records come from: a local runner's directory, or a W&B sweep through the public API.

Both produce the same RunRecord type, so sources can be merged by concatenating their lists
(the grid resolves duplicates). The W&B path is built for big sweeps: one sweep query plus one paged,
non-lazy run listing (config and summary come with each page), and no history at all;
loss curves are fetched afterwards, unsampled, only for the few runs that get plotted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml

from fractal_llm.grid import sweep_axes
from fractal_llm.records import RunRecord, read_record, read_records, record_name
from fractal_llm.refine import ADAPTIVE_FILE
from fractal_llm.sweep import SweepError, parse_sweep_path

PAGE_SIZE = 1000  # runs per page of the listing: a 4096-run sweep is 5 pages
LOSS_KEY = "train/loss"

HistoryFn = Callable[[RunRecord], dict]


class SourceError(ValueError):
    """A source that cannot be read: names the path and what is expected."""


# ---------------------------------------------------------------- local


def local_source(directory: str | Path) -> tuple[dict, list[RunRecord]]:
    """(sweep config from DIR/sweep.yaml, every record in DIR)."""
    directory = Path(directory)
    sweep_file = directory / "sweep.yaml"
    if not sweep_file.is_file():
        raise SourceError(f"--local {directory}: no sweep.yaml there; a local runner's directory holds "
                          "sweep.yaml and one <point>.json per run")
    with open(sweep_file) as f:
        sweep_config = yaml.safe_load(f)
    if not isinstance(sweep_config, dict):
        raise SourceError(f"{sweep_file}: expected a mapping (a sweep config), got {type(sweep_config).__name__}")
    return sweep_config, read_records(directory)


def local_history(record: RunRecord) -> dict:
    """A local record carries its history; read it again from its file if it was dropped."""
    if record.history is not None:
        return record.history
    if record.path and Path(record.path).is_file():
        return read_record(record.path).history or {}
    return {}


# ---------------------------------------------------------------- W&B


def wandb_source(path: str, api=None) -> tuple[dict, list[RunRecord], HistoryFn]:
    """(sweep config, records, history_of) for the W&B sweep ENTITY/PROJECT/SWEEP_ID.

    Costs one sweep query and ceil(runs / PAGE_SIZE) listing pages; never touches run history.
    """
    try:
        entity, project, sweep_id = parse_sweep_path(path)
    except SweepError as e:
        raise SourceError(str(e)) from None
    if api is None:
        import wandb
        api = wandb.Api()
    sweep = api.sweep(f"{entity}/{project}/{sweep_id}")
    sweep_config = dict(sweep.config)
    axis_names = [name for name, _ in sweep_axes(sweep_config)[0]]
    # lazy=False: each page carries config and summary (lazy pages cost one extra query per run touched).
    runs = api.runs(f"{entity}/{project}", filters={"sweep": sweep_id}, per_page=PAGE_SIZE, lazy=False)
    records, run_objects = [], {}
    for run in runs:
        record = record_from_wandb_run(run, entity, project, axis_names)
        records.append(record)
        run_objects[record.path] = run

    def history_of(record: RunRecord) -> dict:
        if record.history is not None:
            return record.history
        run = run_objects.get(record.path)
        if run is None:
            return local_history(record)
        # scan_history returns every row (run.history() would sample 500 of them).
        losses = [row[LOSS_KEY] for row in run.scan_history(keys=[LOSS_KEY]) if LOSS_KEY in row]
        record.history = {LOSS_KEY: [float(v) if v is not None else float("nan") for v in losses]}
        return record.history

    return sweep_config, records, history_of


def record_from_wandb_run(run, entity: str, project: str, axis_names: list[str]) -> RunRecord:
    """RunRecord from a wandb.apis.public.Run of a non-lazy listing (touches no extra query)."""
    config = dict(run.config)
    # summary_metrics is the plain dict behind run.summary (an HTTPSummary wrapper).
    summary = dict(run.summary_metrics)
    state = str(run.state).lower()
    if summary.get("verdict") is None:
        summary["verdict"] = "error"
        summary.setdefault("error", f"W&B run state {state!r} with no verdict in its summary")
    summary["wandb_state"] = state
    if all(name in config for name in axis_names) and axis_names:
        name = record_name({key: config[key] for key in axis_names})
    else:
        name = str(run.name)
    return RunRecord(name=name, config=config, summary=summary, history=None,
                     created_at=parse_timestamp(run.created_at), run_id=str(run.id), source="wandb",
                     path=f"{entity}/{project}/{run.id}")


def parse_timestamp(text) -> float:
    """W&B's createdAt ('2025-01-02T03:04:05' or with 'Z'/offset, UTC when naive) -> unix seconds."""
    if isinstance(text, (int, float)):
        return float(text)
    moment = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


# ---------------------------------------------------------------- several sources


def combined_history(*functions: HistoryFn) -> HistoryFn:
    """history_of over merged sources: local records answer themselves, W&B ones ask their source."""
    def history_of(record: RunRecord) -> dict:
        if record.source != "wandb":
            return local_history(record)
        for function in functions:
            history = function(record)
            if history:
                return history
        return {}
    return history_of


# ---------------------------------------------------------------- sources -> one list of records


@dataclass
class Loaded:
    """Everything the sources gave: the first source's sweep config defines the grid."""
    sweep_config: dict
    records: list[RunRecord]
    history_of: HistoryFn
    name: str
    sweep_id: str = ""  # first W&B sweep id, for tags
    entity: str = ""
    project: str = ""
    sources: list[str] = field(default_factory=list)
    refinement: dict | None = None  # {"levels", "margin"} of an adaptive run (grid.apply_refinement)


def local_refinement(directory: str | Path) -> dict | None:
    """The levels and margin a `fractal-llm local --adaptive` run wrote beside its records, or None."""
    path = Path(directory) / ADAPTIVE_FILE
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def load_sources(sweep_paths: list[str], local_dirs: list[str], api=None) -> Loaded:
    if not sweep_paths and not local_dirs:
        raise ValueError("no source: give ENTITY/PROJECT/SWEEP_ID and/or --local DIR")
    configs, records, history_fns, sources = [], [], [], []
    entity = project = sweep_id = ""
    for path in sweep_paths:
        config, recs, history_of = wandb_source(path, api=api)
        if not sweep_id:
            entity, project, sweep_id = parse_sweep_path(path)  # checked by wandb_source
        configs.append((config, sweep_id))
        records += recs
        history_fns.append(history_of)
        sources.append(f"wandb:{path} ({len(recs)} runs)")
    refinement = None
    for directory in local_dirs:
        config, recs = local_source(directory)
        refinement = refinement or local_refinement(directory)
        configs.append((config, Path(directory).resolve().name))
        records += recs
        sources.append(f"local:{directory} ({len(recs)} records)")
    sweep_config, fallback = configs[0]
    name = str(sweep_config.get("name") or fallback)
    return Loaded(sweep_config, records, combined_history(*history_fns), name, sweep_id,
                  entity or str(sweep_config.get("entity") or ""), project or str(sweep_config.get("project") or ""),
                  sources, refinement)
