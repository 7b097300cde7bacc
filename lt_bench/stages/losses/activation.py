"""The activation's own loss (the paper's stage 1): softmax cross-entropy, or for a binary
activation (``stage1.activation=sigmoid|gumbel``) binary cross-entropy over one-hot targets.

One-stage binary training follows the authors' step and start: the loss is their mean over
batch x classes (``loss_scale=per_class``, as stage 2's) and the classifier starts as the paper
initialises it (weights 0.001, bias -2 for Gumbel, -6.5 for sigmoid)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lt_bench.stages.losses import STAGE1_LOSSES, Stage1Loss
from lt_bench.stages.recipes import Stage1Recipe


@STAGE1_LOSSES.register("activation")
class ActivationLoss(Stage1Loss):
    activations = ("softmax", "sigmoid", "gumbel")

    @dataclass
    class Settings(Stage1Recipe):
        # binary activations: per_class divides the loss by C (the authors' mean over batch x
        # classes, so their lr gives their step); a number multiplies the loss instead
        loss_scale: Any = "per_class"
        # the classifier's start: auto (softmax: Kaiming/zero; binary: the paper's init) or a
        # CLASSIFIER_INITS name (keep | paper | prior)
        classifier_init: str = "auto"

    @classmethod
    def check(cls, settings) -> None:
        from numbers import Number

        from lt_bench.errors import ConfigError
        from lt_bench.registries import CLASSIFIER_INITS
        super().check(settings)
        if settings.classifier_init != "auto":
            CLASSIFIER_INITS.check(settings.classifier_init, "stage1.classifier_init")
        scale = settings.loss_scale
        if scale != "per_class" and not (isinstance(scale, Number) and not isinstance(scale, bool) and scale > 0):
            raise ConfigError(f"stage1.loss_scale must be 'per_class' or a positive number, got {scale!r}")

    def __init__(self, settings, activation, train_counts):
        super().__init__(settings, activation, train_counts)
        scale = settings.loss_scale
        self.scale = (1.0 / len(self.train_counts) if activation.binary else 1.0) if scale == "per_class" \
            else float(scale)
        self.init = settings.classifier_init
        if self.init == "auto":
            self.init = "paper" if activation.binary else "keep"

    @property
    def method(self) -> str:
        return self.activation.name          # softmax | sigmoid | gumbel, as the paper's rows

    def prepare(self, model) -> None:
        from lt_bench.stages.functional import init_classifier
        init_classifier(model.classifier, self.activation, self.init)

    def __call__(self, logits, labels):
        loss = self.activation.loss(logits, labels)
        return loss * self.scale if self.scale != 1.0 else loss

    def details(self) -> dict:
        return {"stage1_loss": self.name, "stage1_loss_scale": self.scale, "stage1_classifier_init": self.init}
