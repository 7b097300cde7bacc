"""Datasets: long-tailed training sets, balanced evaluation sets, their transforms.

Each dataset is a registered ``DatasetBuilder`` in its own module (``DATASETS``); this
package's ``build_data`` builds the one ``task.dataset`` names.
"""
from __future__ import annotations

from lt_bench.data.bundle import DATASETS, DataBundle, DatasetBuilder
from lt_bench.data.long_tail import SubsetView, class_counts, long_tail_counts, long_tail_indices


def build_data(cfg, ctx=None) -> DataBundle:
    """The task's training and evaluation sets (``ctx``: share work across DDP ranks)."""
    return DATASETS.build(cfg.task.dataset).build(cfg, ctx)


__all__ = ["DATASETS", "DataBundle", "DatasetBuilder", "SubsetView", "build_data", "class_counts",
           "long_tail_counts", "long_tail_indices"]
