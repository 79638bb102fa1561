"""Checkpoint directories: write -> read, nanochat's native layout, load_model and its errors. (Fetching W&B and
Hugging Face models into a directory: tests/test_base_model.py.)"""

import json
from dataclasses import asdict

import pytest
import torch

from nanochat.checkpoint import (
    find_last_step,
    load_checkpoint,
    load_model,
    locate_tokenizer_dir,
    save_checkpoint,
    save_model,
)
from nanochat.gpt import GPT, GPTConfig
from nanochat.tokenizer import Tokenizer

TEXT = [
    "Checkpoints hold a state dict and a small JSON meta file. " * 2,
    "The tokenizer lives beside the checkpoints or two levels above them, 2025 and 1234.",
    "Alice asked Bob a question; Bob answered with a long, careful explanation.",
] * 20
VOCAB = 300
CFG = dict(sequence_len=32, vocab_size=VOCAB, n_layer=2, n_head=2, n_kv_head=1, n_embd=64)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train_from_iterator(TEXT, VOCAB)


@pytest.fixture()
def model() -> GPT:
    torch.manual_seed(0)
    m = GPT(GPTConfig(**CFG))
    m.init_weights()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # make every weight (incl. zero-init ones) matter
    return m.eval()


def probe(m: GPT) -> torch.Tensor:
    with torch.no_grad():
        return m(torch.arange(20).view(2, 10) * 7 % VOCAB)


def test_save_load_round_trip_identical_logits(model, tok, tmp_path):
    save_model(tmp_path / "art", model, tok, step=40, meta={"note": "x"})
    assert (tmp_path / "art/checkpoints/model_000040.pt").is_file()
    meta = json.loads((tmp_path / "art/checkpoints/meta_000040.json").read_text())
    assert meta["model_config"] == CFG and meta["note"] == "x"
    loaded, loaded_tok, loaded_meta = load_model(tmp_path / "art")
    assert torch.equal(probe(loaded), probe(model))
    assert not loaded.training
    assert loaded_tok.fingerprint() == tok.fingerprint()
    assert loaded_meta["loaded_from"]["step"] == 40
    assert loaded_meta["loaded_from"]["tokenizer_dir"] == str(tmp_path / "art/tokenizer")
    # string sources and the checkpoints/ dir itself also work (tokenizer one level up, in tokenizer/)
    again, _, _ = load_model(str(tmp_path / "art" / "checkpoints"))
    assert torch.equal(probe(again), probe(model))


def test_native_nanochat_layout_bf16_compiled_prefix(model, tok, tmp_path):
    base = tmp_path / "nanochat_base"
    ckpt = base / "base_checkpoints" / "d20"
    ckpt.mkdir(parents=True)
    tok.save(base / "tokenizer")
    state = {"_orig_mod." + k: v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    torch.save(state, ckpt / "model_000650.pt")
    torch.save({k: v * 0 for k, v in state.items()}, ckpt / "model_000100.pt")  # older step, must not be picked
    meta = {"model_config": CFG, "step": 650, "val_bpb": 0.81, "user_config": {"depth": 20}}
    for step in (100, 650):
        (ckpt / f"meta_{step:06d}.json").write_text(json.dumps(meta))
    raw_state, _ = load_checkpoint(ckpt)
    assert all(v.dtype == torch.float32 for v in raw_state.values())  # bf16 cast up on CPU
    assert not any(k.startswith("_orig_mod.") for k in raw_state)
    loaded, loaded_tok, loaded_meta = load_model(str(ckpt))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    reference = GPT(GPTConfig(**CFG))
    reference.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    assert torch.equal(probe(loaded), probe(reference.eval()))
    assert loaded_meta["val_bpb"] == 0.81 and loaded_meta["loaded_from"]["step"] == 650
    assert loaded_tok.get_vocab_size() == VOCAB
    older, _, _ = load_model(ckpt, step=100)
    assert all((p == 0).all() for p in older.parameters())


def test_tokenizer_in_same_dir_like_hf_repo(model, tok, tmp_path):
    save_checkpoint(tmp_path, 7, model.state_dict(), {"model_config": CFG})
    tok.save(tmp_path)
    assert locate_tokenizer_dir(tmp_path) == tmp_path
    loaded, _, _ = load_model(tmp_path)
    assert torch.equal(probe(loaded), probe(model))


def test_find_last_step_any_width(tmp_path):
    for name in ("model_000005.pt", "model_12.pt", "model_0000100.pt", "optim_000999.pt", "model_x.pt"):
        (tmp_path / name).write_bytes(b"")
    assert find_last_step(tmp_path) == 100
    with pytest.raises(FileNotFoundError, match="no model_"):
        find_last_step(_empty(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_last_step(tmp_path / "missing")


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_load_checkpoint_strips_prefix_and_keeps_optimizer_separate(model, tmp_path):
    state = {"_orig_mod." + k: v for k, v in model.state_dict().items()}
    save_checkpoint(tmp_path, 3, state, {"model_config": CFG}, optimizer_state={"lr": 0.1})
    assert (tmp_path / "optim_000003.pt").is_file()
    loaded_state, meta = load_checkpoint(tmp_path)
    assert set(loaded_state) == set(model.state_dict()) and meta["model_config"] == CFG


def test_vocab_mismatch_is_a_clear_error(model, tmp_path):
    small = Tokenizer.train_from_iterator(TEXT, 280)
    save_checkpoint(tmp_path / "checkpoints", 0, model.state_dict(), {"model_config": CFG})
    small.save(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match="vocab size 280.*vocab_size is 300"):
        load_model(tmp_path)


def test_strict_load_rejects_wrong_state(model, tok, tmp_path):
    state = dict(model.state_dict())
    state.pop("lm_head.weight")
    save_checkpoint(tmp_path / "checkpoints", 0, state, {"model_config": CFG})
    tok.save(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match="Dec-2025 model .*missing \\['lm_head.weight'\\]"):
        load_model(tmp_path)


def test_bad_meta_and_missing_files(model, tok, tmp_path):
    with pytest.raises(ValueError, match="model_config"):
        save_checkpoint(tmp_path, 0, model.state_dict(), {"step": 0})
    d = tmp_path / "newer"
    d.mkdir()
    torch.save(model.state_dict(), d / "model_000001.pt")
    tok.save(d)
    (d / "meta_000001.json").write_text(json.dumps({"model_config": {**CFG, "n_expert": 8}}))
    with pytest.raises(ValueError, match="unsupported \\['n_expert'\\].*Dec-2025 nanochat: exactly .*"
                                         "2026 nanochat: exactly .*'window_pattern'"):
        load_model(d)
    # window_pattern selects the 2026 model, which a Dec-2025 state dict does not fit
    (d / "meta_000001.json").write_text(json.dumps({"model_config": {**CFG, "window_pattern": "SSSL"}}))
    with pytest.raises(ValueError, match="does not fit the 2026 model.*missing \\['backout_lambda'"):
        load_model(d)
    with pytest.raises(FileNotFoundError, match="no model_<step>.pt files"):
        load_model(_empty(tmp_path))
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_model(str(tmp_path / "nope"))
    no_tok = tmp_path / "a" / "b" / "c"
    save_checkpoint(no_tok, 0, model.state_dict(), {"model_config": CFG})
    with pytest.raises(FileNotFoundError, match="no tokenizer.pkl"):
        load_model(no_tok)


def test_meta_model_config_matches_gpt_config(model, tok, tmp_path):
    save_model(tmp_path, model, tok, step=0)
    meta = json.loads((tmp_path / "checkpoints/meta_000000.json").read_text())
    assert GPTConfig(**meta["model_config"]) == model.config and meta["model_config"] == asdict(model.config)


def test_large_models_are_built_on_meta_and_still_load_exactly():
    from nanochat.checkpoint import _empty_model
    from nanochat.gpt import GPT, GPTConfig
    config = GPTConfig(sequence_len=16, vocab_size=40000, n_layer=1, n_head=2, n_kv_head=2, n_embd=256)  # > 20M
    torch.manual_seed(0)
    reference = GPT(config)
    reference.init_weights()
    with torch.no_grad():
        reference.lm_head.weight.normal_()  # init leaves it zero; make the logits informative
    model = _empty_model(config, torch.device("cpu"))
    model.load_state_dict(reference.state_dict(), strict=True)
    idx = torch.randint(0, config.vocab_size, (1, 8))
    assert torch.equal(model(idx), reference(idx))
    assert torch.equal(model.cos, reference.cos)  # rotary tables recomputed after to_empty()
