"""The box classifier's cross-entropy with any activation: C + 1 outputs, an explicit background
logit (GOL's Table 1 rows: softmax, sigmoid, Gumbel)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_bench.detection.losses.base import _ClassificationLoss
from lt_bench.errors import ConfigError
from lt_bench.registries import DETECTION_LOSSES


@DETECTION_LOSSES.register("activation_ce")
class ActivationCrossEntropyLoss(_ClassificationLoss):
    """C + 1 outputs (the last one is background), with any activation.

    Test-time class scores: the activation's own probabilities, or with ``softmax_scores`` a
    softmax over the C + 1 logits whatever the training activation: what mmdet 2.x did for
    ``CrossEntropyLoss(use_sigmoid=True)``, which has no ``get_activation`` (so GOL's sigmoid
    rows were scored that way).
    """

    background_logit = True

    def __init__(self, activation: str = "gumbel", num_classes: int = 1203, softmax_scores: bool = False,
                 **kwargs):
        super().__init__(activation, num_classes, **kwargs)
        self.softmax_scores = bool(softmax_scores)

    def get_cls_channels(self, num_classes: int) -> int:
        if num_classes != self.num_classes:
            raise ConfigError(f"loss has num_classes={self.num_classes}, the bbox head {num_classes}")
        return num_classes + 1

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """Scores of the C classes and background (mmdet's NMS drops the last column)."""
        if self.softmax_scores:
            return torch.softmax(cls_score.float(), dim=-1)
        return self.activation.probs(cls_score)

    def forward(self, cls_score: Tensor, label: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None, **kwargs) -> Tensor:
        if self.activation.binary:
            targets = F.one_hot(label, cls_score.shape[1]).float()
            per_proposal = self.activation.elementwise_loss(cls_score, targets).sum(dim=1)
        else:
            per_proposal = self.activation.sample_loss(cls_score, label)
        return self._watch(self._reduce(per_proposal, weight, avg_factor, reduction_override), cls_score, label,
                           weight)
