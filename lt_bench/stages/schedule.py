"""SGD and per-step learning-rate schedules (linear warm-up, then multistep/cosine/constant)."""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step: int, steps_per_epoch: int, *, epochs: int, schedule: str, warmup_epochs: float = 0,
              milestones: Iterable[float] = (), gamma: float = 0.1, reference_epochs: float | None = None) -> float:
    """Multiplier of the base lr at optimizer step ``step`` (0-based).

    Milestones are epochs of a ``reference_epochs``-long recipe and scale with ``epochs``,
    so a shortened run (stage1.epochs=30) keeps the recipe's shape.
    """
    epoch = step / steps_per_epoch
    warmup_steps = warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "multistep":
        scale = epochs / (reference_epochs or epochs)
        passed = sum(epoch >= m * scale for m in milestones)
        return gamma ** passed
    if schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-12)
        return 0.5 * (1.0 + math.cos(math.pi * min((epoch - warmup_epochs) / span, 1.0)))
    raise ValueError(f"unknown schedule {schedule!r}")


def build_optimizer(params, recipe) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=bool(recipe.get("nesterov", False)))


def build_scheduler(optimizer: torch.optim.Optimizer, recipe, steps_per_epoch: int) -> LambdaLR:
    milestones = list(recipe.get("milestones") or [])
    options = dict(epochs=recipe.epochs, schedule=recipe.schedule, warmup_epochs=recipe.warmup_epochs,
                   milestones=milestones, gamma=recipe.gamma, reference_epochs=recipe.get("reference_epochs"))
    return LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, **options))
