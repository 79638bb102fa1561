"""The 2026 nanochat model: strict load of a nanochat-format checkpoint, logits against a reference forward
written here from the architecture's description, sliding windows, KV cache, optimizer groups, fine-tuning."""

import math

import pytest
import torch
import torch.nn.functional as F

from fractal_llm.config import ConfigError, TrainConfig
from fractal_llm.sweep import check_sweep, expand_grid
from fractal_llm.gpt.base_model import get_base_model
from fractal_llm.train import train
from fractal_llm.verdict import VERDICTS
from nanochat.checkpoint import load_model, save_checkpoint, save_model
from nanochat.gpt import GPT, GPTConfig, KVCache
from nanochat.gpt2026 import GPT2026, GPT2026Config
from nanochat.muon import polar_express
from nanochat.tokenizer import Tokenizer

VOCAB = 300
# sequence_len 512: short windows of 128 tokens, so a 300-token probe crosses them
CFG = dict(sequence_len=512, vocab_size=VOCAB, n_layer=4, n_head=4, n_kv_head=2, n_embd=64, window_pattern="SSSL")
TEXT = ["Short windows see a quarter of the context, long ones all of it; 2026 and 1234."] * 30


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train_from_iterator(TEXT, VOCAB)


def nanochat_state(cfg: dict, seed: int = 0) -> dict:
    """A random state dict with nanochat's 2026 parameter names and shapes (padded vocab 320)."""
    g = torch.Generator().manual_seed(seed)
    V, C, L = 320, cfg["n_embd"], cfg["n_layer"]
    D = C // cfg["n_head"]
    kv = cfg["n_kv_head"] * D
    shapes = {"transformer.wte.weight": (V, C), "lm_head.weight": (V, C), "resid_lambdas": (L,),
              "x0_lambdas": (L,), "smear_gate.weight": (1, 24), "smear_lambda": (1,), "backout_lambda": (1,)}
    for i in range(L):
        p = f"transformer.h.{i}."
        shapes |= {p + "attn.c_q.weight": (C, C), p + "attn.c_k.weight": (kv, C), p + "attn.c_v.weight": (kv, C),
                   p + "attn.c_proj.weight": (C, C), p + "mlp.c_fc.weight": (4 * C, C),
                   p + "mlp.c_proj.weight": (C, 4 * C)}
        if i % 2 == (L - 1) % 2:  # value embeddings on alternating layers, the last one included
            shapes |= {p + "attn.ve_gate.weight": (cfg["n_kv_head"], 12), f"value_embeds.{i}.weight": (V, kv)}
    state = {k: torch.randn(s, generator=g) * (0.3 if len(s) == 2 else 1.0) for k, s in shapes.items()}
    state["resid_lambdas"] = 1.0 + 0.1 * state["resid_lambdas"]
    return state


def reference_logits(sd: dict, cfg: dict, idx: torch.Tensor) -> torch.Tensor:
    """The 2026 forward written from the architecture's description, with explicit softmax attention."""
    B, T = idx.shape
    C, H, Hkv, L = cfg["n_embd"], cfg["n_head"], cfg["n_kv_head"], cfg["n_layer"]
    D = C // H
    norm = lambda x: F.rms_norm(x, (x.size(-1),))  # noqa: E731
    inv_freq = 1.0 / (100_000 ** (torch.arange(0, D, 2).float() / D))
    angles = torch.arange(T).float()[:, None] * inv_freq[None]
    cos, sin = angles.cos()[None, :, None], angles.sin()[None, :, None]

    def rotate(x):
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], dim=-1)

    short = math.ceil(cfg["sequence_len"] / 4 / 128) * 128
    windows = [short if cfg["window_pattern"][i % len(cfg["window_pattern"])] == "S" else cfg["sequence_len"]
               for i in range(L)]
    windows[-1] = cfg["sequence_len"]
    x = norm(sd["transformer.wte.weight"][idx])
    gate = sd["smear_lambda"] * torch.sigmoid(x[:, 1:, :24] @ sd["smear_gate.weight"].T)
    x = torch.cat([x[:, :1], x[:, 1:] + gate * x[:, :-1]], dim=1)
    x0 = x
    t = torch.arange(T)
    for i in range(L):
        p = f"transformer.h.{i}."
        x = sd["resid_lambdas"][i] * x + sd["x0_lambdas"][i] * x0
        h = norm(x)
        q = (h @ sd[p + "attn.c_q.weight"].T).view(B, T, H, D)
        k = (h @ sd[p + "attn.c_k.weight"].T).view(B, T, Hkv, D)
        v = (h @ sd[p + "attn.c_v.weight"].T).view(B, T, Hkv, D)
        if f"value_embeds.{i}" + ".weight" in sd:
            ve = sd[f"value_embeds.{i}.weight"][idx].view(B, T, Hkv, D)
            v = v + 3 * torch.sigmoid(h[..., :12] @ sd[p + "attn.ve_gate.weight"].T)[..., None] * ve
        q, k = norm(rotate(q)) * 1.2, norm(rotate(k)) * 1.2
        k, v = k.repeat_interleave(H // Hkv, dim=2), v.repeat_interleave(H // Hkv, dim=2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(D)
        allowed = (t[None] <= t[:, None]) & (t[:, None] - t[None] <= windows[i])
        y = torch.einsum("bhqk,bkhd->bqhd", scores.masked_fill(~allowed, float("-inf")).softmax(-1), v)
        x = x + y.reshape(B, T, C) @ sd[p + "attn.c_proj.weight"].T
        x = x + F.relu(norm(x) @ sd[p + "mlp.c_fc.weight"].T).square() @ sd[p + "mlp.c_proj.weight"].T
        if i == L // 2:
            x_mid = x
    x = norm(x - sd["backout_lambda"] * x_mid)
    return 15 * torch.tanh((x @ sd["lm_head.weight"].T)[..., :VOCAB] / 15)


def probe() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 300), generator=torch.Generator().manual_seed(3))


def model_2026(seed: int = 0, **overrides) -> GPT2026:
    cfg = {**CFG, **overrides}
    model = GPT2026(GPT2026Config(**cfg))
    model.load_state_dict(nanochat_state(cfg, seed))
    return model.eval()


# ---------------------------------------------------------------------------------------------- loading

def test_nanochat_checkpoint_loads_strictly_and_matches_the_reference_forward(tok, tmp_path):
    state = nanochat_state(CFG)
    # nanochat's layout: $NANOCHAT_BASE_DIR/base_checkpoints/d4/model_000007.pt + meta, tokenizer/ at the base
    save_checkpoint(tmp_path / "base_checkpoints" / "d4", 7, state, {"step": 7, "model_config": CFG})
    tok.save(tmp_path / "tokenizer")
    model, _, meta = load_model(tmp_path / "base_checkpoints" / "d4")
    assert meta["loaded_from"]["era"] == "2026" and model.windows == [128, 128, 128, 512]
    assert set(model.state_dict()) == set(state)
    with torch.no_grad():
        logits = model(probe())
    torch.testing.assert_close(logits, reference_logits(state, CFG, probe()), atol=2e-5, rtol=0)


def test_meta_without_window_pattern_builds_todays_dec2025_model(tok, tmp_path):
    config = {k: v for k, v in CFG.items() if k != "window_pattern"}
    torch.manual_seed(0)
    old = GPT(GPTConfig(**config))
    old.init_weights()
    with torch.no_grad():
        for p in old.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save_model(tmp_path, old, tok)
    loaded, _, meta = load_model(tmp_path)
    assert meta["loaded_from"]["era"] == "Dec-2025" and "resid_lambdas" not in loaded.state_dict()
    with torch.no_grad():
        assert torch.equal(loaded(probe()), old.eval()(probe()))


def test_save_model_writes_window_pattern_and_reloads_2026(tok, tmp_path):
    model = model_2026()
    save_model(tmp_path, model, tok, step=3)
    loaded, _, meta = load_model(tmp_path)
    assert meta["model_config"] == CFG and meta["loaded_from"]["era"] == "2026"
    with torch.no_grad():
        assert torch.equal(loaded(probe()), model(probe()))


def test_bad_window_pattern_is_named():
    with pytest.raises(ValueError, match="window_pattern='SXL'"):
        GPT2026Config(**{**CFG, "window_pattern": "SXL"})
    with pytest.raises(ValueError, match="window_pattern=''"):
        GPT2026Config(**{**CFG, "window_pattern": ""})


def test_window_sizes_follow_the_pattern_with_a_long_last_layer():
    # short windows: a quarter of the context rounded up to a multiple of 128 (2048 -> 512, 1000 -> 256)
    config = GPT2026Config(sequence_len=2048, n_layer=6, window_pattern="SSSL")
    assert config.window_sizes() == [512, 512, 512, 2048, 512, 2048]
    assert GPT2026Config(sequence_len=1000, n_layer=3, window_pattern="ssl").window_sizes() == [256, 256, 1000]


# ---------------------------------------------------------------------------------------------- attention

def block_outputs(model: GPT2026, idx: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o)) for b in model.transformer.h]
    with torch.no_grad():
        model(idx)
    for h in hooks:
        h.remove()
    return outs


def test_a_token_beyond_the_short_window_changes_nothing_in_a_short_window_layer():
    model = model_2026()
    idx = probe()[:1]
    changed = idx.clone()
    changed[0, 0] = (idx[0, 0] + 1) % VOCAB
    first, second = block_outputs(model, idx), block_outputs(model, changed)
    # layer 0 is short (window 128). Token 0 reaches positions 0 and 1 (smear), so a query at t sees it
    # through keys t-128.. only up to t = 129.
    assert torch.allclose(first[0][0, 130:], second[0][0, 130:], atol=1e-6, rtol=0)
    assert not torch.allclose(first[0][0, 129], second[0][0, 129], atol=1e-4)
    # the last layer is long: position 299 still sees token 0
    assert not torch.allclose(first[-1][0, 299], second[-1][0, 299], atol=1e-4)


def test_kv_cache_chunks_and_single_tokens_match_the_full_forward():
    # sequence_len 256: windows 128 and 256, both shorter than the 300 positions, so the cache must band too
    model = model_2026(sequence_len=256)
    idx = probe()[:1]
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(4, 1, 2, 16, 300)
        parts = [model(idx[:, :100], kv_cache=cache), model(idx[:, 100:160], kv_cache=cache)]
        parts += [model(idx[:, t:t + 1], kv_cache=cache) for t in range(160, 300)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=2e-5, rtol=0)


def test_generate_with_cache_equals_greedy_full_prefix_decoding():
    model = model_2026(sequence_len=128)  # windows 128 everywhere: decoding runs past them
    prompt = probe()[0, :120].tolist()
    cached = list(model.generate(prompt, max_tokens=16))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(16):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[120:]


# ---------------------------------------------------------------------------------------------- optimizers

def test_optimizer_groups_learning_rates_and_frozen_groups():
    model = model_2026()
    opts = model.setup_optimizers(unembedding_lr=0.004, embedding_lr=0.3, matrix_lr=0.02, scalar_lr=0.5,
                                  smear_lr=0.2, trainable=("matrix", "value_embedding", "scalar"))
    lrs = {g["name"]: g["initial_lr"] for opt in opts for g in opt.param_groups}
    scale = (64 / 768) ** -0.5
    assert lrs == pytest.approx({"value_embedding": 0.15 * scale, "scalar/resid": 0.005, "scalar": 0.5,
                                 "matrix": 0.02})
    frozen = [model.transformer.wte.weight, model.lm_head.weight, model.smear_lambda, model.backout_lambda]
    assert not any(p.requires_grad for p in frozen)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    for _ in range(3):
        model(probe(), probe().roll(-1, dims=1)).backward()
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
    after = model.state_dict()
    assert torch.equal(after["transformer.wte.weight"], before["transformer.wte.weight"])
    assert torch.equal(after["smear_lambda"], before["smear_lambda"])
    assert not torch.equal(after["x0_lambdas"], before["x0_lambdas"])
    assert not torch.equal(after["value_embeds.1.weight"], before["value_embeds.1.weight"])


def test_polar_express_gives_near_orthogonal_updates():
    for shape in [(32, 64), (64, 32)]:
        singular = torch.linalg.svdvals(polar_express(torch.randn(*shape, generator=torch.Generator().manual_seed(0))))
        assert 0.7 < singular.min() and singular.max() < 1.3  # Polar Express stops near, not at, 1


# ---------------------------------------------------------------------------------------------- TrainConfig

def test_new_lr_fields_are_validated_and_derived():
    assert TrainConfig(embedding_lr=0.3).group_lrs()["value_embedding"] == pytest.approx(0.15)
    assert TrainConfig(value_embedding_lr=0.07).resolved().value_embedding_lr == 0.07
    with pytest.raises(ConfigError, match="scalar_lr=-1.0: must be >= 0"):
        TrainConfig(scalar_lr=-1.0)
    with pytest.raises(ConfigError, match="smear_lr=nan: must be a finite number"):
        TrainConfig(smear_lr=float("nan"))
    with pytest.raises(ConfigError, match="scalar_lr=0.0: group 'scalar' is trainable"):
        TrainConfig(trainable_param_groups="matrix,lambdas", scalar_lr=0.0)


def test_2026_only_groups_on_a_dec2025_model_are_an_error_and_all_means_its_own():
    dec = ("matrix", "embedding", "unembedding")
    assert TrainConfig(trainable_param_groups="all").trainable_groups(dec) == dec
    with pytest.raises(ConfigError, match="no scalar group; its groups are matrix, embedding, unembedding"):
        TrainConfig(trainable_param_groups="matrix,scalar").trainable_groups(dec)


def test_matrix_by_scalar_lr_sweep_expands_to_valid_configs():
    cfg = {"name": "s", "method": "grid", "command": ["${env}", "${interpreter}", "-m", "fractal_llm.train", "${args}"],
           "parameters": {"trainable_param_groups": {"value": "matrix,unembedding,scalar"},
                          "matrix_lr": {"values": [0.001, 0.01]}, "scalar_lr": {"values": [0.05, 0.5, 5.0]}}}
    points = expand_grid(check_sweep(cfg))
    assert [(p["matrix_lr"], p["scalar_lr"]) for p in points] == [(0.001, 0.05), (0.001, 0.5), (0.001, 5.0),
                                                                  (0.01, 0.05), (0.01, 0.5), (0.01, 5.0)]
    assert TrainConfig(**points[-1]).group_lrs()["scalar"] == 5.0
    cfg["parameters"]["scalar_lr"] = {"values": [-0.5, 0.5]}
    with pytest.raises(Exception, match="scalar_lr"):
        check_sweep(cfg)


# ---------------------------------------------------------------------------------------------- fine-tuning

def test_fine_tuning_a_tiny_2026_model_gives_a_verdict_and_keeps_frozen_groups(tiny_base, tmp_path):
    tokenizer = Tokenizer.from_directory(tiny_base / "tokenizer")
    model = GPT2026(GPT2026Config(sequence_len=256, vocab_size=tokenizer.get_vocab_size(), n_layer=2, n_head=2,
                                  n_kv_head=2, n_embd=64, window_pattern="SL"))
    torch.manual_seed(0)
    model.init_weights()
    save_model(tmp_path / "m2026", model, tokenizer)
    model_id = str(tmp_path / "m2026")
    result = train(TrainConfig(model_id=model_id, matrix_lr=0.01, scalar_lr=0.1, max_seq_len=192,
                               device_batch_size=2, num_iterations=4, trainable_window_steps=2,
                               trainable_param_groups="matrix,unembedding,scalar"))
    assert result.summary["verdict"] in VERDICTS and result.summary["error"] is None
    assert result.summary["steps"] == 4 and {"lr/matrix", "lr/scalar", "lr/scalar/resid"} <= set(result.history)
    base = get_base_model(model_id, torch.device("cpu"))
    trained = base.model.state_dict()
    for frozen in ("transformer.wte.weight", "value_embeds.1.weight", "smear_gate.weight"):
        assert torch.equal(trained[frozen], base.state[frozen])
    assert not torch.equal(trained["x0_lambdas"], base.state["x0_lambdas"])


def test_2026_loss_runs_the_lm_head_only_on_supervised_rows_and_equals_the_full_logits_loss():
    model = model_2026()
    idx = probe()
    targets = torch.full_like(idx, -1)
    targets[:, 250:] = idx[:, 250:]
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[:-1]))
    loss = model(idx, targets)
    hook.remove()
    assert seen == [torch.Size([100])]
    keep = targets != -1
    manual = torch.nn.functional.cross_entropy(model(idx)[keep], targets[keep])
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_the_smoke_2026_sweep_runs_on_the_tiny_2026_base_to_verdicts(tmp_path):
    """sweeps/smoke_2026.yaml as shipped, cut to its four corners: `fractal-llm local` builds the tiny-2026 base
    on first use (the test recipe, conftest.py) and gives every point a verdict."""
    import yaml
    from pathlib import Path
    from fractal_llm.runners import local as runner
    from fractal_llm.records import read_record
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "sweeps" / "smoke_2026.yaml").read_text())
    assert cfg["parameters"]["model_id"] == {"value": "tiny-2026"}
    for axis in ("matrix_lr", "scalar_lr"):
        values = cfg["parameters"][axis]["values"]
        cfg["parameters"][axis]["values"] = [values[0], values[-1]]
    corners = tmp_path / "corners.yaml"
    corners.write_text(yaml.safe_dump(cfg))
    assert runner.main([str(corners), "--out", str(tmp_path / "runs"), "--workers", "1"]) == 0
    records = [read_record(p) for p in sorted((tmp_path / "runs").glob("*.json"))]
    assert len(records) == 4
    assert {r.verdict for r in records} <= {"trainable", "not_trainable", "diverged"}
    assert {r.config["repro"]["base_model"].split(":")[0] for r in records} == {"tiny-2026"}
    assert {r.config["repro"]["dataset"] for r in records} == {"docqa"}
