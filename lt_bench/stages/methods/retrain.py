"""Retrain the classifier with an activation: GOL's stage 2 with Gumbel (``stage2=gumbel``), the
plain decoupled baselines with softmax or sigmoid (``stage2=softmax``, ``stage2=sigmoid``)."""
from __future__ import annotations

from dataclasses import dataclass

from lt_bench.stages.methods import STAGE2_METHODS, Stage2Method, Stage2Outcome, TrainedRecipe


@STAGE2_METHODS.register("retrain")
class Retrain(Stage2Method):
    @dataclass
    class Settings(TrainedRecipe):
        activation: str = "gumbel"    # an ACTIVATIONS name (options: activations.<name>)
        init: str = "stage1"          # stage1: start from the stage-1 classifier | reinit: a fresh one
        reinit_scheme: str = "prior"  # a CLASSIFIER_INITS name: prior (score 1/C) | paper (w 0.001, bias -2)

    def run(self, stage) -> Stage2Outcome:
        s = self.settings
        activation = stage.activation(s.activation)
        if s.init == "reinit":
            stage.reinit_classifier(activation, s.reinit_scheme)
        progress = stage.train_classifier(activation, s.sampler, s.loss_scale)
        return Stage2Outcome(progress, activation, activation.name, {"stage2_method": self.name, "sampler": s.sampler})
