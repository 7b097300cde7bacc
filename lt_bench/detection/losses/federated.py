"""Federated loss (Zhou et al. 2021, "Probabilistic two-stage detection"; detectron2's
``use_fed_loss``) on the shared activation.

Reference: detectron2 ``detectron2/modeling/roi_heads/fast_rcnn.py`` (``get_fed_loss_classes``,
``sigmoid_cross_entropy_loss``) and ``detectron2/data/detection_utils.py``
(``get_fed_loss_cls_weights``), from CenterNet2's ``centernet/modeling/roi_heads/fed_loss.py``;
the GOL authors' ``FedLoss`` (kostas1515/mmdetection_v2.21_dev, ``mmdet/models/losses/fedloss.py``)
is the same rule on mmdet 2.x with C outputs.
"""
from __future__ import annotations

import torch
from torch import Tensor

from lt_bench.detection.categories import load_category_stats
from lt_bench.detection.losses.base import _BinaryClassLoss
from lt_bench.errors import ConfigError
from lt_bench.registries import DETECTION_LOSSES


@DETECTION_LOSSES.register("federated")
class FederatedLoss(_BinaryClassLoss):
    """Binary cross-entropy over one set S of classes per batch, for every proposal.

    S holds the classes among the batch's proposal labels and negatives drawn without
    replacement with probability proportional to image_count ** ``freq_weight_power`` (0.5)
    until ``num_sampled_classes`` (50) labels are chosen; with more positives than that, S is
    the positives.  As in detectron2 the background label, present in nearly every batch,
    counts among those 50 (``torch.unique`` of the labels includes it; it is never drawn and
    holds no output), so S usually has 49 classes.  When every non-positive class fits, S is
    all C classes and nothing is drawn.  The draw is detectron2's call, ``torch.multinomial``
    on the C + 1 weights (background weight 0, positives 0) with the global torch generator,
    so mmengine's seed reproduces it and a seed gives detectron2's draw.

    C outputs, background proposals have all-zero targets; no term outside S counts.
    Reduction as the plugin's other losses: per-proposal sum over S, averaged over proposals
    (mmdet's avg_factor, the number of proposals): detectron2's ``sum(bce * mask) / N``.
    The set is drawn per call, i.e. per GPU and per cascade stage, as in detectron2.

    ``image_count``: the categories' training image counts in label order (else read from
    ``frequency_file``, as the other losses; ``num_images`` only lets a categories-only list load).
    """

    image_counts = True

    def __init__(self, activation: str = "gumbel", num_classes: int = 1203, num_sampled_classes: int = 50,
                 freq_weight_power: float = 0.5, frequency_file: str | None = None, num_images: int | None = None,
                 image_count: list[float] | None = None, **kwargs):
        super().__init__(activation, num_classes, **kwargs)
        if image_count is None:
            if frequency_file is None:
                raise ConfigError("FederatedLoss needs frequency_file (the LVIS training annotations, or a "
                                  "categories file with image counts) or image_count")
            # the counts do not depend on the number of images; a categories-only list needs one to load
            image_count = load_category_stats(frequency_file, num_images or 1).image_count
        counts = torch.as_tensor(image_count, dtype=torch.float64)
        if counts.numel() != num_classes:
            raise ConfigError(f"{counts.numel()} category image counts for num_classes={num_classes}")
        if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
            raise ConfigError("FederatedLoss image counts must be finite and >= 0")
        if int(num_sampled_classes) < 1:
            raise ConfigError(f"FederatedLoss num_sampled_classes must be >= 1, got {num_sampled_classes}")
        self.num_sampled_classes = int(num_sampled_classes)
        self.freq_weight_power = float(freq_weight_power)
        # float32 as detectron2's ``weight.float()``: the same weights give the same draw
        self.register_buffer("class_weight", (counts ** self.freq_weight_power).float(), persistent=False)

    def federated_classes(self, label: Tensor) -> Tensor:
        """[C] bool: the classes S of this batch (one draw of the global torch generator)."""
        c = self.num_classes
        chosen = torch.zeros(c + 1, dtype=torch.bool, device=label.device)
        if label.numel() == 0:                              # no proposal, no loss: detectron2 draws nothing
            return chosen[:c]
        present = torch.unique(label)                       # sorted; includes c when there is background
        chosen[present] = True
        needed = self.num_sampled_classes - present.numel()
        if needed > 0:
            if needed >= c - int(chosen[:c].sum()):          # every other class fits: no draw
                chosen[:c] = True
            else:
                prob = torch.zeros(c + 1, dtype=torch.float32, device=label.device)
                prob[:c] = self.class_weight
                prob[present] = 0.0
                needed = min(needed, int((prob > 0).sum()))  # classes without images cannot be drawn
                if needed > 0:
                    chosen[torch.multinomial(prob, needed, replacement=False)] = True
        return chosen[:c]

    def kept_terms(self, cls_score: Tensor, label: Tensor, foreground: Tensor, targets: Tensor) -> Tensor:
        return self.federated_classes(label)[None, :].expand_as(targets)
