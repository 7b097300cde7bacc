"""Class-balanced focal loss (Cui et al., CVPR 2019), as their paper defines it: the sigmoid
focal loss (Lin et al.) of every class, weighted by the true class's class-balanced weight
(1 - beta) / (1 - beta^n_y), normalised to sum to C:

    CB_focal(z, y) = -w_y * sum_i (1 - p_i^t)^gamma * log(p_i^t),  p_i^t = sigmoid(z_i) if i = y
                                                                       else sigmoid(-z_i),

averaged over the batch (their code divides the sum by the number of labels).  The classifier's
bias starts at -log((1 - pi) / pi), pi = 0.1 (their initialisation for the sigmoid losses), and
the scores are the sigmoid's.  Their CIFAR-10-LT choice at imbalance 100: beta = 0.9999,
gamma = 1.0 (their Table 2).
"""
from __future__ import annotations

from dataclasses import dataclass

from lt_bench.stages.losses import STAGE1_LOSSES, Stage1Loss
from lt_bench.stages.recipes import Stage1Recipe


@STAGE1_LOSSES.register("cb_focal")
class ClassBalancedFocalLoss(Stage1Loss):
    activations = ("sigmoid",)

    @dataclass
    class Settings(Stage1Recipe):
        activation: str = "sigmoid"
        beta: float = 0.9999
        gamma: float = 1.0
        prior: float = 0.1      # the bias start: every sigmoid score pi

    @classmethod
    def check(cls, settings) -> None:
        from lt_bench.errors import ConfigError
        super().check(settings)
        if not 0.0 <= settings.beta < 1.0:
            raise ConfigError(f"stage1.beta must be in [0, 1), got {settings.beta}")
        if settings.gamma < 0:
            raise ConfigError(f"stage1.gamma must be >= 0, got {settings.gamma}")
        if not 0.0 < settings.prior < 1.0:
            raise ConfigError(f"stage1.prior must be in (0, 1), got {settings.prior}")

    def prepare(self, model) -> None:
        from lt_bench.stages.functional import fill_prior_bias
        fill_prior_bias(model.classifier, self.settings.prior)

    def __call__(self, logits, labels):
        from lt_bench.stages.functional import cb_focal_loss, class_balanced_weights
        weights = class_balanced_weights(self.train_counts, self.settings.beta)
        return cb_focal_loss(logits, labels, weights, self.settings.gamma)

    def details(self) -> dict:
        return {"stage1_loss": self.name, "cb_beta": self.settings.beta, "focal_gamma": self.settings.gamma}
