"""The logit-adjusted loss (Menon et al., ICLR 2021): softmax cross-entropy on
logits + tau * log(prior), the training class prior; evaluated on the plain logits.
tau = 1 in their CIFAR and ImageNet-LT results."""
from __future__ import annotations

from dataclasses import dataclass

from lt_bench.stages.losses import STAGE1_LOSSES, Stage1Loss
from lt_bench.stages.recipes import Stage1Recipe


@STAGE1_LOSSES.register("logit_adjusted")
class LogitAdjustedLoss(Stage1Loss):
    @dataclass
    class Settings(Stage1Recipe):
        tau: float = 1.0

    def __call__(self, logits, labels):
        from lt_bench.stages.functional import logit_adjusted_loss
        return logit_adjusted_loss(logits, labels, self.train_counts, self.settings.tau)

    def details(self) -> dict:
        return {"stage1_loss": self.name, "la_tau": self.settings.tau}
