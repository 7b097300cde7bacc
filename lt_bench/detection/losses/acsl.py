"""Adaptive Class Suppression Loss (Wang et al., CVPR 2021) on the shared activation.

The rule of the paper on C outputs, as the brief of GOL's Table 6 asks.  The authors' code
(CASIA-IVA-Lab/ACSL, ``mmdet/models/losses/acsl.py``, mmdet 1.0rc0) differs in two ways kept out
of this loss: it trains C + 1 sigmoid outputs, the background one a class like the others (a
foreground proposal keeps its background negative only where p_bg >= xi; a background
proposal has the positive term of that column); and its background proposals ignore xi: every
one keeps its frequent-class negatives, a random 10% of them (``np.random.choice``) their
common-class negatives and a random 1% their rare-class negatives.  The GOL authors' copy
(kostas1515/LongTailActivations, same path, ``variant='gumbel'``) is that code on mmdet 2.x.
Both fine-tune only the box classifier of a trained baseline (``selectp = 1`` in their configs).
"""
from __future__ import annotations

import torch
from torch import Tensor

from lt_bench.detection.losses.base import _BinaryClassLoss
from lt_bench.errors import ConfigError
from lt_bench.registries import DETECTION_LOSSES


@DETECTION_LOSSES.register("acsl")
class ACSLLoss(_BinaryClassLoss):
    """ACSL: a foreground proposal of class c keeps its positive term and, of its negative
    terms, those of the classes j != c whose probability p_j is >= ``score_thr`` (xi, 0.7 in
    the paper): a negative the classifier already scores low is not suppressed further.  The
    weights come from the detached probabilities (no gradient flows through them).  Background
    proposals keep every negative term.

    p_j is the activation's own probability: sigmoid(z) for ``sigmoid`` (the authors'),
    exp(-exp(-z / T)) for ``gumbel`` (unclamped: with the [-4, 10] clamp of the Gumbel loss the
    same decision as the GOL authors' clamped probability while xi's logit, -T log(-log xi),
    lies inside the clamp: T log(1 / -log 0.7) = 1.03 T).

    Reduction as the plugin's other losses: the per-proposal sum over kept terms, averaged
    over proposals (mmdet's avg_factor, the number of proposals): the authors'
    ``sum(weight_mask * bce) / n_proposals``.  Unlike the authors' code there is no background
    logit and background proposals keep all C negatives (see the module doc).
    """

    def __init__(self, activation: str = "gumbel", num_classes: int = 1203, score_thr: float = 0.7, **kwargs):
        super().__init__(activation, num_classes, **kwargs)
        if not 0.0 < score_thr < 1.0:
            raise ConfigError(f"ACSLLoss score_thr (xi) must be in (0, 1), got {score_thr}")
        self.score_thr = float(score_thr)

    def kept_terms(self, cls_score: Tensor, label: Tensor, foreground: Tensor, targets: Tensor) -> Tensor:
        with torch.no_grad():
            confident = self.activation.probs(cls_score.detach()) >= self.score_thr
        return (targets == 1) | confident | ~foreground[:, None]
