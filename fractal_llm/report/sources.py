"""Where run records come from: a local runner's directory, or a W&B sweep through the public API.

Both produce the same RunRecord type, so sources can be merged by concatenating their lists
(the grid resolves duplicates). The W&B path is built for big sweeps: one sweep query plus one paged,
non-lazy run listing (config and summary come with each page), and no history at all;
loss curves are fetched afterwards, unsampled, only for the few runs that get plotted.
Every query is retried with backoff on a transient failure (a timeout, no response, HTTP 408/429/5xx); any
other failure stops with the sweep path named.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import yaml

from fractal_llm.config import ConfigError
from fractal_llm.errors import FractalLLMError
from fractal_llm.report.grid import GridError, sweep_axes
from fractal_llm.records import RunRecord, read_record, read_records, record_name
from fractal_llm.refine.levels import RefineSettings, read_settings
from fractal_llm.sweep import SweepError, parse_sweep_path, unpack_point

LOSS_KEY = "train/loss"
TRANSIENT_HTTP = (408, 429, 500, 502, 503, 504)

HistoryFn = Callable[[RunRecord], dict]


@dataclass
class ApiSettings:
    """How the W&B public API is asked. Not measured against a real server (none is reachable here): the
    client's own defaults are a 19 s timeout and 50 runs a page; a non-lazy page carries every run's config and
    summary, so its response grows with the page, and a slow server must answer one page within the timeout.
    500 runs a page is 9 pages for a 4096-run sweep; 60 s gives a slow server 3x the client's default."""
    timeout_s: int = 60
    page_size: int = 500
    retries: int = 5  # attempts after the first, per query
    backoff_s: float = 2.0  # wait before retry k: backoff_s * 2**k (2, 4, 8, 16, 32 s: a minute in all)


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    """The W&B listing settings (ApiSettings) as arguments: `fractal-llm report` and `fractal-llm refill`."""
    defaults = ApiSettings()
    parser.add_argument("--api-timeout", type=int, default=defaults.timeout_s, metavar="SECONDS",
                        help=f"HTTP timeout of one W&B API request (default {defaults.timeout_s})")
    parser.add_argument("--page-size", type=int, default=defaults.page_size, metavar="N",
                        help=f"runs per page of the W&B run listing (default {defaults.page_size})")


def api_settings(args, parser: argparse.ArgumentParser) -> ApiSettings:
    if args.api_timeout < 1 or args.page_size < 1:
        parser.error(f"--api-timeout={args.api_timeout} and --page-size={args.page_size} must be >= 1")
    return ApiSettings(timeout_s=args.api_timeout, page_size=args.page_size)


class SourceError(FractalLLMError):
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
    # A record file that does not parse is a hole named in the report, never the end of it (the runner
    # already runs such a point again).
    return sweep_config, read_records(directory, keep_unreadable=True)


def local_history(record: RunRecord) -> dict:
    """A local record carries its history; read it again from its file if it was dropped."""
    if record.history is not None:
        return record.history
    if record.path and Path(record.path).is_file():
        return read_record(record.path).history or {}
    return {}


# ---------------------------------------------------------------- W&B


def make_api(settings: ApiSettings):
    import wandb
    return wandb.Api(timeout=settings.timeout_s)


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: no answer (a timeout, a dropped connection), or the server saying "later"
    (HTTP 408, 429, 5xx). wandb's public API raises WandbApiFailedError whose `response` is None when no HTTP
    response came back, else carries `http_status`."""
    if not hasattr(exc, "response"):
        return isinstance(exc, (TimeoutError, ConnectionError))
    if exc.response is None:
        return True
    status = getattr(exc.response, "http_status", None) or getattr(exc.response, "status_code", None) or 0
    return status == 0 or status in TRANSIENT_HTTP


def with_retries(what: str, path: str, call: Callable, settings: ApiSettings):
    """call() with backoff on transient failures; a permanent one (or the last try) is a SourceError that
    names the sweep."""
    for attempt in range(settings.retries + 1):
        try:
            return call()
        except Exception as exc:  # classified right here: transient ones are retried, others reported
            if not is_transient(exc) or attempt == settings.retries:
                tries = f" after {attempt + 1} tries" if attempt else ""
                raise SourceError(f"W&B sweep {path}: {what} failed{tries}: {type(exc).__name__}: {exc}") from exc
            time.sleep(settings.backoff_s * 2 ** attempt)


WandbRuns = dict  # run path -> (RunRecord, wandb.apis.public.Run)


def wandb_runs(path: str, api, settings: ApiSettings, since: datetime | None = None) -> tuple[dict, WandbRuns]:
    """(sweep config, {run path: (record, run)}) for the W&B sweep ENTITY/PROJECT/SWEEP_ID: one sweep query
    and ceil(runs / page_size) listing pages, no history. since: only runs updated after that moment (a
    filter on the run's `updatedAt`, which the server applies; the --watch refreshes)."""
    entity, project, sweep_id = parse_or_refuse(path)
    sweep_config = with_retries("reading the sweep", path,
                                lambda: dict(api.sweep(f"{entity}/{project}/{sweep_id}").config), settings)
    axis_names = [name for name, _ in sweep_axes(sweep_config)[0]]
    filters: dict = {"sweep": sweep_id}
    if since is not None:
        moment = since.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        filters = {"$and": [filters, {"updatedAt": {"$gt": moment}}]}

    def listing() -> list:
        # lazy=False: each page carries config and summary (lazy pages cost one extra query per run touched).
        # A failed page restarts the listing: wandb's iterator cannot be resumed where it failed.
        # include_sweeps=False: the default (True before wandb 0.28) costs one sweep query per run listed.
        return list(api.runs(f"{entity}/{project}", filters=filters, per_page=settings.page_size, lazy=False,
                             include_sweeps=False))

    runs: WandbRuns = {}
    for run in with_retries("listing its runs", path, listing, settings):
        record = record_from_wandb_run(run, entity, project, axis_names)
        runs[record.path] = (record, run)
    return sweep_config, runs


def history_from(runs: WandbRuns, path: str, settings: ApiSettings) -> HistoryFn:
    """history_of for W&B records: every train/loss row of a run, fetched once, when first asked."""
    def history_of(record: RunRecord) -> dict:
        if record.history is not None:
            return record.history
        if record.path not in runs:
            return local_history(record)
        run = runs[record.path][1]
        # scan_history returns every row (run.history() would sample 500 of them).
        rows = with_retries(f"reading the history of {record.path}", path,
                            lambda: list(run.scan_history(keys=[LOSS_KEY])), settings)
        losses = [row[LOSS_KEY] for row in rows if LOSS_KEY in row]
        record.history = {LOSS_KEY: [float(v) if v is not None else float("nan") for v in losses]}
        return record.history
    return history_of


def wandb_source(path: str, api=None, settings: ApiSettings | None = None) -> tuple[dict, list[RunRecord], HistoryFn]:
    """(sweep config, records, history_of) for the W&B sweep ENTITY/PROJECT/SWEEP_ID (see wandb_runs)."""
    settings = settings or ApiSettings()
    parse_or_refuse(path)
    api = api if api is not None else connect(path, settings)
    sweep_config, runs = wandb_runs(path, api, settings)
    return sweep_config, [record for record, _ in runs.values()], history_from(runs, path, settings)


def parse_or_refuse(path: str) -> tuple[str, str, str]:
    try:
        return parse_sweep_path(path)
    except SweepError as e:
        raise SourceError(str(e)) from None


def connect(path: str, settings: ApiSettings):
    return with_retries("connecting", path, lambda: make_api(settings), settings)


def record_from_wandb_run(run, entity: str, project: str, axis_names: list[str]) -> RunRecord:
    """RunRecord from a wandb.apis.public.Run of a non-lazy listing (touches no extra query). A run without
    a verdict keeps none: the grid shows it pending (running) or as a hole named by its state (crashed...)."""
    try:
        config = unpack_point(dict(run.config))  # a point-list sweep's grid_point: its axis values
    except ConfigError as e:
        raise SourceError(f"W&B run {entity}/{project}/{run.id}: {e}") from None
    # summary_metrics is the plain dict behind run.summary (an HTTPSummary wrapper).
    summary = dict(run.summary_metrics)
    state = str(run.state).lower()
    if summary.get("verdict") is None:
        summary["verdict"] = None
        summary.setdefault("error", f"W&B run state {state!r}, no verdict in its summary")
    if all(name in config for name in axis_names) and axis_names:
        name = record_name({key: config[key] for key in axis_names})
    else:
        name = str(run.name)
    return RunRecord(name=name, config=config, summary=summary, history=None,
                     created_at=parse_timestamp(run.created_at), run_id=str(run.id), source="wandb",
                     path=f"{entity}/{project}/{run.id}", state=state)


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
    """Everything the sources gave: the first source's sweep config defines the grid (its lattice; the other
    sources must sweep the same two axes, and their runs are placed on it by value)."""
    sweep_config: dict
    records: list[RunRecord]
    history_of: HistoryFn
    name: str
    sweep_id: str = ""  # first W&B sweep id, for tags
    entity: str = ""
    project: str = ""
    sources: list[str] = field(default_factory=list)
    changed: int = 0  # W&B runs this pull returned (all of them, or those updated since the last pull)
    full_pull: bool = True
    refinement: RefineSettings | None = None  # of an adaptive run (grid.apply_refinement)


FULL_PULL_EVERY = 10  # --watch: every 10th pull lists every run (a run changed in the skew window, a deletion)
CLOCK_SKEW = timedelta(minutes=2)  # --watch: ask for runs updated since the last pull minus this


class SourcePoller:
    """The sources of one report, pulled once (load_sources) or again and again (--watch). A W&B sweep's
    later pulls ask only for runs updated since the previous pull (minus CLOCK_SKEW) and merge them by run
    path; every FULL_PULL_EVERY-th pull lists everything again. Local directories are re-read each time."""

    def __init__(self, sweep_paths: list[str], local_dirs: list[str], api=None, settings: ApiSettings | None = None,
                 console=None):
        if not sweep_paths and not local_dirs:
            raise ValueError("no source: give ENTITY/PROJECT/SWEEP_ID and/or --local DIR")
        for path in sweep_paths:
            parse_or_refuse(path)
        self.sweep_paths, self.local_dirs = list(sweep_paths), list(local_dirs)
        self.settings = settings or ApiSettings()
        self.api = api
        self.console = console
        self.runs: dict[str, WandbRuns] = {path: {} for path in sweep_paths}
        self.configs: dict[str, dict] = {}
        self.pulled_at: dict[str, datetime] = {}
        self.pulls = 0
        self.incremental = True

    def _pull_sweep(self, path: str, full: bool) -> int:
        started = datetime.now(timezone.utc)
        since = None if full or path not in self.pulled_at else self.pulled_at[path] - CLOCK_SKEW
        try:
            config, runs = wandb_runs(path, self.api, self.settings, since)
        except SourceError as e:
            if since is None:
                raise
            # A server that refuses the updatedAt filter: say so once, then list everything each time.
            self.incremental = False
            if self.console is not None:
                self.console.print(f"[yellow]warning:[/yellow] incremental pull refused ({e}); pulling every run "
                                   "each refresh from now on", highlight=False, soft_wrap=True)
            config, runs = wandb_runs(path, self.api, self.settings)
            since = None
        self.configs[path] = config
        if since is None:
            self.runs[path] = runs  # a full listing replaces: a deleted run goes away
        else:
            self.runs[path].update(runs)
        self.pulled_at[path] = started
        return len(runs)

    def pull(self) -> Loaded:
        full = not self.incremental or self.pulls % FULL_PULL_EVERY == 0
        if self.sweep_paths and self.api is None:
            self.api = connect(self.sweep_paths[0], self.settings)
        changed = sum(self._pull_sweep(path, full) for path in self.sweep_paths)
        self.pulls += 1
        configs, records, history_fns, sources = [], [], [], []
        for path in self.sweep_paths:
            recs = [record for record, _ in self.runs[path].values()]
            configs.append((self.configs[path], parse_sweep_path(path)[2], f"wandb:{path}"))
            records += recs
            history_fns.append(history_from(self.runs[path], path, self.settings))
            sources.append(f"wandb:{path} ({len(recs)} runs)")
        refinement = None
        for directory in self.local_dirs:
            config, recs = local_source(directory)
            refinement = refinement or read_settings(directory)
            configs.append((config, Path(directory).resolve().name, f"--local {directory}"))
            records += recs
            sources.append(f"local:{directory} ({len(recs)} records)")
        check_same_axes(configs)
        sweep_config, fallback, _ = configs[0]
        name = str(sweep_config.get("name") or fallback)
        entity, project, sweep_id = parse_sweep_path(self.sweep_paths[0]) if self.sweep_paths else ("", "", "")
        return Loaded(sweep_config, records, combined_history(*history_fns), name, sweep_id,
                      entity or str(sweep_config.get("entity") or ""),
                      project or str(sweep_config.get("project") or ""), sources, changed, full, refinement)


def check_same_axes(configs: list[tuple[dict, str, str]]) -> None:
    """Merged sources share one map: every sweep must have the first one's two axes."""
    first_config, _, first_where = configs[0]
    first = [name for name, _ in _axes_of(first_config, first_where)]
    for config, _, where in configs[1:]:
        names = [name for name, _ in _axes_of(config, where)]
        if names != first:
            raise SourceError(f"{where}: sweeps axes {' x '.join(names)}, but {first_where} (the first source, "
                              f"whose sweep defines the map) sweeps {' x '.join(first)}; only sweeps over the "
                              "same two axes merge into one map")


def _axes_of(config: dict, where: str):
    try:
        return sweep_axes(config)[0]
    except GridError as e:
        raise SourceError(f"{where}: {e}") from None


def load_sources(sweep_paths: list[str], local_dirs: list[str], api=None,
                 settings: ApiSettings | None = None) -> Loaded:
    return SourcePoller(sweep_paths, local_dirs, api=api, settings=settings).pull()
