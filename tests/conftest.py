"""Test-wide settings: a private cache home per session, and W&B that never reaches a server."""

import json
import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("fractal_home")
    saved = {k: os.environ.get(k) for k in ("FRACTAL_LLM_HOME", "WANDB_MODE", "WANDB_SILENT", "WANDB_DIR",
                                            "FRACTAL_LLM_TINY_RECIPE", "FRACTAL_LLM_MID_RECIPE")}
    os.environ["FRACTAL_LLM_HOME"] = str(home)
    os.environ["FRACTAL_LLM_TINY_RECIPE"] = json.dumps(TEST_RECIPE_CHANGES)
    os.environ["FRACTAL_LLM_MID_RECIPE"] = json.dumps(TEST_MID_RECIPE_CHANGES)
    os.environ["WANDB_MODE"] = "disabled"  # tests that want a real offline run set "offline" themselves
    os.environ["WANDB_SILENT"] = "true"
    os.environ["WANDB_DIR"] = str(home)
    yield home
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# The tiny base of the embedded default takes a minute or two to pre-train; tests (and the processes they
# start, which inherit the environment) use a much shorter recipe of the same shape for model_id="tiny".
TEST_RECIPE_CHANGES = dict(steps=25, batch_size=4, tokenizer_docs=300, pretrain_docs=400, vocab_size=512)
# The same for the mid stage of model_id="tiny-mid" (about a second; its special tokens are learned by then).
TEST_MID_RECIPE_CHANGES = dict(steps=10, batch_size=4, conversations=200)


@pytest.fixture(scope="session")
def tiny_base(isolated_home):
    from fractal_llm.gpt.make_base import ensure_tiny_base
    return ensure_tiny_base()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Paper-mode tests run small per-step ops: one torch thread is faster and immune to a busy 2-core machine."""
    import torch
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def grid_engine():
    """W&B's grid engine, the `sweeps` package of the dev extra. The tests that use it fail without it, not
    skip: in CI they must run."""
    try:
        # grid_search, not the package: the repo's own sweeps/ folder imports as an empty namespace package.
        import sweeps.grid_search  # noqa: F401
    except ImportError as e:
        pytest.fail(f"W&B's grid engine (the `sweeps` package) is missing ({e}): pip install -e .[dev]",
                    pytrace=False)
    import sweeps
    return sweeps
