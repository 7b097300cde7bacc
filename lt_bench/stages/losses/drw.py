"""DRW, deferred re-weighting (Cao et al., NeurIPS 2019): softmax cross-entropy, re-weighted
from epoch ``drw_epoch`` on (LDAM-DRW's CIFAR recipe: 160 of 200, its first lr decay) by the class-balanced
weights of Cui et al. with beta = 0.9999; before it, every class weighs 1.  As LDAM-DRW's
``cifar_train.py`` (``--train_rule DRW``): ``F.cross_entropy(weight=w)``, whose batch mean is
weighted (sum_i w_yi l_i / sum_i w_yi)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lt_bench.stages.losses import STAGE1_LOSSES, Stage1Loss
from lt_bench.stages.recipes import Stage1Recipe


@dataclass
class ReweightedRecipe(Stage1Recipe):
    """The deferred re-weighting every such loss shares."""

    # when re-weighting starts: first_milestone (the first lr decay, as LDAM-DRW: epoch 160 of 200),
    # an epoch of the reference_epochs-long recipe (scaled with epochs, as the milestones), or null: never
    drw_epoch: Any = "first_milestone"
    drw_beta: float = 0.9999             # Cui et al.'s beta of the class-balanced weights


class DeferredReweighting(Stage1Loss):
    """Per-class weights: ones before the (scaled) ``drw_epoch``, class-balanced from it on."""

    Settings = ReweightedRecipe

    @classmethod
    def check(cls, settings) -> None:
        from lt_bench.errors import ConfigError
        super().check(settings)
        start = settings.drw_epoch
        if start == "first_milestone":
            if not settings.milestones:
                raise ConfigError("stage1.drw_epoch=first_milestone needs lr milestones (stage1.milestones); "
                                  "give the epoch instead (stage1.drw_epoch=N)")
        elif start is not None and (isinstance(start, bool) or not isinstance(start, (int, float)) or start < 0):
            raise ConfigError(f"stage1.drw_epoch must be first_milestone, an epoch >= 0 or null, got {start!r}")
        if not 0.0 <= settings.drw_beta < 1.0:
            raise ConfigError(f"stage1.drw_beta must be in [0, 1), got {settings.drw_beta}")

    @property
    def drw_start(self) -> float | None:
        """The epoch (0-based, of this run) from which the class-balanced weights apply."""
        start = self.settings.drw_epoch
        if start == "first_milestone":
            start = min(self.settings.milestones)
        return self.scaled_epoch(start)

    def class_weights(self):
        """The weights of the current epoch, or None (all ones)."""
        start = self.drw_start
        if start is None or self.epoch < start:
            return None
        from lt_bench.stages.functional import class_balanced_weights
        return class_balanced_weights(self.train_counts, self.settings.drw_beta)

    def details(self) -> dict:
        return {"stage1_loss": self.name, "drw_epoch": self.drw_start,
                "drw_beta": self.settings.drw_beta}


@STAGE1_LOSSES.register("drw")
class DRWCrossEntropy(DeferredReweighting):
    def __call__(self, logits, labels):
        from lt_bench.stages.functional import weighted_cross_entropy
        return weighted_cross_entropy(logits, labels, self.class_weights())
