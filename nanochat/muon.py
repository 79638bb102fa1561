"""Muon: momentum SGD whose update is orthogonalised by a quintic Newton-Schulz iteration.

Used for the 2-D weight matrices of the transformer blocks (nanochat's recipe). Single-process only.
"""

from __future__ import annotations

import math

import torch

# Quintic coefficients chosen (by Muon's authors) to push singular values towards ~1 quickly.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(grad: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalise a 2-D matrix: returns ~U V^T of its SVD, same shape as `grad`.

    Runs in bf16 on CUDA (fast, and accurate enough for this iteration) and fp32 elsewhere.
    """
    if grad.ndim != 2:
        raise ValueError(f"newton_schulz: expected a 2-D matrix, got shape {tuple(grad.shape)}")
    a, b, c = NS_COEFFS
    x = grad.bfloat16() if grad.is_cuda else grad.float()
    transposed = x.size(0) > x.size(1)
    if transposed:  # iterate on the wide orientation so X X^T is the small Gram matrix
        x = x.mT
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        poly = b * gram + c * (gram @ gram)
        x = a * x + poly @ x
    if transposed:
        x = x.mT
    return x


class Muon(torch.optim.Optimizer):
    """Muon for 2-D parameters: Nesterov momentum (via lerp), Newton-Schulz, shape-aware step size.

    Step: p <- p - lr * sqrt(max(1, rows/cols)) * NS(nesterov_momentum(grad)). No weight decay.
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5):
        if lr < 0:
            raise ValueError(f"lr={lr!r}: must be >= 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r}: must be in [0, 1)")
        if ns_steps < 1:
            raise ValueError(f"ns_steps={ns_steps!r}: must be >= 1")
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon only handles 2-D parameters, got shape {tuple(p.shape)}")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            momentum = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad)
                buf = state["momentum_buffer"]
                buf.lerp_(grad, 1 - momentum)
                update = grad.lerp(buf, momentum) if group["nesterov"] else buf
                ortho = newton_schulz(update, group["ns_steps"])
                scale = math.sqrt(max(1.0, p.size(0) / p.size(1)))
                p.add_(ortho.to(p.dtype), alpha=-group["lr"] * scale)
        return loss
