"""Balanced Softmax (Ren et al., NeurIPS 2020): softmax cross-entropy on logits + log n_c, the
training class counts (their ``balanced_softmax_loss``: ``logits + spc.log()``); evaluated on
the plain logits.  It equals the logit-adjusted loss with tau = 1 (log n_c and log prior_c differ
by a constant, which the softmax ignores)."""
from __future__ import annotations

from lt_bench.stages.losses import STAGE1_LOSSES, Stage1Loss


@STAGE1_LOSSES.register("balanced_softmax")
class BalancedSoftmaxLoss(Stage1Loss):
    def __call__(self, logits, labels):
        from lt_bench.stages.functional import balanced_softmax_loss
        return balanced_softmax_loss(logits, labels, self.train_counts)
