"""A GPT with nanochat's 2026 architecture (nanochat at commit 92d63d4), so its checkpoints load strictly.

What differs from the Dec-2025 model in nanochat/gpt.py (docs/nanochat.md has the whole comparison):
  - sliding-window attention per layer from `window_pattern` ("L" full context, "S" a quarter of it rounded
    up to 128 tokens; the pattern is tiled over the layers and the last layer is always "L");
  - value embeddings on alternating layers (the last one included), added to the attention values through
    a per-head gate 3 * sigmoid(W x[:12]) read from the first channels of the block input;
  - per-layer resid_lambdas / x0_lambdas: x <- resid_lambda * x + x0_lambda * x0 before each block;
  - smear: each token's embedding gets lambda * sigmoid(W e[:24]) times the previous token's embedding;
  - backout: the residual after block n_layer // 2, times backout_lambda, is subtracted before the final norm;
  - rotary base 100,000, and queries and keys scaled by 1.2 after QK-norm;
  - fp32 master weights, matmuls in the activation dtype (Linear casts its weight), instead of autocast.
Parameter names and shapes are nanochat's. Attention goes through SDPA: is_causal where the window covers
the whole sequence, otherwise an explicit band mask (no window-capable kernel is used, on CPU or CUDA).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanochat.gpt import (ADAMW_EPS, ROTARY_LENGTH_FACTOR, GPTConfig, KVCache, KVGeneration,
                          apply_rotary, rms_norm, rotary_tables, softcapped_logits, supervised_loss)
from nanochat.muon import NorMuon

GROUPS = ("matrix", "embedding", "unembedding", "value_embedding", "scalar", "smear")
ROTARY_BASE = 100_000.0
QK_SCALE = 1.2  # after QK-norm, on both queries and keys
VE_GATE_CHANNELS = 12  # the value-embedding gate reads this many leading channels of the block input
SMEAR_CHANNELS = 24  # the smear gate reads this many leading channels of the token embedding
WINDOW_TILE = 128  # short windows are rounded up to a multiple of this (nanochat's kernel tile)
RESID_LR_FRACTION = 0.01  # resid_lambdas train at scalar_lr * this (x0_lambdas at scalar_lr)
VALUE_EMBEDDING_LR_FRACTION = 0.5  # nanochat's value embeddings train at half the embedding LR


@dataclass
class GPT2026Config(GPTConfig):
    window_pattern: str = "SSSL"

    def __post_init__(self):
        super().__post_init__()
        pattern = self.window_pattern
        if not isinstance(pattern, str) or not pattern or any(c not in "SL" for c in pattern.upper()):
            raise ValueError(f"GPT2026Config.window_pattern={pattern!r}: must be a non-empty string of "
                             "S (short window) and L (full context)")
        if self.n_embd < SMEAR_CHANNELS:
            raise ValueError(f"GPT2026Config.n_embd={self.n_embd}: must be >= {SMEAR_CHANNELS} "
                             "(the smear gate reads that many channels)")

    def window_sizes(self) -> list[int]:
        """Per layer, how many earlier tokens a query may see (a query at t sees t - w .. t)."""
        long = self.sequence_len
        short = -(-long // 4 // WINDOW_TILE) * WINDOW_TILE
        pattern = self.window_pattern.upper()
        sizes = [long if pattern[i % len(pattern)] == "L" else short for i in range(self.n_layer)]
        sizes[-1] = long
        return sizes


def has_value_embedding(layer: int, n_layer: int) -> bool:
    """Alternating layers, counted so that the last layer has one."""
    return layer % 2 == (n_layer - 1) % 2


class Linear(nn.Linear):
    """nn.Linear without bias whose weight is cast to the input's dtype: fp32 master weights, matmuls in
    the activation dtype."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(dtype=x.dtype))


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int) -> torch.Tensor:
    """Causal attention where query i (absolute position Tk - Tq + i) sees keys at positions within `window`
    before it. q: (B, H, Tq, D); k, v: (B, H_kv, Tk, D) with the queries' keys last."""
    Tq, Tk = q.size(2), k.size(2)
    gqa = q.size(1) != k.size(1)
    if Tq == Tk and window >= Tk - 1:  # the window covers everything: plain causal (fastest kernels)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
    if Tq == 1:  # one new token: the last window + 1 keys
        start = max(0, Tk - window - 1)
        return F.scaled_dot_product_attention(q, k[:, :, start:], v[:, :, start:], enable_gqa=gqa)
    rows = (Tk - Tq) + torch.arange(Tq, device=q.device).unsqueeze(1)
    cols = torch.arange(Tk, device=q.device).unsqueeze(0)
    allowed = (cols <= rows) & (rows - cols <= window)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=gqa)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2026Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.c_q = Linear(config.n_embd, self.n_head * self.head_dim)
        self.c_k = Linear(config.n_embd, self.n_kv_head * self.head_dim)
        self.c_v = Linear(config.n_embd, self.n_kv_head * self.head_dim)
        self.c_proj = Linear(config.n_embd, config.n_embd)
        self.ve_gate = (Linear(VE_GATE_CHANNELS, self.n_kv_head)
                        if has_value_embedding(layer_idx, config.n_layer) else None)

    def forward(self, x, ve, cos, sin, window: int, kv_cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, C), C = n_embd
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, H_kv, D)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, H_kv, D)
        if ve is not None:  # value residual: gate in (0, 3) per kv head; ve: (B, T, H_kv * D)
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))  # (B, T, H_kv)
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_kv_head, self.head_dim)  # (B, T, H_kv, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # cos, sin: (1, T, 1, D/2)
        q, k = rms_norm(q) * QK_SCALE, rms_norm(k) * QK_SCALE
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D), (B, H_kv, T, D)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, H_kv, cached + T, D)
        y = window_attention(q, k, v, window)  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: GPT2026Config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c_fc(x)).square()  # (B, T, C) -> (B, T, 4C), ReLU^2
        return self.c_proj(h)  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: GPT2026Config, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, ve, cos, sin, window, kv_cache):
        x = x + self.attn(rms_norm(x), ve, cos, sin, window, kv_cache)  # (B, T, C)
        return x + self.mlp(rms_norm(x))  # (B, T, C)


class GPT2026(KVGeneration, nn.Module):
    def __init__(self, config: GPT2026Config):
        super().__init__()
        self.config = config
        self.windows = config.window_sizes()
        vocab, n_layer = config.padded_vocab_size, config.n_layer
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(vocab, config.n_embd),
            "h": nn.ModuleList([Block(config, i) for i in range(n_layer)]),
        })
        self.lm_head = Linear(config.n_embd, vocab)
        self.resid_lambdas = nn.Parameter(torch.ones(n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(n_layer))
        self.smear_gate = Linear(SMEAR_CHANNELS, 1)
        self.smear_lambda = nn.Parameter(torch.zeros(1))
        self.backout_lambda = nn.Parameter(torch.zeros(1))
        kv_dim = config.n_kv_head * config.head_dim
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(vocab, kv_dim)
                                           for i in range(n_layer) if has_value_embedding(i, n_layer)})
        self.rotary_len = config.sequence_len * ROTARY_LENGTH_FACTOR
        cos, sin = rotary_tables(config.head_dim, self.rotary_len, ROTARY_BASE, self.lm_head.weight.device)
        self.register_buffer("cos", cos, persistent=False)  # derived from the config, never stored
        self.register_buffer("sin", sin, persistent=False)

    # ------------------------------------------------------------------ init
    @torch.no_grad()
    def init_weights(self) -> None:
        """nanochat's 2026 init (for tests and new models; fine-tuning overwrites it). All weights stay fp32."""
        n_layer, n_embd = self.config.n_layer, self.config.n_embd
        bound = 3 ** 0.5 * n_embd ** -0.5  # uniform with the std of N(0, 1/n_embd)
        nn.init.normal_(self.transformer.wte.weight, std=0.8)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.transformer.h:
            for w in (block.attn.c_q.weight, block.attn.c_k.weight, block.attn.c_v.weight):
                nn.init.uniform_(w, -bound, bound)
            nn.init.uniform_(block.mlp.c_fc.weight, -0.4 * bound, 0.4 * bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.uniform_(block.attn.ve_gate.weight, 0.0, 0.02)
        depth = torch.arange(n_layer, dtype=torch.float32) / max(n_layer - 1, 1)
        self.resid_lambdas.copy_(1.15 - 0.10 * depth)
        self.x0_lambdas.copy_(0.20 - 0.15 * depth)
        nn.init.zeros_(self.smear_lambda)
        nn.init.constant_(self.backout_lambda, 0.2)
        nn.init.uniform_(self.smear_gate.weight, 0.0, 0.02)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -bound, bound)
        self.init_rotary()

    def init_rotary(self) -> None:
        """(Re)compute the rotary tables on the model's device, e.g. after to_empty() from meta."""
        self.cos, self.sin = rotary_tables(self.config.head_dim, self.rotary_len, ROTARY_BASE,
                                           self.lm_head.weight.device)

    # ------------------------------------------------------------------ forward
    def _smear(self, x: torch.Tensor, kv_cache: KVCache | None) -> torch.Tensor:
        """Add gate * (previous token's embedding) at every position that has one (in this chunk or, with a
        cache, the last token of the previous forward)."""
        previous = None
        if kv_cache is not None:
            previous, kv_cache.prev_embedding = kv_cache.prev_embedding, x[:, -1:]
        before = x[:, :-1] if previous is None else torch.cat([previous, x[:, :-1]], dim=1)
        start = x.size(1) - before.size(1)  # 1 without a previous token (the first position has none), else 0
        if before.size(1) == 0:
            return x
        gate = self.smear_lambda.to(x.dtype) * torch.sigmoid(self.smear_gate(x[:, start:, :SMEAR_CHANNELS]))
        return torch.cat([x[:, :start], x[:, start:] + gate * before], dim=1)  # gate: (B, T - start, 1)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                loss_reduction: str = "mean") -> torch.Tensor:
        """Logits (B, T, vocab_size) in fp32, or the fp32 loss when targets are given (as GPT.forward)."""
        B, T = idx.shape  # (B, T) token ids
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.rotary_len:
            raise ValueError(f"sequence position {start + T} exceeds the rotary table length {self.rotary_len} "
                             f"(10 x sequence_len={self.config.sequence_len})")
        cos, sin = self.cos[:, start:start + T], self.sin[:, start:start + T]  # (1, T, 1, D/2)
        x = self._smear(rms_norm(self.transformer.wte(idx)), kv_cache)  # (B, T, n_embd)
        x0 = x  # (B, T, n_embd)
        backout_layer, x_backout = self.config.n_layer // 2, None
        for i, block in enumerate(self.transformer.h):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0  # (B, T, n_embd)
            ve = self.value_embeds[str(i)](idx).to(x.dtype) if str(i) in self.value_embeds else None  # (B, T, H_kv * D)
            x = block(x, ve, cos, sin, self.windows[i], kv_cache)  # (B, T, n_embd)
            if i == backout_layer:
                x_backout = x
        if kv_cache is not None:
            kv_cache.advance(T)
        x = rms_norm(x - self.backout_lambda.to(x.dtype) * x_backout)  # (B, T, n_embd)
        if targets is None:
            return softcapped_logits(self.lm_head, x, self.config.vocab_size)  # (B, T, vocab_size)
        return supervised_loss(self.lm_head, x, targets, self.config.vocab_size, loss_reduction)

    # ------------------------------------------------------------------ optimizers
    def param_groups_by_name(self) -> dict[str, list[nn.Parameter]]:
        """matrix: every block weight (value-embedding gates included); embedding: wte; unembedding: lm_head;
        value_embedding: value_embeds; scalar: resid_lambdas, x0_lambdas; smear: smear gate and lambda, backout."""
        groups = {
            "matrix": list(self.transformer.h.parameters()),
            "embedding": [self.transformer.wte.weight],
            "unembedding": [self.lm_head.weight],
            "value_embedding": list(self.value_embeds.parameters()),
            "scalar": [self.resid_lambdas, self.x0_lambdas],
            "smear": [self.smear_gate.weight, self.smear_lambda, self.backout_lambda],
        }
        if sum(len(ps) for ps in groups.values()) != len(list(self.parameters())):
            raise RuntimeError("param_groups_by_name: groups do not cover every parameter exactly once")
        return groups

    def setup_optimizers(self, unembedding_lr: float = 0.004, embedding_lr: float = 0.3, matrix_lr: float = 0.02,
                         value_embedding_lr: float = -1.0, scalar_lr: float = 0.5, smear_lr: float = 0.2,
                         weight_decay: float = 0.0, trainable: Iterable[str] = GROUPS) -> list[torch.optim.Optimizer]:
        """nanochat's 2026 groups: AdamW for embeddings, lm_head and scalars, NorMuon for the block matrices.

        Defaults are nanochat's SFT values; value_embedding_lr <= 0 means half the embedding LR. AdamW LRs of
        the embeddings and lm_head are scaled by (n_embd/768)^-0.5; resid_lambdas train at scalar_lr / 100.
        weight_decay goes to NorMuon (cautious); the AdamW groups keep nanochat's own decays and betas.
        Frozen groups get requires_grad=False. Param groups carry "name" and "initial_lr".
        """
        trainable = (trainable,) if isinstance(trainable, str) else tuple(trainable)
        unknown = [g for g in trainable if g not in GROUPS]
        if unknown:
            raise ValueError(f"trainable={trainable!r}: unknown group(s) {unknown}; allowed {GROUPS}")
        if value_embedding_lr <= 0:
            value_embedding_lr = VALUE_EMBEDDING_LR_FRACTION * embedding_lr
        lrs = {"unembedding": unembedding_lr, "embedding": embedding_lr, "matrix": matrix_lr,
               "value_embedding": value_embedding_lr, "scalar": scalar_lr, "smear": smear_lr}
        for name in trainable:
            if not (isinstance(lrs[name], (int, float)) and math.isfinite(lrs[name]) and lrs[name] >= 0):
                raise ValueError(f"{name}_lr={lrs[name]!r}: must be a finite number >= 0")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay={weight_decay!r}: must be a finite number >= 0")
        params = self.param_groups_by_name()
        for name, ps in params.items():
            for p in ps:
                p.requires_grad_(name in trainable)
        scale = (self.config.n_embd / 768) ** -0.5
        # (group, params, lr, betas, weight decay): nanochat's values for each AdamW group
        adam_specs = [
            ("unembedding", params["unembedding"], lrs["unembedding"] * scale, (0.8, 0.96), 0.01),
            ("embedding", params["embedding"], lrs["embedding"] * scale, (0.8, 0.995), 0.001),
            ("value_embedding", params["value_embedding"], lrs["value_embedding"] * scale, (0.8, 0.995), 0.01),
            ("scalar/resid", [self.resid_lambdas], lrs["scalar"] * RESID_LR_FRACTION, (0.8, 0.95), 0.05),
            ("scalar", [self.x0_lambdas], lrs["scalar"], (0.96, 0.95), 0.0),
            ("smear", params["smear"], lrs["smear"], (0.8, 0.95), 0.0),
        ]
        adam_groups = [{"params": ps, "lr": lr, "initial_lr": lr, "betas": betas, "weight_decay": wd, "name": name}
                       for name, ps, lr, betas, wd in adam_specs if name.split("/")[0] in trainable and ps]
        optimizers: list[torch.optim.Optimizer] = []
        if adam_groups:
            optimizers.append(torch.optim.AdamW(adam_groups, eps=ADAMW_EPS))
        if "matrix" in trainable:
            muon_group = {"params": params["matrix"], "lr": matrix_lr, "initial_lr": matrix_lr, "name": "matrix"}
            optimizers.append(NorMuon([muon_group], lr=matrix_lr, momentum=0.95, beta2=0.9,
                                      weight_decay=weight_decay))
        return optimizers

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
