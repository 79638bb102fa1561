"""`fractal-llm`: one command, one subcommand per job; each job's module owns its own arguments."""

import importlib
import sys

# subcommand -> (module with main(argv) -> int, one-line help)
COMMANDS = {
    "local": ("fractal_llm.runner", "run a sweep YAML's grid on this machine, no W&B server needed"),
    "agents": ("fractal_llm.agents", "start/stop/list one W&B agent per GPU, on this host or over ssh"),
    "zoom": ("fractal_llm.zoom_sequence", "a zoom sequence on any sweep: frames on one centre, each half as wide"),
    "refine": ("fractal_llm.refine_sweeps", "adaptive refinement on W&B: create the next level's point-list sweep"),
    "sweep": ("fractal_llm.sweep", "write (`new`) or check (`check`) a grid sweep YAML"),
    "report": ("fractal_llm.report_command", "boundary images and fractal dimension of a sweep (W&B or local records)"),
    "refill": ("fractal_llm.refill", "write a point-list sweep over the points of a map that have no usable run"),
    "make-base": ("fractal_llm.tiny_base", "build the tiny base model of the embedded default"),
    "paper": ("fractal_llm.paper", "reproduce Sohl-Dickstein 2024's fractal boundaries (batched MLP)"),
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
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"fractal-llm: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
