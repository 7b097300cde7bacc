"""Tensor operations on a linear classifier that stage-2 methods use: LWS's per-class scales,
tau-normalisation and its choice of tau, post-hoc logit adjustment."""
from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

TAU_GRID = [round(0.1 * i, 1) for i in range(21)]


class ScaledLinear(nn.Linear):
    """A linear classifier whose logits are multiplied by a learnable per-class scale (LWS)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.scales = nn.Parameter(torch.ones(out_features))

    @classmethod
    def scaling(cls, linear: nn.Linear) -> "ScaledLinear":
        """``linear`` with scales 1 (the identity) and its weights frozen."""
        scaled = cls(linear.in_features, linear.out_features, linear.bias is not None).to(linear.weight.device)
        with torch.no_grad():
            scaled.weight.copy_(linear.weight)
            if linear.bias is not None:
                scaled.bias.copy_(linear.bias)
        scaled.weight.requires_grad_(False)
        if scaled.bias is not None:
            scaled.bias.requires_grad_(False)
        return scaled

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias) * self.scales


@torch.no_grad()
def tau_normalise(linear: nn.Linear, tau: float) -> None:
    """w_i <- w_i / ||w_i||^tau (tau = 0 leaves the classifier unchanged)."""
    norms = linear.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    linear.weight.div_(norms.pow(tau))


@torch.no_grad()
def adjust_logits(linear: nn.Linear, train_counts: list[int], tau: float) -> None:
    """Bias b_i <- b_i - tau * log(prior_i): logits shifted by the log training prior."""
    counts = torch.as_tensor(train_counts, dtype=torch.float64)
    log_prior = (counts / counts.sum()).log().to(linear.weight)
    if linear.bias is None:
        raise ValueError("logit adjustment needs a classifier with a bias")
    linear.bias.sub_(tau * log_prior)


@torch.no_grad()
def choose_tau(features: Tensor, labels: Tensor, linear: nn.Linear, grid=TAU_GRID) -> tuple[float, dict]:
    """The tau of the grid with the best balanced (mean per-class) accuracy on ``features``."""
    num_classes = linear.out_features
    scores = {}
    for tau in grid:
        norms = linear.weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau)
        predicted = F.linear(features, linear.weight / norms, linear.bias).argmax(1)
        hits = torch.zeros(num_classes).index_add_(0, labels, (predicted == labels).float())
        totals = torch.bincount(labels, minlength=num_classes).float()
        scores[tau] = float((hits[totals > 0] / totals[totals > 0]).mean())
    best = max(grid, key=lambda t: (scores[t], -t))    # ties: the smaller tau
    log.info("tau_norm: tau %.1f chosen on val (balanced accuracy %.2f%%)", best, 100 * scores[best])
    return best, scores

