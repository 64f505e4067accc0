"""AdamW with linear warmup and linear decay; the shared checks of training settings."""

from __future__ import annotations

import math

import torch

from embedrank.errors import InvalidValueError
from embedrank.utils.checks import check_positive_int

__all__ = ["check_number", "check_positive_int", "make_optimizer", "optimizer_step", "training_steps"]


def check_number(value, name: str, low: float, high: float | None = None, low_open: bool = False,
                 allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidValueError(f"{name} must be a finite number, got {value!r}")
    if value < low or (low_open and value == low) or (high is not None and value > high):
        interval = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}{']' if high is not None else ')'}"
        raise InvalidValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)


def make_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float, total_steps: int,
                   warmup_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases and LayerNorm weights) and a warmup + linear decay schedule."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or name.endswith(".bias") else decay).append(param)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=learning_rate)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def training_steps(n_examples: int, batch_size: int, epochs: int, max_steps: int | None) -> int:
    """Optimizer steps of a run: ceil(n_examples / batch_size) per epoch, capped by max_steps."""
    total = -(-n_examples // batch_size) * epochs
    return total if max_steps is None else min(total, max_steps)


def optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm: float | None) -> None:
    """One step after backward(): unscale (float16 autocast), clip, step, schedule, zero the grads."""
    if scaler is not None:
        scaler.unscale_(optimizer)
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
