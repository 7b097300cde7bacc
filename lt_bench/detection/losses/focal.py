"""Focal loss over any binary activation, for dense detectors (RetinaNet's classification
branch): the sigmoid focal loss of Lin et al. (2017) and the same focal modulation over Gumbel
probabilities (GOL's conclusion: Gumbel in a dense detector).

C outputs per anchor, no background logit: a background anchor's targets are all zero, as in
mmdet's ``FocalLoss``.  Per (anchor, class) the loss is ``lt_bench.activations.focal_loss``;
with ``activation='sigmoid'`` it equals mmdet's ``FocalLoss`` (tested against it).  The sum
over anchors and classes is divided by mmdet's ``avg_factor`` (the number of positive anchors).

mmdet's dense heads read two things from the loss: ``use_sigmoid`` in its config (``True``
gives the head C outputs, so it must be set) and ``custom_cls_channels``, after which they
score anchors with ``get_activation`` (the activation's own probabilities) instead of a
sigmoid.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_bench.activations import focal_loss
from lt_bench.detection.losses.base import _ClassificationLoss
from lt_bench.errors import ConfigError
from lt_bench.registries import DETECTION_LOSSES

FOCAL_GAMMA, FOCAL_ALPHA = 2.0, 0.25       # Lin et al.'s (and mmdet's RetinaNet's) focusing and class weight


@DETECTION_LOSSES.register("focal")
class ActivationFocalLoss(_ClassificationLoss):
    """Focal loss over ``activation``'s probabilities (Lin et al.: gamma 2, alpha 0.25)."""

    binary_only = True
    dense = True       # a dense head's classification loss (RetinaNet), not a box head's

    def __init__(self, activation: str = "gumbel", num_classes: int = 80, gamma: float = FOCAL_GAMMA,
                 alpha: float | None = FOCAL_ALPHA, use_sigmoid: bool = True, **kwargs):
        super().__init__(activation, num_classes, **kwargs)
        if not self.activation.binary:
            raise ConfigError(f"the focal loss scores each class on its own: it needs a binary activation "
                              f"(sigmoid or gumbel), not {activation!r}")
        if use_sigmoid is not True:
            raise ConfigError("ActivationFocalLoss needs use_sigmoid=True: mmdet's dense heads read it to "
                              "give the classifier C outputs (no background logit)")
        self.use_sigmoid = True
        self.gamma, self.alpha = float(gamma), None if alpha is None else float(alpha)
        focal_loss(self.activation, torch.zeros(1, 1), torch.zeros(1, 1), self.gamma, self.alpha)  # checks both

    def get_cls_channels(self, num_classes: int) -> int:
        if num_classes != self.num_classes:
            raise ConfigError(f"loss has num_classes={self.num_classes}, the head {num_classes}")
        return num_classes

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """The C class scores of each anchor: the activation's probabilities."""
        return self.activation.probs(cls_score)

    def forward(self, cls_score: Tensor, label: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None, **kwargs) -> Tensor:
        if label.dim() != 1:
            raise ConfigError("ActivationFocalLoss takes class indices (mmdet's labels, C = background), "
                              f"got labels of shape {tuple(label.shape)}")
        targets = F.one_hot(label, self.num_classes + 1)[:, : self.num_classes].float()
        elementwise = focal_loss(self.activation, cls_score, targets, self.gamma, self.alpha)
        if weight is not None and weight.dim() == 2:     # per (anchor, class)
            elementwise, weight = elementwise * weight.float(), None
        return self._watch(self._reduce(elementwise.sum(dim=1), weight, avg_factor, reduction_override),
                           cls_score, label, weight)
