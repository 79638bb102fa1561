"""tiny-mid: the tiny base mid-trained on chat conversations, the stage nanochat's SFT starts from. Tests use
conftest's short recipes (FRACTAL_LLM_TINY_RECIPE, FRACTAL_LLM_MID_RECIPE)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from fractal_llm.gpt import docqa
from fractal_llm.gpt.make_base import MidRecipe, build_mid_base, ensure_tiny_base, tiny_base_dir, TinyRecipe
from nanochat.checkpoint import load_model

SMALL_MID = MidRecipe(steps=3, batch_size=2, conversations=40, seed=5)


def special_token_loss(directory) -> tuple[float, float]:
    """(mean loss on the special tokens of 10 rendered validation conversations, ln(vocab size))."""
    model, tokenizer, _ = load_model(directory)
    special = {tokenizer.encode_special(name) for name in tokenizer.get_special_tokens()}
    losses = []
    with torch.no_grad():
        for conversation in docqa.generate(10, seed=0, split="validation"):
            ids, _ = tokenizer.render_conversation(conversation, max_tokens=257)
            targets = torch.tensor(ids[1:])
            loss = F.cross_entropy(model(torch.tensor([ids[:-1]]))[0].float(), targets, reduction="none")
            losses += [value for value, t in zip(loss.tolist(), targets.tolist()) if t in special]
    return sum(losses) / len(losses), math.log(tokenizer.get_vocab_size())


def test_tiny_mid_knows_the_chat_format_and_sft_from_it_starts_below_the_uniform_guess(capsys):
    from fractal_llm.config import TrainConfig
    from fractal_llm.gpt.make_base import main
    from fractal_llm.train import train
    mid_loss, uniform = special_token_loss(ensure_tiny_base(model_id="tiny-mid"))
    base_loss, _ = special_token_loss(ensure_tiny_base(model_id="tiny"))
    # measured with the test recipes: tiny 9.8 (it never saw the special tokens), tiny-mid 2.4, ln(512) 6.24
    assert mid_loss < uniform - 2 < base_loss
    result = train(TrainConfig(model_id="tiny-mid", dataset_id="docqa", max_seq_len=256, device_batch_size=4,
                               num_iterations=2, matrix_lr=1e-3, unembedding_lr=1e-3))
    assert result.summary["error"] is None and result.summary["loss_first"] < uniform
    assert result.config["repro"]["base_model"].startswith("tiny-mid:tiny-mid-")
    capsys.readouterr()
    assert main(["--model", "tiny-mid"]) == 0 and "tiny-mid base already built" in capsys.readouterr().out


def test_the_mid_stage_is_deterministic_and_keyed_on_both_recipes(tmp_path, monkeypatch):
    base = ensure_tiny_base()
    stats_a = build_mid_base(tmp_path / "a", base, SMALL_MID)
    stats_b = build_mid_base(tmp_path / "b", base, SMALL_MID)
    assert stats_a["loss_last"] == stats_b["loss_last"] and stats_a["base"] == base.name
    model_a, tokenizer_a, meta = load_model(tmp_path / "a")
    model_b, _, _ = load_model(tmp_path / "b")
    state_b = model_b.state_dict()
    assert all(torch.equal(value, state_b[key]) for key, value in model_a.state_dict().items())
    assert meta["tiny_mid"]["mid_recipe"]["steps"] == 3 and "recipe" in meta["tiny_base"]
    assert tokenizer_a.fingerprint() == load_model(base)[1].fingerprint()

    recipe = TinyRecipe(steps=7)
    mid_dir = tiny_base_dir(recipe, "tiny-mid", SMALL_MID)
    assert mid_dir.name.startswith("tiny-mid-v")
    assert mid_dir != tiny_base_dir(recipe, "tiny-mid", MidRecipe(**{**SMALL_MID.__dict__, "steps": 4}))
    assert mid_dir != tiny_base_dir(TinyRecipe(steps=8), "tiny-mid", SMALL_MID)
    tiny_dir = tiny_base_dir(recipe, "tiny")
    monkeypatch.setenv("FRACTAL_LLM_MID_RECIPE", json.dumps({"steps": 4}))
    assert tiny_base_dir(recipe, "tiny") == tiny_dir  # the base's key ignores the mid stage
    assert tiny_base_dir(recipe, "tiny-mid") == tiny_base_dir(recipe, "tiny-mid", MidRecipe(steps=4))
    monkeypatch.setenv("FRACTAL_LLM_MID_RECIPE", json.dumps({"stepz": 4}))
    with pytest.raises(ValueError, match="FRACTAL_LLM_MID_RECIPE.*stepz"):
        tiny_base_dir(recipe, "tiny-mid")


def test_midtrain_conversations_have_the_sft_layout_but_never_its_questions():
    mid = docqa.midtrain_conversations(300, seed=0)
    assert mid == docqa.midtrain_conversations(300, seed=0) and mid != docqa.midtrain_conversations(300, seed=1)
    sft_questions = {message["content"].rsplit("Question: ", 1)[-1]
                     for conversation in docqa.generate(300, seed=0, split="train")
                     for message in conversation["messages"] if message["role"] == "user"}
    mid_questions = set()
    for conversation in mid:
        roles = [message["role"] for message in conversation["messages"] if message["role"] != "system"]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
        mid_questions |= {message["content"].rsplit("Question: ", 1)[-1]
                          for message in conversation["messages"] if message["role"] == "user"}
    assert len(mid_questions) == 6 and not mid_questions & sft_questions
