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


# The tiny base of the embedded default takes a minute or two to pre-train; tests seed the cache
# with a much shorter recipe of the same shape so model_id="tiny" finds a complete build.
TEST_RECIPE_CHANGES = dict(steps=25, batch_size=4, tokenizer_docs=300, pretrain_docs=400, vocab_size=512)


@pytest.fixture(scope="session")
def tiny_base(isolated_home):
    from fractal_llm.tiny_base import TinyRecipe, build_tiny_base, tiny_base_dir
    out = tiny_base_dir()
    if not (out / "DONE").exists():
        build_tiny_base(out, TinyRecipe(**TEST_RECIPE_CHANGES))
    return out


@pytest.fixture(scope="module")
def one_torch_thread():
    """Paper-mode tests run small per-step ops: one torch thread is faster and immune to a busy 2-core machine."""
    import torch
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
