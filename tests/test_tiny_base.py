import pytest
import torch

from fractal_llm.gpt.make_base import TinyRecipe, build_tiny_base
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
    from fractal_llm.gpt.make_base import default_recipe, tiny_base_dir
    assert tiny_base_dir(SMALL) != tiny_base_dir(TinyRecipe(**{**SMALL.__dict__, "steps": 5}))
    assert tiny_base_dir(SMALL) == tiny_base_dir(TinyRecipe(**SMALL.__dict__))
    monkeypatch.setenv("FRACTAL_LLM_TINY_RECIPE", '{"steps": 7}')
    assert default_recipe().steps == 7 and tiny_base_dir() == tiny_base_dir(TinyRecipe(steps=7))
    monkeypatch.setenv("FRACTAL_LLM_TINY_RECIPE", '{"stepz": 7}')
    with pytest.raises(ValueError, match="stepz"):
        default_recipe()


def test_dec_2025_builds_keep_the_cache_key_they_had_before_tiny_2026():
    """The tiny base directory names runs' base model (repro.base_model): a new key would split old maps."""
    import hashlib
    import json
    from dataclasses import asdict
    from fractal_llm.gpt.make_base import TINY_VERSION, tiny_base_dir
    old_key = hashlib.sha1(json.dumps([TINY_VERSION, asdict(SMALL)], sort_keys=True).encode()).hexdigest()[:12]
    assert tiny_base_dir(SMALL).name == f"tiny-v{TINY_VERSION}-seed5-{old_key}"
    assert tiny_base_dir(SMALL, "tiny-2026").name.startswith("tiny-2026-") and old_key not in tiny_base_dir(
        SMALL, "tiny-2026").name
    with pytest.raises(ValueError, match="tiny-2027.*allowed"):
        tiny_base_dir(SMALL, "tiny-2027")


def test_tiny_2026_is_a_2026_architecture_pretrained_like_the_tiny_base(tmp_path):
    stats = build_tiny_base(tmp_path / "m", SMALL, "tiny-2026")
    model, _, meta = load_model(tmp_path / "m")
    assert meta["loaded_from"]["era"] == "2026" and meta["model_config"]["window_pattern"] == "SL"
    assert model.windows == [128, 256]  # a short window (a quarter of 256, in 128-token tiles), then full
    assert set(model.value_embeds) == {"1"} and stats["model_id"] == "tiny-2026"
    assert stats["loss_last"] < stats["loss_first"]
    for name in ("resid_lambdas", "x0_lambdas", "smear_lambda", "backout_lambda"):  # the lambdas pre-trained
        assert getattr(model, name).detach().abs().sum() > 0, name
    again = build_tiny_base(tmp_path / "again", SMALL, "tiny-2026")
    assert again["loss_last"] == stats["loss_last"]


def test_the_build_on_first_use_prints_progress_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    from fractal_llm.gpt.make_base import ensure_tiny_base
    monkeypatch.setenv("FRACTAL_LLM_HOME", str(tmp_path))
    out = ensure_tiny_base(SMALL)
    err = capsys.readouterr().err
    assert "training the tokenizer" in err
    assert "pre-training tiny: step 1/4" in err and "pre-training tiny: step 4/4" in err  # first and last
    assert ensure_tiny_base(SMALL) == out and capsys.readouterr().err == ""  # built: silent
