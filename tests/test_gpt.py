"""GPT: shapes, nanochat parameter names, loss, causality, rotary, KV-cache generation."""

import math

import pytest
import torch
import torch.nn.functional as F

from nanochat.gpt import GPT, GPTConfig, KVCache, apply_rotary

TINY = dict(sequence_len=32, vocab_size=300, n_layer=2, n_head=2, n_kv_head=1, n_embd=64)


def random_model(seed: int = 0, **overrides) -> GPT:
    """Tiny GPT with nanochat init, then random lm_head / c_proj so outputs are not trivially zero."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**TINY, **overrides}))
    model.init_weights()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.5)
        for block in model.transformer.h:
            block.attn.c_proj.weight.normal_(0, 0.05)
            block.mlp.c_proj.weight.normal_(0, 0.05)
    return model.eval()


def test_forward_shapes_and_finite_loss():
    model = random_model()
    idx = torch.randint(0, 300, (3, 16))
    logits = model(idx)
    assert logits.shape == (3, 16, 300) and logits.dtype == torch.float32
    assert logits.abs().max() <= 15.0  # soft-cap
    loss = model(idx, targets=torch.randint(0, 300, (3, 16)))
    assert loss.shape == () and torch.isfinite(loss)


def test_parameter_names_and_shapes_match_nanochat():
    cfg = GPTConfig(**TINY)
    model = GPT(cfg)
    hd = cfg.n_embd // cfg.n_head
    expected = {"transformer.wte.weight": (320, 64), "lm_head.weight": (320, 64)}  # 300 padded to 320
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        expected |= {
            p + "attn.c_q.weight": (cfg.n_head * hd, 64),
            p + "attn.c_k.weight": (cfg.n_kv_head * hd, 64),
            p + "attn.c_v.weight": (cfg.n_kv_head * hd, 64),
            p + "attn.c_proj.weight": (64, 64),
            p + "mlp.c_fc.weight": (256, 64),
            p + "mlp.c_proj.weight": (64, 256),
        }
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == expected  # rotary not persisted


def test_d20_parameter_count_matches_published():
    with torch.device("meta"):
        model = GPT(GPTConfig(sequence_len=2048, vocab_size=65536, n_layer=20, n_head=10, n_kv_head=10, n_embd=1280))
    assert model.num_params() == 560_988_160


def test_init_weights_and_initial_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(**TINY))
    model.init_weights()
    assert (model.lm_head.weight == 0).all()
    assert all((b.attn.c_proj.weight == 0).all() and (b.mlp.c_proj.weight == 0).all() for b in model.transformer.h)
    assert abs(model.transformer.wte.weight.std().item() - 1.0) < 0.05
    c_fc = model.transformer.h[0].mlp.c_fc.weight  # fan_in 64, fan_out 256 -> std 1/8
    assert abs(c_fc.std().item() - 1 / 8) < 0.01
    c_k = model.transformer.h[0].attn.c_k.weight  # fan_in 64, fan_out 32 -> std sqrt(0.5)/8
    assert abs(c_k.std().item() - math.sqrt(0.5) / 8) < 0.01
    # zero lm_head -> uniform logits -> loss ln(vocab)
    loss = model(torch.randint(0, 300, (2, 8)), targets=torch.randint(0, 300, (2, 8)))
    assert loss.item() == pytest.approx(math.log(300), abs=1e-5)


def reference_logits(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """Independent, loop-based re-statement of nanochat's forward pass from the written spec."""
    cfg, sd = model.config, model.state_dict()
    H, KV, D = cfg.n_head, cfg.n_kv_head, cfg.n_embd // cfg.n_head
    T = idx.shape[1]

    def norm(x):
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)

    inv_freq = 10000.0 ** (-torch.arange(0, D, 2).float() / D)
    ang = torch.arange(T).float()[:, None] * inv_freq[None, :]  # (T, D/2)

    def rope(x):  # (B, T, h, D)
        x1, x2 = x[..., : D // 2], x[..., D // 2:]
        c, s = ang.cos()[None, :, None], ang.sin()[None, :, None]
        return torch.cat([x1 * c + x2 * s, -x1 * s + x2 * c], -1)

    x = norm(sd["transformer.wte.weight"][idx])
    for i in range(cfg.n_layer):
        p = f"transformer.h.{i}."
        h = norm(x)
        B = h.shape[0]
        q = norm(rope((h @ sd[p + "attn.c_q.weight"].T).view(B, T, H, D)))
        k = norm(rope((h @ sd[p + "attn.c_k.weight"].T).view(B, T, KV, D)))
        v = (h @ sd[p + "attn.c_v.weight"].T).view(B, T, KV, D)
        k, v = k.repeat_interleave(H // KV, dim=2), v.repeat_interleave(H // KV, dim=2)
        att = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(D)
        att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
        y = torch.einsum("bhts,bshd->bthd", att, v).reshape(B, T, H * D)
        x = x + y @ sd[p + "attn.c_proj.weight"].T
        x = x + torch.relu(norm(x) @ sd[p + "mlp.c_fc.weight"].T).square() @ sd[p + "mlp.c_proj.weight"].T
    logits = (norm(x) @ sd["lm_head.weight"].T)[..., : cfg.vocab_size]
    return 15 * torch.tanh(logits / 15)


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_forward_matches_independent_reference(n_kv_head):
    model = random_model(seed=4, n_kv_head=n_kv_head)
    idx = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), reference_logits(model, idx), atol=1e-4, rtol=1e-4)


def test_loss_matches_manual_cross_entropy_with_ignore():
    model = random_model()
    idx = torch.randint(0, 300, (2, 10))
    targets = torch.randint(0, 300, (2, 10))
    targets[0, :4] = -1
    targets[1, 7:] = -1
    logits = model(idx)
    keep = targets != -1
    manual = F.cross_entropy(logits[keep], targets[keep])
    assert model(idx, targets).item() == pytest.approx(manual.item(), rel=1e-5)
    per_token = model(idx, targets, loss_reduction="none")
    assert per_token.shape == (20,) and (per_token.view(2, 10)[~keep] == 0).all()


def test_all_ignored_targets_give_zero_loss_not_nan():
    model = random_model().train()
    idx = torch.randint(0, 300, (2, 8))
    loss = model(idx, targets=torch.full((2, 8), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert all(p.grad is not None and (p.grad == 0).all() for p in model.parameters())


def test_causal_future_tokens_do_not_change_past_logits():
    model = random_model()
    idx = torch.randint(0, 300, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 300
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_rotary_is_a_rotation_with_relative_positions():
    model = random_model()
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)
    cos, sin = model.cos, model.sin

    def rot(x, pos):
        return apply_rotary(x, cos[:, pos:pos + 1], sin[:, pos:pos + 1])

    torch.testing.assert_close(rot(q, 5).norm(), q.norm())
    dot_a = (rot(q, 7) * rot(k, 3)).sum()
    dot_b = (rot(q, 104) * rot(k, 100)).sum()
    torch.testing.assert_close(dot_a, dot_b, atol=1e-4, rtol=1e-4)
    assert model.cos.shape[1] == 10 * TINY["sequence_len"]


def test_cached_chunks_match_full_forward():
    model = random_model(seed=1)
    idx = torch.randint(0, 300, (2, 14))
    full = model(idx)
    cache = KVCache(2, 2, 1, 32, 14)
    parts = [model(idx[:, :5], kv_cache=cache), model(idx[:, 5:6], kv_cache=cache), model(idx[:, 6:], kv_cache=cache)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-4)


def test_kv_cache_generation_equals_full_prefix_greedy():
    model = random_model(seed=2)
    prompt = [5, 17, 42, 99, 3]
    cached = list(model.generate(prompt, max_tokens=20))
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt):]
    assert len(set(cached)) > 1  # not a degenerate constant stream


def test_generation_does_not_rerun_prefix():
    model = random_model()
    seen_lengths = []
    hook = model.transformer.wte.register_forward_hook(lambda m, inp, out: seen_lengths.append(inp[0].shape[1]))
    list(model.generate(list(range(10)), max_tokens=6))
    hook.remove()
    assert seen_lengths == [10, 1, 1, 1, 1, 1]


def test_sampling_seeded_and_top_k_one_is_greedy():
    model = random_model(seed=3)
    prompt = [1, 2, 3]
    a = list(model.generate(prompt, 15, temperature=1.0, seed=7))
    b = list(model.generate(prompt, 15, temperature=1.0, seed=7))
    c = list(model.generate(prompt, 15, temperature=1.0, seed=8))
    assert a == b and a != c
    assert list(model.generate(prompt, 15, temperature=1.0, top_k=1)) == list(model.generate(prompt, 15))


def test_generation_input_errors():
    model = random_model()
    with pytest.raises(ValueError, match="rotary"):  # raised eagerly, before iterating
        model.generate([1, 2], max_tokens=10 * TINY["sequence_len"])
    with pytest.raises(ValueError, match="non-empty"):
        model.generate([], max_tokens=3)
    assert list(model.generate([1], max_tokens=0)) == []


@pytest.mark.parametrize(
    "overrides, match",
    [({"n_embd": 65}, "divisible"), ({"n_kv_head": 3, "n_head": 2}, "n_kv_head"), ({"vocab_size": 0}, "vocab_size"),
     ({"n_embd": 6, "n_head": 2}, "even")],
)
def test_config_validation(overrides, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**{**TINY, **overrides})


def test_meta_build_then_to_empty_restores_rotary():
    reference = random_model()
    with torch.device("meta"):
        model = GPT(reference.config)
    model.to_empty(device="cpu")
    model.load_state_dict(reference.state_dict())
    model.init_rotary()
    idx = torch.randint(0, 300, (1, 9))
    torch.testing.assert_close(model(idx), reference(idx))


def test_loss_runs_the_lm_head_only_on_supervised_rows_with_the_full_logits_gradients():
    model = random_model().train()
    idx = torch.randint(0, 300, (2, 12))
    targets = torch.full((2, 12), -1)
    targets[0, 9:] = idx[0, 9:]
    targets[1, 5:7] = idx[1, 5:7]
    seen = []
    hook = model.lm_head.register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape[:-1]))
    loss = model(idx, targets)
    hook.remove()
    assert seen == [torch.Size([5])]  # 3 + 2 supervised positions, not 2 x 12
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    keep = targets != -1
    F.cross_entropy(model(idx)[keep], targets[keep]).backward()
    for got, want in zip(grads, (p.grad for p in model.parameters())):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
