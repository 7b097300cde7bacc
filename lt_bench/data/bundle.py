"""What a task's data builder hands to the training stages, and the registry of the builders.

A dataset is one module under ``lt_bench/data`` with a class registered in ``DATASETS``
(``task.dataset`` names it) whose ``build(cfg, ctx)`` returns a ``DataBundle``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lt_bench.data.long_tail import SubsetView
from lt_bench.registries import DATASETS  # noqa: F401  (dataset modules register here)


@dataclass
class DataBundle:
    train: SubsetView          # long-tailed training set, training augmentation
    test: SubsetView           # evaluation split, evaluation transform
    num_classes: int
    train_counts: list[int]    # training images per class (defines many/medium/few)
    class_names: list[str]
    eval_split: str = "test"
    info: dict = field(default_factory=dict)   # extra facts for the records (source, format)
    val: SubsetView | None = None  # a val split besides the evaluation split (tau_norm's tau), if any

    @property
    def train_plain(self) -> SubsetView:
        """The training images with the evaluation transform (feature caching, analysis)."""
        return self.train.with_transform(self.test.transform)


class DatasetBuilder:
    """Builds a task's training and evaluation sets (``ctx``: share work across DDP ranks)."""

    def build(self, cfg, ctx=None) -> DataBundle:
        raise NotImplementedError
