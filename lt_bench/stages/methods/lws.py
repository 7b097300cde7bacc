"""LWS, learnable weight scaling (Kang et al., ICLR 2020): the stage-1 classifier kept, one scale
per class learned (initialised to 1) with softmax cross-entropy under class-balanced sampling."""
from __future__ import annotations

from dataclasses import dataclass

from lt_bench.stages.methods import STAGE2_METHODS, Stage2Method, Stage2Outcome, TrainedRecipe


@STAGE2_METHODS.register("lws")
class LearnableWeightScaling(Stage2Method):
    @dataclass
    class Settings(TrainedRecipe):
        sampler: str = "class_balanced"

    def run(self, stage) -> Stage2Outcome:
        from lt_bench.stages.classifier_ops import ScaledLinear
        s = self.settings
        softmax = stage.activation("softmax")
        stage.replace_classifier(ScaledLinear.scaling)
        progress = stage.train_classifier(softmax, s.sampler, s.loss_scale)
        return Stage2Outcome(progress, softmax, self.name, {"stage2_method": self.name, "sampler": s.sampler})
