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
    """Kang et al.'s tau-normalised classifier: w_i <- w_i / ||w_i||^tau, and it scores without
    the bias (their tau_norm.py: logits = f . w_i / ||w_i||^tau), so the bias is set to 0."""
    norms = linear.weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    linear.weight.div_(norms.pow(tau))
    if linear.bias is not None:
        linear.bias.zero_()


def log_prior(train_counts: list[int]) -> Tensor:
    counts = torch.as_tensor(train_counts, dtype=torch.float64)
    return (counts / counts.sum()).log()


@torch.no_grad()
def adjust_logits(linear: nn.Linear, train_counts: list[int], tau: float) -> None:
    """Bias b_i <- b_i - tau * log(prior_i): logits shifted by the log training prior."""
    if linear.bias is None:
        raise ValueError("logit adjustment needs a classifier with a bias")
    linear.bias.sub_(tau * log_prior(train_counts).to(linear.weight))


def balanced_accuracy(predicted: Tensor, labels: Tensor, num_classes: int) -> float:
    """Mean over the classes present of the per-class accuracy."""
    hits = torch.zeros(num_classes).index_add_(0, labels, (predicted == labels).float())
    totals = torch.bincount(labels, minlength=num_classes).float()
    return float((hits[totals > 0] / totals[totals > 0]).mean())


def _best(grid, scores: dict, what: str) -> float:
    best = max(grid, key=lambda t: (scores[t], -t))    # ties: the smaller tau
    log.info("%s: tau %.1f chosen on val (balanced accuracy %.2f%%)", what, best, 100 * scores[best])
    return best


@torch.no_grad()
def choose_tau(features: Tensor, labels: Tensor, linear: nn.Linear, grid=TAU_GRID) -> tuple[float, dict]:
    """tau-normalisation's tau: the grid's best balanced accuracy on ``features`` (no bias)."""
    scores = {}
    for tau in grid:
        norms = linear.weight.norm(dim=1, keepdim=True).clamp_min(1e-12).pow(tau)
        scores[tau] = balanced_accuracy(F.linear(features, linear.weight / norms).argmax(1), labels,
                                        linear.out_features)
    return _best(grid, scores, "tau_norm"), scores


@torch.no_grad()
def choose_adjustment_tau(features: Tensor, labels: Tensor, linear: nn.Linear, train_counts: list[int],
                          grid=TAU_GRID) -> tuple[float, dict]:
    """Logit adjustment's tau: the grid's best balanced accuracy of logits - tau log(prior)."""
    logits = F.linear(features, linear.weight, linear.bias)
    prior = log_prior(train_counts).to(logits)
    scores = {tau: balanced_accuracy((logits - tau * prior).argmax(1), labels, linear.out_features) for tau in grid}
    return _best(grid, scores, "logit_adjust"), scores


class NormedLinear(nn.Module):
    """LDAM's cosine classifier: scale * (x / ||x||) . (w_c / ||w_c||), no bias; weights start
    uniform in [-1, 1] with unit-norm columns, as LDAM-DRW's ``NormedLinear``."""

    def __init__(self, in_features: int, out_features: int, scale: float = 30.0):
        super().__init__()
        self.in_features, self.out_features, self.scale = in_features, out_features, scale
        self.weight = nn.Parameter(torch.empty(out_features, in_features).uniform_(-1, 1))
        with torch.no_grad():
            self.weight.div_(self.weight.norm(dim=1, keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scale={self.scale}"
