"""A GPT with nanochat's (late-2025) architecture, so published nanochat checkpoints load strictly.

Rotary embeddings (no learned positions), QK-norm, parameter-free RMSNorm, ReLU^2 MLP, untied
embedding / lm_head, no biases, grouped-query attention, vocab padded to a multiple of 64,
logits soft-capped at 15. Parameter names and shapes match nanochat's state dicts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanochat.muon import Muon

GROUPS = ("matrix", "embedding", "unembedding")
ROTARY_BASE = 10000.0
ROTARY_LENGTH_FACTOR = 10  # rotary tables cover 10x sequence_len, so sampling may run past it
LOGIT_SOFTCAP = 15.0
ADAMW_BETAS = (0.8, 0.95)
ADAMW_EPS = 1e-10


@dataclass
class GPTConfig:
    sequence_len: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6
    n_kv_head: int = 6
    n_embd: int = 768

    def __post_init__(self):
        for f in fields(GPTConfig):  # the shape fields (a subclass may add others, checked there)
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}.{f.name}={value!r}: must be a positive int")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd={self.n_embd}: must be divisible by n_head={self.n_head}")
        if (self.n_embd // self.n_head) % 2:
            raise ValueError(f"GPTConfig: head dim n_embd/n_head={self.n_embd // self.n_head} must be even (rotary)")
        if self.n_kv_head > self.n_head or self.n_head % self.n_kv_head:
            raise ValueError(f"GPTConfig.n_kv_head={self.n_kv_head}: must divide n_head={self.n_head}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        return -(-self.vocab_size // 64) * 64


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """RMSNorm without learnable parameters (over the last dim)."""
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x1[i], x2[i]) taken from the two halves of the head dim. x: (B, T, H, D)."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos + x2 * sin, -x1 * sin + x2 * cos], dim=-1)


def rotary_tables(head_dim: int, length: int, base: float, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (1, length, 1, head_dim/2) for positions 0..length-1, in fp32."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(length, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)  # (L, hd/2)
    return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]


class KVCache:
    """Preallocated per-layer key/value storage for incremental decoding. Layout (B, H_kv, T, D).

    Storage is allocated on the first update with that key's dtype/device, so it matches whatever
    precision the attention runs in (fp32 on CPU, bf16 under CUDA autocast).
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, head_dim: int, max_len: int):
        self.shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.max_len = max_len
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.pos = 0  # number of positions already stored (same for every layer between forwards)
        self.prev_embedding: torch.Tensor | None = None  # the 2026 model's smear reads the last token's embedding

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.pos + k.size(2)
        if end > self.max_len:
            raise ValueError(f"KVCache: {end} positions needed, cache holds {self.max_len}")
        if self.k is None:
            self.k = torch.zeros(self.shape, dtype=k.dtype, device=k.device)
            self.v = torch.zeros(self.shape, dtype=v.dtype, device=v.device)
        self.k[layer, :, :, self.pos:end] = k
        self.v[layer, :, :, self.pos:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.pos += n


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        self.c_q = nn.Linear(config.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(config.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos, sin, kv_cache: KVCache | None) -> torch.Tensor:
        B, T, C = x.shape  # (B, T, C), C = n_embd
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, H_kv, D)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, H_kv, D)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)  # cos, sin: (1, T, 1, D/2)
        q, k = rms_norm(q), rms_norm(k)  # QK-norm, after rotary
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D), (B, H_kv, T, D)
        prefix = 0
        if kv_cache is not None:
            prefix = kv_cache.pos
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, H_kv, prefix + T, D)
        gqa = self.n_kv_head != self.n_head
        if prefix == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif T == 1:  # one new token attends to everything cached
            y = F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
        else:  # a chunk after a cached prefix: query i sees keys 0..prefix+i
            allowed = torch.ones(T, prefix + T, dtype=torch.bool, device=q.device).tril(diagonal=prefix)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, enable_gqa=gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, H, T, D) -> (B, T, H * D = C)
        return self.c_proj(y)  # (B, T, C)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c_fc(x)).square()  # (B, T, C) -> (B, T, 4C), ReLU^2
        return self.c_proj(h)  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, kv_cache):
        x = x + self.attn(rms_norm(x), cos, sin, kv_cache)  # (B, T, C)
        return x + self.mlp(rms_norm(x))  # (B, T, C)


class KVGeneration:
    """Sampling with a KV cache, for a model with forward(idx, kv_cache=...), .config, .lm_head and .rotary_len."""

    def generate(self, tokens: list[int], max_tokens: int, temperature: float = 0.0, top_k: int | None = None,
                 seed: int = 42) -> Iterator[int]:
        """Yield max_tokens sampled ids after the prompt `tokens`, decoding with a KV cache.

        temperature 0 -> greedy (argmax); otherwise softmax(logits / temperature), optionally top_k.
        Arguments are checked here, eagerly; the tokens come from the returned iterator.
        """
        if not tokens:
            raise ValueError("generate: tokens (the prompt) must be non-empty")
        if max_tokens < 0 or temperature < 0 or (top_k is not None and top_k < 1):
            raise ValueError(f"generate: need max_tokens>=0, temperature>=0, top_k None or >=1; "
                             f"got {max_tokens}, {temperature}, {top_k}")
        total = len(tokens) + max_tokens
        if total > self.rotary_len:
            raise ValueError(f"generate: prompt + max_tokens = {total} exceeds the rotary length {self.rotary_len}")
        return self._generate(list(tokens), max_tokens, temperature, top_k, seed)

    @torch.inference_mode()
    def _generate(self, tokens: list[int], max_tokens: int, temperature: float, top_k: int | None,
                  seed: int) -> Iterator[int]:
        if max_tokens == 0:
            return
        device = self.lm_head.weight.device
        total = len(tokens) + max_tokens
        cfg = self.config
        cache = KVCache(cfg.n_layer, 1, cfg.n_kv_head, cfg.head_dim, total)
        rng = torch.Generator(device=device)
        rng.manual_seed(seed)
        ids = torch.tensor([tokens], dtype=torch.long, device=device)
        logits = self.forward(ids, kv_cache=cache)[:, -1, :]
        for i in range(max_tokens):
            next_id = sample_next(logits, temperature, top_k, rng)
            yield int(next_id.item())
            if i + 1 < max_tokens:
                logits = self.forward(next_id.view(1, 1), kv_cache=cache)[:, -1, :]


def softcapped_logits(lm_head: nn.Linear, x: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """fp32 (fp64 in a float64 model) logits of hidden states x (..., n_embd), padding columns cut, softcapped."""
    logits = lm_head(x)[..., :vocab_size]
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)


def supervised_loss(lm_head: nn.Linear, x: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                    reduction: str) -> torch.Tensor:
    """Cross-entropy of the final hidden states x (B, T, n_embd) against targets (B, T), -1 = ignored.

    Only the rows with a target go through the lm_head, softcap and log-softmax: in SFT most positions are
    prompt (4.1% of the smoke batches' positions are supervised), and on the tiny model that full-vocabulary
    work was ~70% of a training step (docs/design.md, "Cost per pixel"). The result equals the full-logits
    loss: "mean" averages over targets != -1 and is 0.0 (zero gradients), not NaN, when all are -1; "sum"
    and "none" as F.cross_entropy with ignore_index=-1 ("none": shape (B*T,), 0 where ignored).
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"loss_reduction={reduction!r}: allowed 'mean', 'sum', 'none'")
    flat_x, flat_targets = x.reshape(-1, x.size(-1)), targets.reshape(-1)  # (B*T, n_embd), (B*T,)
    rows = (flat_targets != -1).nonzero().squeeze(1)  # (N,) supervised positions
    logits = softcapped_logits(lm_head, flat_x.index_select(0, rows), vocab_size)  # (N, vocab_size)
    losses = F.cross_entropy(logits, flat_targets.index_select(0, rows), reduction="none")  # (N,)
    if reduction == "none":
        return losses.new_zeros(flat_targets.shape).index_copy(0, rows, losses)
    total = losses.sum()
    return total if reduction == "sum" else total / max(rows.numel(), 1)


class GPT(KVGeneration, nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.padded_vocab_size, config.n_embd),
                "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.rotary_len = config.sequence_len * ROTARY_LENGTH_FACTOR
        cos, sin = self._rotary_tables(device=self.lm_head.weight.device)
        # Non-persistent: derived from the config, never stored in checkpoints.
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    # ------------------------------------------------------------------ init
    def _rotary_tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        return rotary_tables(self.config.head_dim, self.rotary_len, ROTARY_BASE, device)

    @torch.no_grad()
    def init_weights(self) -> None:
        """nanochat init: N(0,1) embedding, fan-aware normal linears, zero lm_head and output projections.

        Also recomputes the rotary tables (needed after building on the meta device + to_empty()).
        Unlike nanochat, the embedding is NOT cast to bf16 on CUDA: all parameters stay fp32 here.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                fan_out, fan_in = module.weight.shape
                std = min(1.0, math.sqrt(fan_out / fan_in)) / math.sqrt(fan_in)
                nn.init.normal_(module.weight, mean=0.0, std=std)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.lm_head.weight)
        for block in self.transformer.h:
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
        self.init_rotary()

    def init_rotary(self) -> None:
        """(Re)compute the rotary tables on the model's device, e.g. after to_empty() from meta."""
        self.cos, self.sin = self._rotary_tables(device=self.lm_head.weight.device)

    # ------------------------------------------------------------------ forward
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                loss_reduction: str = "mean") -> torch.Tensor:
        """Logits (B, T, vocab_size) in fp32, or the fp32 cross-entropy loss when targets are given.

        loss_reduction "mean" averages over targets != -1; if every target is -1 it returns 0.0
        (sum / max(count, 1)) rather than NaN, with zero gradients. "sum" and "none" as in F.cross_entropy.
        """
        B, T = idx.shape  # (B, T) token ids
        start = kv_cache.pos if kv_cache is not None else 0
        if start + T > self.rotary_len:
            raise ValueError(f"sequence position {start + T} exceeds the rotary table length {self.rotary_len} "
                             f"(10 x sequence_len={self.config.sequence_len})")
        cos, sin = self.cos[:, start:start + T], self.sin[:, start:start + T]  # (1, T, 1, D/2)
        x = rms_norm(self.transformer.wte(idx))  # (B, T, n_embd)
        for block in self.transformer.h:
            x = block(x, cos, sin, kv_cache)  # (B, T, n_embd)
        if kv_cache is not None:
            kv_cache.advance(T)
        x = rms_norm(x)  # (B, T, n_embd)
        if targets is None:
            return softcapped_logits(self.lm_head, x, self.config.vocab_size)  # (B, T, vocab_size)
        return supervised_loss(self.lm_head, x, targets, self.config.vocab_size, loss_reduction)

    # ------------------------------------------------------------------ optimizers
    def param_groups_by_name(self) -> dict[str, list[nn.Parameter]]:
        """matrix: every block weight; embedding: wte; unembedding: lm_head."""
        groups = {
            "matrix": list(self.transformer.h.parameters()),
            "embedding": [self.transformer.wte.weight],
            "unembedding": [self.lm_head.weight],
        }
        n_grouped = sum(len(ps) for ps in groups.values())
        if n_grouped != len(list(self.parameters())):
            raise RuntimeError("param_groups_by_name: groups do not cover every parameter exactly once")
        return groups

    def setup_optimizers(self, unembedding_lr: float = 0.004, embedding_lr: float = 0.2, matrix_lr: float = 0.02,
                         weight_decay: float = 0.0,
                         trainable: Iterable[str] = GROUPS) -> list[torch.optim.Optimizer]:
        """Muon for the block matrices, AdamW for lm_head + embedding (LRs scaled by (n_embd/768)^-0.5).

        Frozen groups (not in `trainable`) get requires_grad=False and are in no optimizer. Every param
        group carries "name" and "initial_lr" (the LR as scaled) so schedules can set lr = initial_lr * mult.
        Only non-empty optimizers are returned (AdamW first, then Muon).
        """
        trainable = (trainable,) if isinstance(trainable, str) else tuple(trainable)
        unknown = [g for g in trainable if g not in GROUPS]
        if unknown:
            raise ValueError(f"trainable={trainable!r}: unknown group(s) {unknown}; allowed {GROUPS}")
        lrs = {"unembedding": unembedding_lr, "embedding": embedding_lr, "matrix": matrix_lr}
        for name in trainable:
            if not (isinstance(lrs[name], (int, float)) and math.isfinite(lrs[name]) and lrs[name] >= 0):
                raise ValueError(f"{name}_lr={lrs[name]!r}: must be a finite number >= 0")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay={weight_decay!r}: must be a finite number >= 0")
        dmodel_scale = (self.config.n_embd / 768) ** -0.5
        params = self.param_groups_by_name()
        for name, ps in params.items():
            for p in ps:
                p.requires_grad_(name in trainable)
        optimizers: list[torch.optim.Optimizer] = []
        adam_groups = [
            {"params": params[name], "lr": lrs[name] * dmodel_scale, "initial_lr": lrs[name] * dmodel_scale, "name": name}
            for name in ("unembedding", "embedding") if name in trainable
        ]
        if adam_groups:
            optimizers.append(torch.optim.AdamW(adam_groups, betas=ADAMW_BETAS, eps=ADAMW_EPS, weight_decay=weight_decay))
        if "matrix" in trainable:
            muon_group = {"params": params["matrix"], "lr": matrix_lr, "initial_lr": matrix_lr, "name": "matrix"}
            optimizers.append(Muon([muon_group], lr=matrix_lr, momentum=0.95, nesterov=True))
        return optimizers

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def sample_next(logits: torch.Tensor, temperature: float, top_k: int | None, rng: torch.Generator) -> torch.Tensor:
    """Next token ids (B,) from last-position logits (B, V)."""
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = F.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=rng).view(-1)
