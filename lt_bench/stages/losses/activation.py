"""The activation's own loss (the paper's stage 1): softmax cross-entropy, or for a binary
activation (``stage1.activation=sigmoid|gumbel``) binary cross-entropy over one-hot targets."""
from __future__ import annotations

from lt_bench.stages.losses import STAGE1_LOSSES, Stage1Loss


@STAGE1_LOSSES.register("activation")
class ActivationLoss(Stage1Loss):
    def __call__(self, logits, labels):
        return self.activation.loss(logits, labels)
