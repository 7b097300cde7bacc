"""Typed recipes of the two stages (Hydra structured configs; no torch here).

Field types are checked when Hydra composes the config (``stage1.epochs=two`` fails there);
the defaults are GOL's CIFAR recipe, and task files override what their dataset needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class StageRecipe:
    """SGD with a linear warm-up then a registered schedule (``stages/schedule.py``)."""

    epochs: int = 240
    batch_size: int = 64            # global: images per step over all ranks
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2.0e-4
    nesterov: bool = False
    schedule: str = "multistep"     # a SCHEDULES name: multistep | cosine | constant
    warmup_epochs: float = 5.0
    milestones: list[float] = field(default_factory=lambda: [200.0, 220.0])
    gamma: float = 0.01             # lr factor at each milestone
    reference_epochs: Optional[float] = 240.0   # milestones are placed for this many epochs and scale with epochs
    source: Optional[str] = None    # where the recipe's values come from (paper, config file); recorded


@dataclass
class Stage1Recipe(StageRecipe):
    """Stage 1: backbone and linear classifier trained together."""

    loss: str = "activation"        # a STAGE1_LOSSES name: activation (the activation's own loss)
    activation: str = "softmax"     # an ACTIVATIONS name: the loss's and the evaluation's scores
    checkpoint: Optional[str] = None    # a stage-1 checkpoint to start stage=2 runs from
