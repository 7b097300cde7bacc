"""cRT, classifier re-training (Kang et al., ICLR 2020): a re-initialised classifier trained with
softmax cross-entropy under class-balanced sampling."""
from __future__ import annotations

from dataclasses import dataclass

from lt_bench.stages.methods import STAGE2_METHODS, Stage2Method, Stage2Outcome, TrainedRecipe


@STAGE2_METHODS.register("crt")
class ClassifierRetraining(Stage2Method):
    @dataclass
    class Settings(TrainedRecipe):
        sampler: str = "class_balanced"
        reinit_scheme: str = "prior"

    def run(self, stage) -> Stage2Outcome:
        s = self.settings
        softmax = stage.activation("softmax")
        stage.reinit_classifier(softmax, s.reinit_scheme)
        progress = stage.train_classifier(softmax, s.sampler, s.loss_scale)
        return Stage2Outcome(progress, softmax, self.name, {"stage2_method": self.name, "sampler": s.sampler})
