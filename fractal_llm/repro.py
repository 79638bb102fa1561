"""Reproducibility metadata: the one `repro` shape every run's resolved config carries, whatever its family.

repro = {git_commit, python, torch, wandb, device, device_name, host, timing: {...}} plus family extras
(the mlp family adds dtype and batched; the gpt family base_model, vocab_size, dataset and training_step,
"compiled" or "eager": whether torch.compile ran the step). `timing` holds seconds per phase; point.execute
adds log_s.
"""

import platform
import socket
import subprocess
from functools import lru_cache

import torch

from fractal_llm import paths


@lru_cache(maxsize=1)
def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=paths.project_root(), capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


@lru_cache(maxsize=8)
def _environment(device: str) -> tuple:
    import wandb
    torch_device = torch.device(device)
    name = torch.cuda.get_device_name(torch_device) if torch_device.type == "cuda" else platform.processor() or "cpu"
    return (git_commit(), platform.python_version(), torch.__version__, wandb.__version__, name,
            socket.gethostname())


def repro_metadata(device: torch.device | str, timing: dict[str, float], **extra) -> dict:
    commit, python, torch_version, wandb_version, device_name, host = _environment(str(device))
    return {"git_commit": commit, "python": python, "torch": torch_version, "wandb": wandb_version,
            "device": str(device), "device_name": device_name, "host": host, "timing": dict(timing), **extra}
