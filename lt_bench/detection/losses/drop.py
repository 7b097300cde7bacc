"""DropLoss (Hsieh et al., AAAI 2021), as the GOL authors use it with the Gumbel activation."""
from __future__ import annotations

import torch
from torch import Tensor

from lt_bench.detection.losses.base import _TailAwareLoss
from lt_bench.registries import DETECTION_LOSSES


@DETECTION_LOSSES.register("drop")
class DropLoss(_TailAwareLoss):
    """EQL for foreground proposals; each (background proposal, tail category) negative is kept
    by its own Bernoulli draw with probability r, the share of tail categories among this
    batch's foreground labels.  Without foreground proposals r is undefined and every negative
    is kept, as in the authors' code (their NaN ratio keeps all).  The draw is one uniform
    number per (proposal, category), ``torch.rand(N, C)``, kept where it is <= r: the authors'
    ``torch.rand_like`` on the same shape, so a seed gives their pattern."""

    def dropped_negatives(self, foreground: Tensor, labels: Tensor) -> Tensor:
        draw = torch.rand(labels.shape[0], self.num_classes, device=labels.device)
        fg_labels = labels[foreground]
        if fg_labels.numel() == 0:
            return torch.zeros_like(draw, dtype=torch.bool)
        ratio = self.tail[fg_labels].float().mean()
        dropped = foreground[:, None] | (draw > ratio)
        return dropped & self.tail[None, :]
