"""The train entry: `train(config)`, what every sweep point runs, and its CLI `python -m fractal_llm.train`.

train(config) -> RunResult dispatches to the model family's trainer (TRAINERS); this module never looks
inside one. One point's W&B run, record and stop handling are fractal_llm/runners/point.py; the W&B worker that runs
points handed out by a sweep is fractal_llm/runners/agent.py. The sweep YAMLs run this module (`program:` and
`${interpreter} -m fractal_llm.train ${args}`), so its CLI is also what the plain `wandb agent` starts.
"""

import io
import signal
import sys
import time
import tokenize
from dataclasses import fields
from typing import Callable

from fractal_llm.config import CHOICES, FAMILY_FIELDS, RANGES, TrainConfig
from fractal_llm.errors import FractalLLMError
from fractal_llm.progress import LineClock
from fractal_llm.records import RunResult, record_name
from fractal_llm.sweep import run_overrides

OnStep = Callable[[int, dict], None]


def _train_gpt(config: TrainConfig, on_step: OnStep | None) -> RunResult:
    from fractal_llm.gpt.finetune import train_gpt  # torch + nanochat: loaded by the family that needs them
    return train_gpt(config, on_step)


def _train_mlp(config: TrainConfig, on_step: OnStep | None) -> RunResult:
    from fractal_llm.paper.mlp import train_one
    return train_one(config)


TRAINERS: dict[str, Callable[[TrainConfig, OnStep | None], RunResult]] = {"gpt": _train_gpt, "mlp": _train_mlp}


def train(config: TrainConfig, on_step: OnStep | None = None) -> RunResult:
    """Train one grid point with its family's trainer. Raises on errors; divergence is a verdict."""
    return TRAINERS[config.model_family](config, on_step)


def preflight(config: TrainConfig) -> None:
    """Cheap checks of the inputs on disk (gpt: dataset, model directory), before W&B or any model work."""
    if config.model_family == "gpt":
        from fractal_llm.gpt.finetune import preflight as gpt_preflight
        gpt_preflight(config)


# ---------------------------------------------------------------------------------------------- CLI

def field_comments() -> dict[str, str]:
    """Each TrainConfig field's comment in config.py (the one copy of the field docs): its trailing comment,
    the comment lines right above it, and the section (`# --- gpt family`) it sits in, or "both families" for
    a field both read (config.FAMILY_FIELDS lists neither)."""
    import inspect
    source = inspect.getsource(TrainConfig)
    comment_at = {t.start[0]: t.string.lstrip("#").strip()
                  for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}
    names = {f.name for f in fields(TrainConfig)}
    comments, section, above = {}, "", []
    for row, line in enumerate(source.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            if stripped.startswith("# ---"):
                section, above = comment_at[row].strip("- ").split(";")[0], []
            else:
                above.append(comment_at[row])
            continue
        name = stripped.split(":", 1)[0]
        if name in names and line.startswith("    ") and not line.startswith("     "):
            text = " ".join([*above, comment_at.get(row, "")]).strip()
            label = section if any(name in family for family in FAMILY_FIELDS.values()) else "both families"
            comments[name] = f"[{label}] {text}".strip() if label else text
        above = []
    return comments


def usage() -> str:
    comments = field_comments()
    lines = ["usage: python -m fractal_llm.train [--name=value ...]   (no arguments: a short embedded-default run)",
             "", "fields (default; allowed values; what it is):"]
    for f in fields(TrainConfig):
        allowed = ""
        if f.name in CHOICES:
            allowed = " one of " + "|".join(CHOICES[f.name])
        elif f.name in RANGES:
            low, high, low_in, high_in = RANGES[f.name]
            allowed = (f" {'[' if low_in else '('}{low if low is not None else '-inf'}, "
                       f"{high if high is not None else 'inf'}{']' if high_in else ')'}")
        note = comments.get(f.name, "")
        lines.append(f"  --{f.name}={f.default!r}{';' + allowed if allowed else ''}{'  # ' + note if note else ''}")
    lines += ["", "WANDB_MODE=online|offline|disabled (default: online with credentials, else offline);",
              "local record under $FRACTAL_LLM_RUNS_DIR (default: the cache's runs/adhoc or runs/<sweep id>);",
              "a progress line every few seconds on stderr; `record: PATH` last on stdout."]
    return "\n".join(lines)


class ProgressLine:
    """One plain line at a point's first step, then every progress.PLAIN_LINE_S seconds (a GPU point trains
    for minutes)."""

    def __init__(self, console):
        self.console, self.t0, self.clock = console, time.monotonic(), LineClock()

    def __call__(self, step: int, row: dict) -> None:
        if not self.clock.due():
            return
        loss = row.get("train/loss")
        self.console.print(f"step {step}  train/loss {loss:.4g}  {time.monotonic() - self.t0:.0f}s", highlight=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from rich.console import Console

    from fractal_llm.runners import point
    console = Console(stderr=True)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    try:  # bad input (a config value, the dataset, no credentials inside a sweep): one line, exit 2
        overrides = run_overrides(argv)
        config = TrainConfig.from_dict(overrides)
        preflight(config)
        mode = point.default_wandb_mode()
    except FractalLLMError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        return 2
    signal.signal(signal.SIGTERM, point.on_sigterm)  # `wandb agent` stops a run with SIGTERM; so does a scheduler
    name = record_name(overrides)
    run = point.start_run(config.to_dict(), mode, name=name)
    if run.sweep_id:
        # Inside a sweep agent the sweep's values arrive through wandb.config: use the same resolved config.
        config = TrainConfig.from_dict(point.sweep_values(run.config))
    try:
        record = point.execute(train, config, name, point.default_record_dir(run.sweep_id), run,
                               progress=ProgressLine(console))
    except point.RunStopped as stop:
        if point.tell_wandb(run.finish, exit_code=point.STOPPED_EXIT) and not stop.wandb_gone:
            console.print(f"[yellow]{stop}[/yellow]: no record written; the run is marked preempting and ends "
                          "non-zero, so W&B requeues it inside a sweep", soft_wrap=True)
        else:
            console.print(f"[yellow]{stop}[/yellow]: no record written; wandb-core was already gone, so the run "
                          "could not be marked preempting: W&B marks it crashed and `fractal-llm refill` lists "
                          "its point", soft_wrap=True)
        return point.STOPPED_EXIT
    summary = record.summary
    console.print(f"verdict: [bold]{summary['verdict']}[/bold]  loss {summary['loss_first']} -> "
                  f"{summary['loss_last']}  steps {summary['steps']}  {summary['runtime_s']:.2f}s", soft_wrap=True)
    if summary["error"]:
        console.print(f"[red]error:[/red] {summary['error']}", soft_wrap=True)
    run.finish(exit_code=point.exit_code(record))
    print(f"record: {record.path}")
    return point.exit_code(record)


if __name__ == "__main__":
    sys.exit(main())
