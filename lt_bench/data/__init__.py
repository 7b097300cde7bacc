"""Datasets: long-tailed training sets, balanced evaluation sets, their transforms."""
from __future__ import annotations

from typing import Callable

from lt_bench.data.bundle import DataBundle
from lt_bench.data.cifar import build_cifar_lt
from lt_bench.data.digits import build_digits_lt
from lt_bench.data.long_tail import SubsetView, class_counts, long_tail_counts, long_tail_indices
from lt_bench.errors import ConfigError

# task.dataset -> builder(task_cfg, data_cfg, imbalance) -> DataBundle
DATASETS: dict[str, Callable[..., DataBundle]] = {
    "cifar10": build_cifar_lt,
    "cifar100": build_cifar_lt,
    "digits": build_digits_lt,
}


def build_data(task, data, imbalance) -> DataBundle:
    if task.dataset not in DATASETS:
        raise ConfigError(f"unknown task.dataset {task.dataset!r}; valid: {', '.join(sorted(DATASETS))}")
    return DATASETS[task.dataset](task, data, imbalance)


__all__ = ["DATASETS", "DataBundle", "SubsetView", "build_data", "class_counts",
           "long_tail_counts", "long_tail_indices"]
