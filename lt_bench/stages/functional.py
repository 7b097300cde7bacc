"""The stage-1 losses' formulas as tensor functions (the registered classes in
``stages/losses/`` hold their settings and stay import-light; they call these)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lt_bench.activations import init_classifier  # noqa: F401 - the losses' classifier starts
from lt_bench.stages.classifier_ops import log_prior


def class_balanced_weights(train_counts: list[int], beta: float) -> Tensor:
    """Cui et al. (CVPR 2019): w_c = (1 - beta) / (1 - beta^n_c), normalised to sum to C
    (their code and LDAM-DRW's ``per_cls_weights``); beta = 0 gives every class weight 1."""
    counts = torch.as_tensor(train_counts, dtype=torch.float64)
    weights = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts))
    return (weights / weights.sum() * len(train_counts)).float()


def weighted_cross_entropy(logits: Tensor, labels: Tensor, weight: Tensor | None) -> Tensor:
    """``F.cross_entropy`` in float32; with ``weight`` its batch mean is sum w_y l / sum w_y."""
    return F.cross_entropy(logits.float(), labels, weight=None if weight is None else weight.to(logits.device))


def ldam_margins(train_counts: list[int], max_m: float) -> Tensor:
    """LDAM's margins: m_c proportional to n_c^(-1/4), the largest equal to ``max_m``."""
    m = torch.as_tensor(train_counts, dtype=torch.float64).pow(-0.25)
    return (m * (max_m / m.max())).float()


def ldam_loss(logits: Tensor, labels: Tensor, margins: Tensor, scale: float, weight: Tensor | None) -> Tensor:
    """LDAM on a cosine classifier's logits s*cos: the true class's logit becomes s*(cos - m_y)."""
    logits = logits.float()
    shift = (scale * margins.to(logits.device)[labels])[:, None]
    shifted = logits - torch.zeros_like(logits).scatter_(1, labels[:, None], shift)
    return weighted_cross_entropy(shifted, labels, weight)


def logit_adjusted_loss(logits: Tensor, labels: Tensor, train_counts: list[int], tau: float) -> Tensor:
    """Menon et al.: cross-entropy on logits + tau * log(prior)."""
    return F.cross_entropy(logits.float() + tau * log_prior(train_counts).float().to(logits.device), labels)


def balanced_softmax_loss(logits: Tensor, labels: Tensor, train_counts: list[int]) -> Tensor:
    """Ren et al.: cross-entropy on logits + log n_c."""
    log_counts = torch.as_tensor(train_counts, dtype=torch.float32, device=logits.device).log()
    return F.cross_entropy(logits.float() + log_counts, labels)


def cb_focal_loss(logits: Tensor, labels: Tensor, weights: Tensor, gamma: float) -> Tensor:
    """Cui et al.: -w_y sum_i (1 - p_i^t)^gamma log p_i^t with sigmoid p^t, mean over the batch."""
    z = logits.float()
    positive = F.one_hot(labels, z.shape[1]).bool()
    signed = torch.where(positive, z, -z)                       # log p^t = logsigmoid(signed)
    modulator = torch.exp(gamma * F.logsigmoid(-signed))        # (1 - p^t)^gamma
    return (weights.to(z.device)[labels][:, None] * modulator * -F.logsigmoid(signed)).sum(1).mean()


@torch.no_grad()
def fill_prior_bias(linear: torch.nn.Linear, prior: float) -> None:
    """Every sigmoid score starts at ``prior``: bias -log((1 - pi) / pi) (Lin et al.'s focal-loss start)."""
    linear.bias.fill_(-math.log((1.0 - prior) / prior))
