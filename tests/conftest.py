"""Test-wide settings: a private cache home per session, and W&B that never reaches a server."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("fractal_home")
    saved = {k: os.environ.get(k) for k in ("FRACTAL_LLM_HOME", "WANDB_MODE", "WANDB_SILENT", "WANDB_DIR")}
    os.environ["FRACTAL_LLM_HOME"] = str(home)
    os.environ["WANDB_MODE"] = "disabled"  # tests that want a real offline run set "offline" themselves
    os.environ["WANDB_SILENT"] = "true"
    os.environ["WANDB_DIR"] = str(home)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
