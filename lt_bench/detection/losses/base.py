"""What every box-classification loss of the plugin shares (mmdet's loss interface and hooks).

Each loss follows mmdet's loss interface (``forward(cls_score, label, weight, avg_factor,
reduction_override)``) and the hooks mmdet's BBoxHead asks a loss for: the classifier's
output width (``get_cls_channels``), its scores (``get_activation``) and its accuracy
(``get_accuracy``).  No mmdet import here: ``registry.py`` registers these classes, and the
loss math is testable without the detection extra.

- ``ActivationCrossEntropyLoss``: C + 1 outputs, an explicit background logit, one-hot
  targets over C + 1 (binary activations) or softmax cross-entropy.
- C outputs, background proposals have all-zero targets, a binary activation (the others):
  - ``EQLLoss`` / ``DropLoss``: negative terms of tail categories (image frequency < lambda)
    are removed for foreground proposals (EQL, Tan et al. 2020).  DropLoss (Hsieh et al.
    2021) also removes them for background proposals, each (proposal, tail category) term by
    its own Bernoulli draw: kept with probability r, the share of tail categories among the
    batch's foreground labels; a batch without foreground keeps them all (the GOL authors'
    ``DropLoss``).
  - ``ACSLLoss``: a foreground proposal keeps a negative term only where the class's own
    probability is >= xi (Wang et al. 2021); background proposals keep every term.
  - ``FederatedLoss``: every proposal's terms are restricted to one set of classes per batch,
    its positives and negatives drawn by image count^0.5 (Zhou et al. 2021, detectron2).

All reduce as "mean over proposals of the per-proposal sum over classes" (mmdet's
``avg_factor`` is the number of proposals), the activations' own convention.

Every forward ends with ``self._watch(loss, cls_score, labels, weight)``: inert (one attribute
test) unless a ``grad_stats.PositiveGradientCollector`` is attached, which then records each
foreground proposal's positive-logit gradient during backward (GOL's Figure 7).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lt_bench.activations import build_activation
from lt_bench.detection.categories import load_category_stats
from lt_bench.errors import ConfigError


class _ClassificationLoss(nn.Module):
    background_logit = False     # C + 1 outputs (an explicit background class) or C
    binary_only = False          # needs a binary activation (drops per-class negative terms)
    dense = False                # a dense head's loss (RetinaNet: focal) rather than a box head's
    tail_frequencies = False     # needs the categories' image frequencies (lambda_, frequency_file)
    image_counts = False         # needs the categories' image counts (frequency_file), not lambda_
    _grad_collector = None       # a grad_stats.PositiveGradientCollector while one is attached

    def __init__(self, activation: str = "gumbel", num_classes: int = 1203, loss_weight: float = 1.0,
                 activation_options: dict | None = None, reduction: str = "mean"):
        super().__init__()
        self.activation = build_activation(activation, **(activation_options or {}))
        self.num_classes, self.loss_weight, self.reduction = num_classes, loss_weight, reduction
        # mmdet's BBoxHead reads these to call the hooks below instead of its softmax defaults
        self.custom_cls_channels = self.custom_activation = self.custom_accuracy = True

    def get_accuracy(self, cls_score: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Top-1 accuracy (%) over foreground proposals, among the C object classes."""
        fg = labels < self.num_classes
        if not fg.any():
            return {"acc_classes": cls_score.new_tensor(0.0)}
        hit = cls_score[fg, : self.num_classes].argmax(dim=1) == labels[fg]
        return {"acc_classes": hit.float().mean() * 100.0}

    def _reduce(self, per_proposal: Tensor, weight: Tensor | None, avg_factor: float | None,
                reduction_override: str | None) -> Tensor:
        if weight is not None:
            per_proposal = per_proposal * weight.float()
        reduction = reduction_override or self.reduction
        if reduction == "none":
            loss = per_proposal
        elif reduction == "sum":
            loss = per_proposal.sum()
        else:
            loss = per_proposal.sum() / (avg_factor if avg_factor is not None else max(per_proposal.numel(), 1))
        return self.loss_weight * loss

    def _watch(self, loss: Tensor, cls_score: Tensor, labels: Tensor, weight: Tensor | None = None) -> Tensor:
        """``loss`` itself; with a gradient collector attached (``grad_stats``), its backward also
        records d loss / d cls_score[i, labels[i]] of each foreground proposal i."""
        if self._grad_collector is not None:
            self._grad_collector.watch(loss, cls_score, labels, weight)
        return loss


class _BinaryClassLoss(_ClassificationLoss):
    """C outputs (no background logit), a binary activation; a background proposal's targets
    are all zero.  Subclasses choose which (proposal, class) terms count: ``kept_terms``."""

    binary_only = True

    def __init__(self, activation: str = "gumbel", num_classes: int = 1203, **kwargs):
        super().__init__(activation, num_classes, **kwargs)
        if not self.activation.binary:
            raise ConfigError(f"{type(self).__name__} drops per-class negative terms: it needs a binary "
                              f"activation (sigmoid or gumbel), not {activation!r}")

    def get_cls_channels(self, num_classes: int) -> int:
        if num_classes != self.num_classes:
            raise ConfigError(f"loss has num_classes={self.num_classes}, the bbox head {num_classes}")
        return num_classes

    def get_activation(self, cls_score: Tensor) -> Tensor:
        """C class scores and a zero background column (mmdet's NMS drops the last column)."""
        scores = self.activation.probs(cls_score)
        return torch.cat([scores, scores.new_zeros(scores.shape[0], 1)], dim=1)

    def kept_terms(self, cls_score: Tensor, label: Tensor, foreground: Tensor, targets: Tensor) -> Tensor:
        """[N, C] bool (or 0/1 float): the terms that count in the loss."""
        raise NotImplementedError

    def forward(self, cls_score: Tensor, label: Tensor, weight: Tensor | None = None,
                avg_factor: float | None = None, reduction_override: str | None = None, **kwargs) -> Tensor:
        foreground = label < self.num_classes
        targets = torch.zeros_like(cls_score, dtype=torch.float32)
        targets[foreground, label[foreground]] = 1.0
        keep = self.kept_terms(cls_score, label, foreground, targets)
        elementwise = self.activation.elementwise_loss(cls_score, targets) * keep
        return self._watch(self._reduce(elementwise.sum(dim=1), weight, avg_factor, reduction_override),
                           cls_score, label, weight)


class _TailAwareLoss(_BinaryClassLoss):
    """C outputs; negatives of tail categories (image frequency < lambda_) may be dropped."""

    tail_frequencies = True

    def __init__(self, activation: str = "gumbel", num_classes: int = 1203, lambda_: float = 0.0011,
                 frequency_file: str | None = None, num_images: int | None = None,
                 image_frequency: list[float] | None = None, **kwargs):
        super().__init__(activation, num_classes, **kwargs)
        if image_frequency is None:
            if frequency_file is None:
                raise ConfigError(f"{type(self).__name__} needs frequency_file (the LVIS training "
                                  "annotations, or a categories file with num_images) or image_frequency")
            image_frequency = load_category_stats(frequency_file, num_images).image_frequency
        image_frequency = torch.as_tensor(image_frequency, dtype=torch.float64)
        if image_frequency.numel() != num_classes:
            raise ConfigError(f"{image_frequency.numel()} category frequencies for num_classes={num_classes}")
        self.lambda_ = lambda_
        self.register_buffer("tail", image_frequency < lambda_, persistent=False)

    def dropped_negatives(self, foreground: Tensor, labels: Tensor) -> Tensor:
        """[N, C] bool: negative terms removed from the loss."""
        raise NotImplementedError

    def kept_terms(self, cls_score: Tensor, label: Tensor, foreground: Tensor, targets: Tensor) -> Tensor:
        return ~(self.dropped_negatives(foreground, label) & (targets == 0))
