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
                        num_workers=num_workers, pin_memory=ctx.device.type == "cuda")
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


def compute_metrics(logits: Tensor, labels: Tensor, activation: Activation, train_counts: list[int],
                    many_above: int = DEFAULT_THRESHOLDS[0], few_below: int = DEFAULT_THRESHOLDS[1],
                    ece_bins: int = 15) -> dict:
    """Top-1/top-5, many/medium/few, ECE and per-class accuracy; percentages 0-100."""
    num_classes = logits.shape[1]
    scores = activation.log_probs(logits)      # monotone per class: same ranking as the scores
    predicted = scores.argmax(dim=1)
    per_class = per_class_accuracy(predicted, labels, num_classes)
    groups = shot_groups(train_counts, many_above, few_below)
    confidence = activation.normalised_probs(logits).max(dim=1).values
    metrics = {
        "top1": 100.0 * float((predicted == labels).float().mean()),
        "top5": 100.0 * top_k_accuracy(scores, labels, 5),
        "ece": 100.0 * expected_calibration_error(confidence, predicted == labels, ece_bins),
        "ece_scores": f"max {activation.name} score normalised to sum to 1 over classes, {ece_bins} bins",
        "num_eval": int(labels.numel()),
        "shot_classes": {g: len(groups[g]) for g in SHOT_GROUPS},
        "shot_thresholds": [int(many_above), int(few_below)],
        "per_class_top1": [None if np.isnan(a) else round(100.0 * float(a), 4) for a in per_class],
    }
    for g in SHOT_GROUPS:
        accs = per_class[groups[g]]
        accs = accs[~np.isnan(accs)]
        metrics[g] = 100.0 * float(accs.mean()) if len(accs) else None
    return metrics
