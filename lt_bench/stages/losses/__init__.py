"""Stage-1 losses: what the backbone and classifier are trained with.

Each loss is one module here, a class registered in ``STAGE1_LOSSES`` (``stage1.loss`` names
it), built with the stage-1 activation and the training-set class counts (the long-tailed
losses of the field use them).  These modules stay import-light (tensor work inside methods).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from lt_bench.registries import STAGE1_LOSSES

if TYPE_CHECKING:
    from torch import Tensor

    from lt_bench.activations import Activation



class Stage1Loss:
    """A registered stage-1 loss: ``loss(logits, labels)`` -> a scalar, computed in float32."""

    name: str = ""

    def __init__(self, activation: "Activation", train_counts: list[int]):
        self.activation, self.train_counts = activation, list(train_counts)

    def __call__(self, logits: "Tensor", labels: "Tensor") -> "Tensor":
        raise NotImplementedError


def build_stage1_loss(name: str, activation: "Activation", train_counts: list[int]) -> Stage1Loss:
    return STAGE1_LOSSES.build(name, activation, train_counts)
