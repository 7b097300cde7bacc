"""Datasets: long-tailed training sets, balanced evaluation sets, their transforms."""
from __future__ import annotations

from typing import Callable

from lt_bench.data.bundle import DataBundle
from lt_bench.data.cifar import build_cifar_lt
from lt_bench.data.digits import build_digits_lt
from lt_bench.data.long_tail import SubsetView, class_counts, long_tail_counts, long_tail_indices
from lt_bench.data.split_lt import build_split_file_lt
from lt_bench.errors import ConfigError

# task.dataset -> builder(cfg, ctx) -> DataBundle
DATASETS: dict[str, Callable[..., DataBundle]] = {
    "cifar10": build_cifar_lt,
    "cifar100": build_cifar_lt,
    "digits": build_digits_lt,
    "imagenet_lt": build_split_file_lt,
    "places_lt": build_split_file_lt,
}


def build_data(cfg, ctx=None) -> DataBundle:
    """The task's training and evaluation sets (``ctx``: share work across DDP ranks)."""
    if cfg.task.dataset not in DATASETS:
        raise ConfigError(f"unknown task.dataset {cfg.task.dataset!r}; valid: {', '.join(sorted(DATASETS))}")
    return DATASETS[cfg.task.dataset](cfg, ctx)


__all__ = ["DATASETS", "DataBundle", "SubsetView", "build_data", "class_counts",
           "long_tail_counts", "long_tail_indices"]
