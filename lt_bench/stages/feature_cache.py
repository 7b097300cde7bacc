"""Backbone features computed once, so that stage 2 trains the classifier on stored tensors.

With the backbone frozen, stage 2 without augmentation needs each training image's
features only once: one forward pass over the training set (each DDP rank computes its
shard and writes its rows into one memory-mapped .npy file in the run folder), then every
classifier epoch reads an [N, D] array instead of decoding N images.  The price is no data
augmentation during classifier retraining.  A resumed run reuses a complete cache made by
the same backbone.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from lt_bench.distributed import DistContext
from lt_bench.errors import DataError
from lt_bench.evaluation import predict_shard
from lt_bench.fileio import atomic_write_json
from lt_bench.models import parameter_checksum

log = logging.getLogger(__name__)

FEATURES_FILE = "stage2_features.npy"
META_FILE = "stage2_features.json"


class MemmapFeatures(Dataset):
    """(feature row, label) items read from a memory-mapped .npy file."""

    def __init__(self, path: Path, targets: list[int]):
        self.path, self.targets = Path(path), list(targets)
        self._array = None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        if self._array is None:   # opened lazily: once per process (DataLoader workers too)
            self._array = np.load(self.path, mmap_mode="r")
        return torch.from_numpy(np.array(self._array[i])), self.targets[i]

    def __getstate__(self):
        return {**self.__dict__, "_array": None}

    @property
    def features(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


def _cache_key(backbone: nn.Module, dataset: Dataset) -> dict:
    return {"rows": len(dataset), "backbone_checksum": parameter_checksum(backbone)}


def cached_features(backbone: nn.Module, dataset: Dataset, targets: list[int], ctx: DistContext,
                    cache_dir: Path, **inference) -> MemmapFeatures:
    """Features of every item of ``dataset`` in ``cache_dir``, computed once across ranks."""
    path, meta_path = cache_dir / FEATURES_FILE, cache_dir / META_FILE
    key = _cache_key(backbone, dataset)
    reusable = meta_path.exists() and {k: json.loads(meta_path.read_text()).get(k) for k in key} == key
    if ctx.broadcast_object(reusable):   # rank 0 decides for all
        log.info("stage2: reusing cached features %s", path)
        return MemmapFeatures(path, targets)

    start = time.perf_counter()
    was_training = backbone.training
    backbone.eval()
    outputs, _, indices = predict_shard(backbone, dataset, ctx, desc="stage2 features", **inference)
    backbone.train(was_training)
    if ctx.is_main:
        cache_dir.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)
        np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(dataset), outputs.shape[1])).flush()
    ctx.barrier()
    if not path.exists():
        raise DataError(f"rank {ctx.rank} cannot see the feature cache {path}: with several nodes, "
                        "out_dir must be on a filesystem all nodes share")
    array = np.load(path, mmap_mode="r+")
    array[indices.numpy()] = outputs.numpy()
    array.flush()
    del array
    ctx.barrier()
    if ctx.is_main:
        atomic_write_json(meta_path, {**key, "dim": int(outputs.shape[1]),
                                      "seconds": round(time.perf_counter() - start, 3)})
    log.info("stage2: cached %d x %d features in %.1f s -> %s", len(dataset), outputs.shape[1],
             time.perf_counter() - start, path)
    return MemmapFeatures(path, targets)
