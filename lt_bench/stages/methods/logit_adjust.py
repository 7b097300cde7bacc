"""Post-hoc logit adjustment (Menon et al., ICLR 2021): logits minus tau * log(training prior),
folded into the classifier's bias; tau chosen on the val split where the task has one (grid
0, 0.1, ..., 2; balanced accuracy), else the given tau (default 1, the paper's)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lt_bench.errors import ConfigError
from lt_bench.stages.methods import STAGE2_METHODS, Stage2Method, Stage2Outcome, Stage2Recipe


@STAGE2_METHODS.register("logit_adjust")
class LogitAdjustment(Stage2Method):
    @dataclass
    class Settings(Stage2Recipe):
        tau: Optional[float] = None    # null: chosen on the val split, or 1.0 without one

    @classmethod
    def check(cls, settings, task) -> None:
        if settings.tau is not None and settings.tau < 0:
            raise ConfigError(f"stage2.tau must be >= 0 or null, got {settings.tau!r}")

    def run(self, stage) -> Stage2Outcome:
        return stage.post_hoc(self.name, self._adjust)

    def _adjust(self, stage) -> dict:
        import copy

        from lt_bench.stages.classifier_ops import adjust_logits, choose_adjustment_tau
        tau, details = self.settings.tau, {}
        if tau is None and stage.bundle.val is not None:
            features, labels = stage.val_features("logit_adjust val features")
            tau, scores = choose_adjustment_tau(features, labels, copy.deepcopy(stage.model.classifier).cpu().float(),
                                                stage.bundle.train_counts)
            details["val_balanced_top1_by_tau"] = {str(t): round(100 * v, 4) for t, v in scores.items()}
        tau = 1.0 if tau is None else float(tau)
        adjust_logits(stage.model.classifier, stage.bundle.train_counts, tau)
        return {**details, "tau": tau}
