"""LDAM (Cao et al., NeurIPS 2019), with DRW: the label-distribution-aware margin loss.

The classifier is cosine (``NormedLinear``: unit features times unit class weights, times the
scale s = 30), and the true class's score is lowered by its margin before the softmax
cross-entropy: m_c = C / n_c^(1/4), with C so that the largest margin is ``max_m`` = 0.5.  As
LDAM-DRW's ``losses.py``/``cifar_train.py``: logits s*cos, target logit s*(cos - m_y), deferred
re-weighting (beta 0.9999) from epoch 160 of 200.  Evaluated on s*cos (no margin).
"""
from __future__ import annotations

from dataclasses import dataclass

from lt_bench.stages.losses import STAGE1_LOSSES
from lt_bench.stages.losses.drw import DeferredReweighting, ReweightedRecipe


@STAGE1_LOSSES.register("ldam")
class LDAMLoss(DeferredReweighting):
    one_stage = True

    @dataclass
    class Settings(ReweightedRecipe):
        max_m: float = 0.5      # the largest margin (the rarest class's)
        scale: float = 30.0     # s: the cosine logits' scale

    @property
    def method(self) -> str:
        return "ldam" if self.drw_start is None else "ldam_drw"

    def prepare(self, model) -> None:
        from lt_bench.stages.classifier_ops import NormedLinear
        old = model.classifier
        model.classifier = NormedLinear(old.in_features, old.out_features, scale=self.settings.scale).to(
            old.weight.device)

    def __call__(self, logits, labels):
        from lt_bench.stages.functional import ldam_loss, ldam_margins
        margins = ldam_margins(self.train_counts, self.settings.max_m)
        return ldam_loss(logits, labels, margins, self.settings.scale, self.class_weights())

    def details(self) -> dict:
        return {**super().details(), "ldam_max_m": self.settings.max_m, "ldam_scale": self.settings.scale}
