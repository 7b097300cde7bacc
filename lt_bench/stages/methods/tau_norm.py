"""tau-normalisation (Kang et al., ICLR 2020), post hoc: w_i <- w_i / ||w_i||^tau, tau chosen on the
val split (grid 0, 0.1, ..., 2; balanced accuracy) unless given."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lt_bench.errors import ConfigError
from lt_bench.stages.methods import STAGE2_METHODS, Stage2Method, Stage2Outcome, Stage2Recipe


@STAGE2_METHODS.register("tau_norm")
class TauNormalisation(Stage2Method):
    @dataclass
    class Settings(Stage2Recipe):
        tau: Optional[float] = None    # null: chosen on the val split

    @classmethod
    def check(cls, settings, task) -> None:
        if settings.tau is not None and settings.tau < 0:
            raise ConfigError(f"stage2.tau must be >= 0 or null, got {settings.tau!r}")
        if settings.tau is None and "val" not in task.get("eval_splits", []):
            raise ConfigError(f"stage2=tau_norm chooses tau on a val split, which task {task.name} has not: "
                              "give stage2.tau=VALUE")

    def run(self, stage) -> Stage2Outcome:
        return stage.post_hoc(self.name, self._adjust)

    def _adjust(self, stage) -> dict:
        import copy

        from lt_bench.stages.classifier_ops import choose_tau, tau_normalise
        tau, details = self.settings.tau, {}
        if tau is None:
            if stage.bundle.val is None:
                raise ConfigError("tau_norm chooses tau on a val split, which this task has not: "
                                  "give stage2.tau=VALUE")
            features, labels = stage.val_features("tau_norm val features")
            tau, scores = choose_tau(features, labels, copy.deepcopy(stage.model.classifier).cpu().float())
            details["val_balanced_top1_by_tau"] = {str(t): round(100 * v, 4) for t, v in scores.items()}
        tau_normalise(stage.model.classifier, float(tau))
        return {**details, "tau": float(tau)}
