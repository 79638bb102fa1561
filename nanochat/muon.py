"""Muon: momentum SGD whose update is orthogonalised by a quintic Newton-Schulz iteration.

Used for the 2-D weight matrices of the transformer blocks (nanochat's recipe). Single-process only.
"""

from __future__ import annotations

import math

import torch

# Quintic coefficients chosen (by Muon's authors) to push singular values towards ~1 quickly.
NS_COEFFS = (3.4445, -4.7750, 2.0315)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """fp32, or fp64 when x is fp64 (a float64 run keeps its precision through the orthogonalisation)."""
    return x if x.dtype == torch.float64 else x.float()


def newton_schulz(grad: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalise a 2-D matrix: returns ~U V^T of its SVD, same shape as `grad`.

    Runs in bf16 on CUDA (fast, and accurate enough for this iteration) and fp32 elsewhere.
    """
    if grad.ndim != 2:
        raise ValueError(f"newton_schulz: expected a 2-D matrix, got shape {tuple(grad.shape)}")
    a, b, c = NS_COEFFS
    x = grad.bfloat16() if grad.is_cuda else at_least_fp32(grad)
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



def check_matrices(optimizer: torch.optim.Optimizer, name: str) -> None:
    """Muon-style updates orthogonalise a matrix: every parameter must be 2-D."""
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.ndim != 2:
                raise ValueError(f"{name} only handles 2-D parameters, got shape {tuple(p.shape)}")

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
        check_matrices(self, "Muon")

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


# ---------------------------------------------------------------------------- the 2026 variant
# Polar Express coefficients for five iterations (Amsel et al., 2025), one (a, b, c) per iteration: each
# step maps singular values s -> a s + b s^3 + c s^5, chosen to reach ~1 fast from a normalised start.
POLAR_EXPRESS_COEFFS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


def polar_express(grad: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximate polar factor of a 2-D matrix, rows first rescaled to their mean norm (a better-conditioned
    start). bf16 on CUDA, fp32 elsewhere, as nanochat's 2026 Muon."""
    if grad.ndim != 2:
        raise ValueError(f"polar_express: expected a 2-D matrix, got shape {tuple(grad.shape)}")
    if not 1 <= steps <= len(POLAR_EXPRESS_COEFFS):
        raise ValueError(f"polar_express: steps={steps}: must be 1..{len(POLAR_EXPRESS_COEFFS)}")
    x = grad.bfloat16() if grad.is_cuda else at_least_fp32(grad)
    target = at_least_fp32(x).norm() / x.size(0) ** 0.5
    row_norms = at_least_fp32(x).norm(dim=-1, keepdim=True).clamp_min(1e-6)
    x = x * (target / row_norms).to(x.dtype)
    x = x / (x.norm() * 1.01 + 1e-6)
    tall = x.size(0) > x.size(1)
    for a, b, c in POLAR_EXPRESS_COEFFS[:steps]:
        gram = x.mT @ x if tall else x @ x.mT  # the small Gram matrix
        poly = b * gram + c * (gram @ gram)
        x = a * x + (x @ poly if tall else poly @ x)
    return x


class NorMuon(torch.optim.Optimizer):
    """nanochat's 2026 Muon for 2-D parameters. Per step and matrix:
    Nesterov momentum -> polar_express -> Frobenius norm set to sqrt(min(rows, cols)) (that of a semi-orthogonal
    matrix) -> per-row (or per-column, along the longer side) second-moment normalisation that keeps the overall
    norm -> cautious weight decay (only where update and weight agree in sign). Step size lr * sqrt(max(1, rows/cols)).
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, beta2: float = 0.9,
                 weight_decay: float = 0.0, ns_steps: int = 5):
        if lr < 0:
            raise ValueError(f"lr={lr!r}: must be >= 0")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum={momentum!r}: must be in [0, 1)")
        if not 0.0 <= beta2 < 1.0:
            raise ValueError(f"beta2={beta2!r}: must be in [0, 1)")
        if weight_decay < 0:
            raise ValueError(f"weight_decay={weight_decay!r}: must be >= 0")
        defaults = dict(lr=lr, momentum=momentum, beta2=beta2, weight_decay=weight_decay, ns_steps=ns_steps)
        super().__init__(params, defaults)
        check_matrices(self, "NorMuon")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        rows, cols = p.shape
        state = self.state[p]
        if not state:
            state["momentum_buffer"] = torch.zeros_like(p.grad)
            # one second moment per row (cols reduced) when tall or square, else one per column
            state["second_momentum_buffer"] = torch.zeros((rows, 1) if rows >= cols else (1, cols),
                                                          dtype=p.dtype, device=p.device)
        buf, second = state["momentum_buffer"], state["second_momentum_buffer"]
        buf.lerp_(p.grad, 1 - group["momentum"])
        update = p.grad.lerp(buf, group["momentum"])
        g = at_least_fp32(polar_express(update, group["ns_steps"]))
        g = g * (min(rows, cols) ** 0.5 / g.norm().clamp_min(1e-6))
        v_mean = g.square().mean(dim=-1 if rows >= cols else -2, keepdim=True)
        second.lerp_(v_mean.to(second.dtype), 1 - group["beta2"])
        scaled = g * at_least_fp32(second).clamp_min(1e-10).rsqrt()
        g = scaled * (g.norm() / scaled.norm().clamp_min(1e-10))
        lr = group["lr"] * max(1.0, rows / cols) ** 0.5
        agree = (g * p) >= 0
        p.sub_((lr * g + lr * group["weight_decay"] * p * agree).to(p.dtype))
