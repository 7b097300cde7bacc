"""Equalization loss (Tan et al., CVPR 2020) on the shared activation."""
from __future__ import annotations

from torch import Tensor

from lt_bench.detection.losses.base import _TailAwareLoss
from lt_bench.registries import DETECTION_LOSSES


@DETECTION_LOSSES.register("eql")
class EQLLoss(_TailAwareLoss):
    """Equalization loss: foreground proposals do not push tail categories down."""

    def dropped_negatives(self, foreground: Tensor, labels: Tensor) -> Tensor:
        return foreground[:, None] & self.tail[None, :]
