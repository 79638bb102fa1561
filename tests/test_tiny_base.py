import pytest
import torch

from fractal_llm.tiny_base import TinyRecipe, build_tiny_base
from nanochat.checkpoint import load_model

SMALL = TinyRecipe(steps=4, batch_size=2, tokenizer_docs=150, pretrain_docs=60, vocab_size=400, seed=5)


def test_tiny_base_is_deterministic_and_loadable(tmp_path):
    stats_a = build_tiny_base(tmp_path / "a", SMALL)
    stats_b = build_tiny_base(tmp_path / "b", SMALL)
    assert stats_a["loss_last"] == stats_b["loss_last"]
    model_a, tokenizer_a, meta = load_model(tmp_path / "a")
    model_b, tokenizer_b, _ = load_model(tmp_path / "b")
    assert tokenizer_a.fingerprint() == tokenizer_b.fingerprint()
    state_b = model_b.state_dict()
    assert all(torch.equal(value, state_b[key]) for key, value in model_a.state_dict().items())
    assert meta["model_config"]["vocab_size"] == 400 and model_a.num_params() < 2_000_000
    other = build_tiny_base(tmp_path / "c", TinyRecipe(**{**SMALL.__dict__, "seed": 6}))
    assert other["loss_last"] != stats_a["loss_last"]


def test_cache_directory_is_keyed_on_the_whole_recipe(monkeypatch):
    from fractal_llm.tiny_base import default_recipe, tiny_base_dir
    assert tiny_base_dir(SMALL) != tiny_base_dir(TinyRecipe(**{**SMALL.__dict__, "steps": 5}))
    assert tiny_base_dir(SMALL) == tiny_base_dir(TinyRecipe(**SMALL.__dict__))
    monkeypatch.setenv("FRACTAL_LLM_TINY_RECIPE", '{"steps": 7}')
    assert default_recipe().steps == 7 and tiny_base_dir() == tiny_base_dir(TinyRecipe(steps=7))
    monkeypatch.setenv("FRACTAL_LLM_TINY_RECIPE", '{"stepz": 7}')
    with pytest.raises(ValueError, match="stepz"):
        default_recipe()
