"""setup_optimizers, Muon and AdamW: groups, LR scaling, loss decrease, frozen groups, determinism."""

import math

import pytest
import torch

from nanochat.gpt import GPT, GPTConfig
from nanochat.muon import Muon, newton_schulz

TINY = dict(sequence_len=32, vocab_size=300, n_layer=2, n_head=2, n_kv_head=1, n_embd=64)


def make_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**TINY))
    model.init_weights()
    with torch.no_grad():  # non-zero lm_head so block matrices receive gradient from step 0
        model.lm_head.weight.normal_(0, 0.05)
    return model


def fixed_batch(seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 300, (4, 16), generator=g)
    return idx, torch.roll(idx, -1, dims=1)


def train_steps(model: GPT, optimizers, steps: int) -> list[float]:
    idx, targets = fixed_batch()
    losses = []
    for _ in range(steps):
        loss = model(idx, targets)
        loss.backward()
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    with torch.no_grad():
        losses.append(model(idx, targets).item())
    return losses


def test_groups_names_lrs_and_hyperparameters():
    model = make_model()
    opts = model.setup_optimizers(unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, weight_decay=0.1)
    adamw, muon = opts
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, Muon)
    scale = (64 / 768) ** -0.5
    groups = {g["name"]: g for opt in opts for g in opt.param_groups}
    assert set(groups) == {"matrix", "embedding", "unembedding"}
    assert groups["unembedding"]["initial_lr"] == pytest.approx(0.004 * scale)
    assert groups["embedding"]["initial_lr"] == pytest.approx(0.2 * scale)
    assert groups["matrix"]["initial_lr"] == 0.02 and groups["matrix"]["lr"] == 0.02
    assert groups["embedding"]["params"] == [model.transformer.wte.weight]
    assert groups["unembedding"]["params"] == [model.lm_head.weight]
    assert len(groups["matrix"]["params"]) == 6 * TINY["n_layer"]
    assert adamw.defaults["betas"] == (0.8, 0.95) and adamw.defaults["eps"] == 1e-10
    assert groups["embedding"]["weight_decay"] == 0.1
    assert muon.defaults["momentum"] == 0.95 and muon.defaults["nesterov"]


def test_frozen_groups_left_out_and_bit_identical():
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opts = model.setup_optimizers(matrix_lr=0.02, unembedding_lr=0.004, trainable=("matrix", "unembedding"))
    names = [g["name"] for opt in opts for g in opt.param_groups]
    assert sorted(names) == ["matrix", "unembedding"]
    assert not model.transformer.wte.weight.requires_grad
    assert all(p is not model.transformer.wte.weight for opt in opts for g in opt.param_groups for p in g["params"])
    train_steps(model, opts, 3)
    after = model.state_dict()
    assert torch.equal(after["transformer.wte.weight"], before["transformer.wte.weight"])
    assert not torch.equal(after["lm_head.weight"], before["lm_head.weight"])
    assert not torch.equal(after["transformer.h.0.mlp.c_fc.weight"], before["transformer.h.0.mlp.c_fc.weight"])

    model2 = make_model()
    before2 = {k: v.clone() for k, v in model2.state_dict().items()}
    opts2 = model2.setup_optimizers(trainable=("embedding",))
    assert len(opts2) == 1 and isinstance(opts2[0], torch.optim.AdamW)
    train_steps(model2, opts2, 3)
    for k, v in model2.state_dict().items():
        assert torch.equal(v, before2[k]) == (k != "transformer.wte.weight"), k


def test_no_trainable_groups_gives_no_optimizers():
    model = make_model()
    assert model.setup_optimizers(trainable=()) == []
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("trainable", [("matrix",), ("unembedding",), ("embedding",), ("matrix", "embedding", "unembedding")])
def test_steps_lower_loss(trainable):
    model = make_model()
    opts = model.setup_optimizers(unembedding_lr=0.004, embedding_lr=0.2, matrix_lr=0.02, trainable=trainable)
    losses = train_steps(model, opts, 5)
    assert losses[-1] < losses[0] - 0.01, losses


def test_same_seed_same_losses():
    runs = []
    for _ in range(2):
        model = make_model(seed=5)
        runs.append(train_steps(model, model.setup_optimizers(), 4))
    assert runs[0] == runs[1]
    other = make_model(seed=6)
    assert train_steps(other, other.setup_optimizers(), 4) != runs[0]


def test_lr_multiplier_via_initial_lr_and_zero_lr_is_no_op():
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opts = model.setup_optimizers()
    for opt in opts:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * 0.0
    train_steps(model, opts, 2)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("shape", [(32, 64), (64, 32), (48, 48)])
def test_newton_schulz_orthogonalises(shape):
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    x = newton_schulz(g)
    assert x.shape == g.shape and x.dtype == torch.float32
    s = torch.linalg.svdvals(x)
    assert s.min() > 0.5 and s.max() < 1.3, s  # quintic pushes singular values into ~[0.7, 1.2]
    s_in = torch.linalg.svdvals(g)
    assert s_in.max() / s_in.min() > 3  # the input was far from orthogonal


def test_muon_first_step_matches_formula():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 16))
    start = p.detach().clone()
    grad = torch.randn(64, 16)
    p.grad = grad.clone()
    Muon([p], lr=0.1, momentum=0.95).step()
    # first step: buf = 0.05 g; nesterov update = lerp(g, buf, 0.95) = c * g; NS is scale-invariant
    expected = start - 0.1 * math.sqrt(64 / 16) * newton_schulz(grad)
    torch.testing.assert_close(p.detach(), expected, atol=1e-5, rtol=1e-4)


def test_bad_arguments_raise():
    model = make_model()
    with pytest.raises(ValueError, match="unknown group"):
        model.setup_optimizers(trainable=("matrix", "wte"))
    with pytest.raises(ValueError, match="matrix_lr"):
        model.setup_optimizers(matrix_lr=float("nan"))
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])
