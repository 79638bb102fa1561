"""One optimizer step, the same in the fine-tuning loop (finetune.py) and the tiny base's pre-training
(tiny_base.py): the learning rate of every parameter group, then backward, step and no gradients left.

Param groups carry "initial_lr", as both eras' setup_optimizers write them (nanochat/gpt.py, gpt2026.py).
"""

import torch


def set_lr(groups: list[dict], multiplier: float) -> None:
    for group in groups:
        group["lr"] = group["initial_lr"] * multiplier


def optimizer_step(model: torch.nn.Module, loss: torch.Tensor, optimizers: list) -> None:
    """backward, every optimizer's step, then drop the gradients (set_to_none: no stale sums next step)."""
    loss.backward()
    for opt in optimizers:
        opt.step()
    model.zero_grad(set_to_none=True)
