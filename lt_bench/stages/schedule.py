"""SGD and per-step learning-rate schedules: a linear warm-up, then a registered schedule
(``multistep``, ``cosine``, ``constant``; ``SCHEDULES``)."""
from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

from lt_bench.registries import SCHEDULES


class Schedule:
    """The lr multiplier after the warm-up, at (fractional) ``epoch`` of ``epochs``."""

    def factor(self, epoch: float, *, epochs: int, warmup_epochs: float, milestones: Iterable[float],
               gamma: float, reference_epochs: float | None) -> float:
        raise NotImplementedError


@SCHEDULES.register("constant")
class Constant(Schedule):
    def factor(self, epoch, **_) -> float:
        return 1.0


@SCHEDULES.register("multistep")
class MultiStep(Schedule):
    """x gamma at each milestone; milestones are epochs of a ``reference_epochs``-long recipe
    and scale with ``epochs``, so a shortened run (stage1.epochs=30) keeps the recipe's shape."""

    def factor(self, epoch, *, epochs, milestones, gamma, reference_epochs, **_) -> float:
        scale = epochs / (reference_epochs or epochs)
        return gamma ** sum(epoch >= m * scale for m in milestones)


@SCHEDULES.register("cosine")
class Cosine(Schedule):
    """Half a cosine from 1 after the warm-up to 0 at the last epoch."""

    def factor(self, epoch, *, epochs, warmup_epochs, **_) -> float:
        span = max(epochs - warmup_epochs, 1e-12)
        return 0.5 * (1.0 + math.cos(math.pi * min((epoch - warmup_epochs) / span, 1.0)))


def lr_lambda(steps_per_epoch: int, *, epochs: int, schedule: str, warmup_epochs: float = 0,
              milestones: Iterable[float] = (), gamma: float = 0.1,
              reference_epochs: float | None = None) -> Callable[[int], float]:
    """Multiplier of the base lr at optimizer step ``step`` (0-based): linear warm-up, then the schedule."""
    shape = SCHEDULES.build(schedule)
    warmup_steps = warmup_epochs * steps_per_epoch
    options = dict(epochs=epochs, warmup_epochs=warmup_epochs, milestones=list(milestones), gamma=gamma,
                   reference_epochs=reference_epochs)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return shape.factor(step / steps_per_epoch, **options)
    return factor


def lr_factor(step: int, steps_per_epoch: int, **recipe) -> float:
    return lr_lambda(steps_per_epoch, **recipe)(step)


def build_optimizer(params, recipe) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay, nesterov=bool(recipe.get("nesterov", False)))


def build_scheduler(optimizer: torch.optim.Optimizer, recipe, steps_per_epoch: int) -> LambdaLR:
    return LambdaLR(optimizer, lr_lambda(steps_per_epoch, epochs=recipe.epochs, schedule=recipe.schedule,
                                         warmup_epochs=recipe.warmup_epochs, milestones=recipe.get("milestones") or [],
                                         gamma=recipe.gamma, reference_epochs=recipe.get("reference_epochs")))
