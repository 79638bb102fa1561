"""One map, one model across requeues: the first run of a sweep pins what its movable inputs name, and every
later run of that sweep trains on the same.

Movable inputs: a W&B model by alias (model_id wandb:e/p/name:latest), an hf: model at a branch, a hub
dataset at a branch (dataset_revision "main" or empty). A process resolves each once (base_model.resolve_model,
data.resolve_revision), which keeps one agent on one model, but a task requeued days later would resolve
again and could get a newer commit; the report then refuses the mixed map.

The pin is a W&B artifact in the sweep's project, one per sweep and input: `pins-<sweep id>-<digest of the
reference>`, type `pin`, its metadata {"sweep", "reference", "pinned"}. Its first version (v0) is the pin:
the first run to write one wins, and every run of the sweep reads v0 before it trains. Two first runs that
resolve at the same moment to different commits (the alias moved within those seconds) both write; the one
that wrote v1 trained on its own resolution, every later run on v0's.
"""

import hashlib
import json

from fractal_llm.config import TrainConfig
from fractal_llm.gpt import base_model, data

PIN_TYPE = "pin"


def movable_inputs(config: TrainConfig) -> list[tuple[str, str]]:
    """(kind, reference) of every input of this run that may name other weights or data later."""
    if config.model_family != "gpt":
        return []
    inputs = []
    if base_model.is_movable(config.model_id):
        inputs.append(("model", config.model_id))
    if data.is_movable_revision(config.dataset_id, config.dataset_revision):
        inputs.append(("dataset", json.dumps([config.dataset_id, config.dataset_revision])))
    return inputs


def artifact_name(sweep_id: str, reference: str) -> str:
    """A valid artifact name per sweep and input (references hold ':' and '/', which names may not)."""
    return f"pins-{sweep_id}-{hashlib.sha256(reference.encode()).hexdigest()[:16]}"


def resolve(kind: str, reference: str) -> str:
    """What the reference names in this process (resolved once per process, then cached)."""
    if kind == "model":
        return base_model.resolve_model(reference).identity
    return data.resolve_revision(*json.loads(reference))


def apply(kind: str, reference: str, pinned: str) -> None:
    """This process trains on `pinned` for the reference from now on."""
    if kind == "model":
        base_model.pin_model(reference, pinned)
    else:
        data.pin_revision(*json.loads(reference), pinned)


def read_pin(api, entity: str, project: str, name: str) -> dict | None:
    """The pin's metadata (its first version, v0), or None when the sweep has none yet."""
    path = f"{entity}/{project}/{name}:v0"
    return dict(api.artifact(path).metadata) if api.artifact_exists(path) else None


def pin_sweep_inputs(run, config: TrainConfig, sweep_id: str) -> dict[str, str]:
    """Before a sweep run trains: each movable input to the sweep's pin (reading it, or writing it as the
    first run of the sweep). Returns {reference: pinned}. Nothing to do (no API call) when nothing moves."""
    inputs = movable_inputs(config)
    if not inputs:
        return {}
    import wandb
    api, pins = wandb.Api(), {}
    for kind, reference in inputs:
        name = artifact_name(sweep_id, reference)
        pin = read_pin(api, run.entity, run.project, name)
        if pin is None:
            pin = {"sweep": sweep_id, "reference": reference, "pinned": resolve(kind, reference)}
            run.log_artifact(wandb.Artifact(name, type=PIN_TYPE, metadata=pin))
        apply(kind, reference, pin["pinned"])
        pins[reference] = pin["pinned"]
    return pins
