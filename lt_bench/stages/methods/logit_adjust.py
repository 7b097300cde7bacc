"""Post-hoc logit adjustment (Menon et al., ICLR 2021): logits minus tau * log(training prior),
folded into the classifier's bias; tau = the given value or 1."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lt_bench.errors import ConfigError
from lt_bench.stages.methods import STAGE2_METHODS, Stage2Method, Stage2Outcome, Stage2Recipe


@STAGE2_METHODS.register("logit_adjust")
class LogitAdjustment(Stage2Method):
    @dataclass
    class Settings(Stage2Recipe):
        tau: Optional[float] = None    # null: 1.0

    @classmethod
    def check(cls, settings, task) -> None:
        if settings.tau is not None and settings.tau < 0:
            raise ConfigError(f"stage2.tau must be >= 0 or null, got {settings.tau!r}")

    def run(self, stage) -> Stage2Outcome:
        return stage.post_hoc(self.name, self._adjust)

    def _adjust(self, stage) -> dict:
        from lt_bench.stages.classifier_ops import adjust_logits
        tau = 1.0 if self.settings.tau is None else float(self.settings.tau)
        adjust_logits(stage.model.classifier, stage.bundle.train_counts, tau)
        return {"tau": tau}
