"""Backbone features computed once, so stage 2 trains the classifier on tensors.

With the backbone frozen, stage 2 without augmentation needs the backbone's output for
each training image only once: one forward pass over the training set, then every
classifier epoch is a pass over an in-memory [N, D] tensor (seconds even at ImageNet-LT
scale).  The price is no data augmentation during classifier retraining.
"""
from __future__ import annotations

import logging
import time

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from lt_bench.distributed import DistContext
from lt_bench.evaluation import run_inference

log = logging.getLogger(__name__)


def extract_features(backbone: nn.Module, dataset: Dataset, ctx: DistContext, **inference) -> TensorDataset:
    """(features [N, D] float32, labels [N]) of every item, on every rank, in dataset order."""
    was_training = backbone.training
    backbone.eval()
    start = time.perf_counter()
    features, labels = run_inference(backbone, dataset, ctx, desc="stage2 features", **inference)
    backbone.train(was_training)
    log.info("stage2: cached %d x %d features in %.1f s", features.shape[0], features.shape[1],
             time.perf_counter() - start)
    return TensorDataset(features, labels)
