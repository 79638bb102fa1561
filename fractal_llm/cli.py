"""`fractal-llm`: one command, one subcommand per job; each job's module owns its own arguments.

Bad input (fractal_llm.errors.FractalLLMError, whichever command raised it) is caught here, once: one
`error:` line on stderr and exit 2, no traceback. A command's module run as a script goes through here too.
"""

import importlib
import sys

from rich.console import Console
from rich.markup import escape

from fractal_llm.errors import FractalLLMError

# subcommand -> (module with main(argv) -> int, one-line help)
COMMANDS = {
    "local": ("fractal_llm.runners.local", "run a sweep YAML's grid on this machine, no W&B server needed"),
    "agents": ("fractal_llm.runners.agents", "start/stop/list one W&B agent per GPU, on this host or over ssh"),
    "agent": ("fractal_llm.runners.agent", "one W&B sweep agent in the foreground (a SLURM task, a Kubernetes pod)"),
    "zoom": ("fractal_llm.runners.zoom", "a zoom sequence on any sweep: frames on one centre, each half as wide"),
    "transect": ("fractal_llm.runners.transect", "a line of points through a border: its scales in 1-D (512 points, not 4096)"),
    "perturb": ("fractal_llm.runners.perturb", "uncertainty exponent and precision floor around a transect's border"),
    "boundary": ("fractal_llm.runners.boundary", "a point on the border by bisection along one axis"),
    "refine": ("fractal_llm.refine.refine", "adaptive refinement on W&B: create the next level's point-list sweep"),
    "sweep": ("fractal_llm.sweep", "write (`new`) or check (`check`) a grid sweep YAML"),
    "report": ("fractal_llm.report.report", "boundary images and fractal dimension of a sweep (W&B or local records)"),
    "refill": ("fractal_llm.report.refill", "write a point-list sweep over the points of a map that have no usable run"),
    "make-base": ("fractal_llm.gpt.make_base", "build the tiny base model of the embedded default"),
    "paper": ("fractal_llm.paper.paper", "reproduce Sohl-Dickstein 2024's fractal boundaries (batched MLP)"),
    "train": ("fractal_llm.train", "one training run: --name=value ... (same as python -m fractal_llm.train)"),
}


def usage() -> str:
    lines = ["usage: fractal-llm COMMAND [ARGS]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`fractal-llm COMMAND --help` for a command's arguments."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from importlib.metadata import version
        print(f"fractal-llm {version('fractal-llm')}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fractal-llm: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return module.main(rest)
    except FractalLLMError as e:
        Console(stderr=True).print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
        return 2


def run_as_script(command: str) -> int:
    """`python -m fractal_llm.MODULE ARGS` (or a script) as `fractal-llm COMMAND ARGS`: the same catch."""
    return main([command, *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
