"""Evaluation: exact predictions under DDP, and the long-tailed metrics.

Each rank predicts a disjoint strided shard of the evaluation set (no DistributedSampler
padding), the shards are gathered and put back in dataset order, so every image is
counted exactly once whatever the world size.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from lt_bench.activations import Activation
from lt_bench.distributed import DistContext
from lt_bench.progress import progress_bar
from lt_bench.signals import quiet_worker
from lt_bench.shots import DEFAULT_THRESHOLDS, SHOT_GROUPS, shot_groups


@torch.no_grad()
def predict_shard(fn: Callable[[Tensor], Tensor], dataset: Dataset, ctx: DistContext, *,
                  batch_size: int = 256, num_workers: int = 0, amp_dtype: torch.dtype | None = None,
                  channels_last: bool = False, progress: bool = False,
                  desc: str = "eval") -> tuple[Tensor, Tensor, Tensor]:
    """``fn`` over this rank's strided shard of ``dataset`` (items rank, rank + W, ...).

    Returns (outputs float32 [n, ...], labels [n], dataset indices [n]) on the CPU.
    """
    indices = torch.arange(ctx.rank, len(dataset), ctx.world_size)
    loader = DataLoader(Subset(dataset, indices.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=ctx.device.type == "cuda",
                        worker_init_fn=quiet_worker if num_workers > 0 else None)
    autocast = (torch.autocast(ctx.device.type, dtype=amp_dtype) if amp_dtype is not None
                else nullcontext())
    outputs, labels = [], []
    for images, targets in progress_bar(loader, progress and ctx.is_main, desc):
        images = images.to(ctx.device, non_blocking=True)
        if channels_last and images.dim() == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast:
            out = fn(images)
        outputs.append(out.float().cpu())
        labels.append(torch.as_tensor(targets).cpu())
    if not outputs:   # a rank with an empty shard still needs the trailing shape
        image, _ = dataset[0]
        with autocast:
            shape = fn(image.unsqueeze(0).to(ctx.device)).shape[1:]
        return torch.empty((0, *shape)), torch.empty(0, dtype=torch.long), indices
    return torch.cat(outputs), torch.cat(labels), indices


def gather_in_order(ctx: DistContext, outputs: Tensor, labels: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Every rank's shard, back in dataset order, on every rank."""
    if not ctx.is_distributed:
        return outputs, labels
    order = torch.argsort(ctx.gather_uneven(indices))
    return ctx.gather_uneven(outputs)[order], ctx.gather_uneven(labels)[order]


def run_inference(fn: Callable[[Tensor], Tensor], dataset: Dataset, ctx: DistContext,
                  **options) -> tuple[Tensor, Tensor]:
    """``fn`` over every item of ``dataset`` exactly once across ranks: (outputs, labels) in
    dataset order, on every rank.  Options as ``predict_shard``."""
    return gather_in_order(ctx, *predict_shard(fn, dataset, ctx, **options))


def per_class_accuracy(predicted: Tensor, labels: Tensor, num_classes: int) -> np.ndarray:
    """Accuracy per class in [0, 1]; NaN for a class without evaluation images."""
    labels_np, hit = labels.numpy(), (predicted == labels).numpy()
    total = np.bincount(labels_np, minlength=num_classes)
    correct = np.bincount(labels_np, weights=hit, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)


def top_k_accuracy(scores: Tensor, labels: Tensor, k: int) -> float:
    k = min(k, scores.shape[1])
    top = scores.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean())


def expected_calibration_error(confidence: Tensor, correct: Tensor, bins: int = 15) -> float:
    """Sum over equal-width confidence bins (lo, hi] of |bin| / N * |accuracy - confidence|."""
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    conf, hit = confidence.double(), correct.double()
    bucket = torch.bucketize(conf, edges[1:-1], right=False)  # (lo, hi]; 0 goes to the first bin
    ece = 0.0
    for b in range(bins):
        in_bin = bucket == b
        if in_bin.any():
            ece += float(in_bin.double().mean() * (hit[in_bin].mean() - conf[in_bin].mean()).abs())
    return ece


def classwise_calibration_error(scores: Tensor, labels: Tensor, bins: int = 15) -> float:
    """Classwise ECE (Kull et al., NeurIPS 2019): for each class j, the ECE of its score p_j over
    every sample against whether the sample is of class j; the mean over classes."""
    onehot = torch.nn.functional.one_hot(labels, scores.shape[1]).bool()
    return float(np.mean([expected_calibration_error(scores[:, j], onehot[:, j], bins)
                          for j in range(scores.shape[1])]))


def _calibration(scores: Tensor, labels: Tensor, predicted: Tensor, bins: int) -> dict:
    """ECE of the confidence in the predicted class, NLL and Brier score, on ``scores``."""
    if labels.numel() == 0:
        return {"ece": None, "nll": None, "brier": None}
    confidence = scores.gather(1, predicted[:, None]).squeeze(1)
    true_score = scores.gather(1, labels[:, None]).squeeze(1).double()
    onehot = torch.nn.functional.one_hot(labels, scores.shape[1]).double()
    return {"ece": 100.0 * expected_calibration_error(confidence, predicted == labels, bins),
            "nll": float(-true_score.clamp_min(1e-300).log().mean()),
            "brier": float(((scores.double() - onehot) ** 2).sum(dim=1).mean())}


def compute_metrics(logits: Tensor, labels: Tensor, activation: Activation, train_counts: list[int],
                    many_above: int = DEFAULT_THRESHOLDS[0], few_below: int = DEFAULT_THRESHOLDS[1],
                    ece_bins: int = 15) -> dict:
    """Top-1/top-5, many/medium/few, calibration and per-class accuracy; percentages 0-100.

    Predictions rank the logits: every activation is increasing in its logit, and float32
    scores saturate (Gumbel's exp(-exp(-z)) is 1.0 above z ~ 17), where they would tie.
    Calibration is measured on the model's own scores (``activation.probs``: the softmax
    probabilities, or a binary activation's independent per-class probabilities): ``ece`` of the
    confidence in the predicted class, ``ece_classwise``, ``nll`` (-log of the true class's
    score) and ``brier`` (sum over classes of (score - one-hot)^2), overall and per shot group of
    the true class.  ``ece_normalised`` is the ECE of scores renormalised to sum to 1.
    """
    num_classes = logits.shape[1]
    logits = logits.float()
    predicted = logits.argmax(dim=1)
    per_class = per_class_accuracy(predicted, labels, num_classes)
    groups = shot_groups(train_counts, many_above, few_below)
    scores = activation.probs(logits)
    normalised = activation.normalised_probs(logits).max(dim=1).values
    calibration = _calibration(scores, labels, predicted, ece_bins)
    metrics = {
        "top1": 100.0 * float((predicted == labels).float().mean()),
        "top5": 100.0 * top_k_accuracy(logits, labels, 5),
        **calibration,
        "ece_classwise": 100.0 * classwise_calibration_error(scores, labels, ece_bins),
        "ece_normalised": 100.0 * expected_calibration_error(normalised, predicted == labels, ece_bins),
        "ece_scores": f"{activation.name} scores as the model outputs them, {ece_bins} bins",
        "num_eval": int(labels.numel()),
        "shot_classes": {g: len(groups[g]) for g in SHOT_GROUPS},
        "shot_thresholds": [int(many_above), int(few_below)],
        "per_class_top1": [None if np.isnan(a) else round(100.0 * float(a), 4) for a in per_class],
    }
    in_group = {g: torch.isin(labels, torch.as_tensor(groups[g], dtype=labels.dtype)) for g in SHOT_GROUPS}
    metrics["calibration_by_shot"] = {
        g: _calibration(scores[mask], labels[mask], predicted[mask], ece_bins) for g, mask in in_group.items()}
    for g in SHOT_GROUPS:
        accs = per_class[groups[g]]
        accs = accs[~np.isnan(accs)]
        metrics[g] = 100.0 * float(accs.mean()) if len(accs) else None
    return metrics
