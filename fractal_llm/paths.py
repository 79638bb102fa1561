"""Where fractal-llm keeps its caches: base models, tokenized data and local run records.

One environment variable, FRACTAL_LLM_HOME, moves all of it (default: ~/.cache/fractal-llm).
"""

import os
from pathlib import Path


def home() -> Path:
    root = os.environ.get("FRACTAL_LLM_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "fractal-llm")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _subdir(name: str) -> Path:
    path = home() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def models_dir() -> Path:
    return _subdir("models")


def data_cache_dir() -> Path:
    return _subdir("data")


def runs_dir() -> Path:
    return _subdir("runs")


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent
