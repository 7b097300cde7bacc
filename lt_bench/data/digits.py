"""digits-LT: a long-tailed split of scikit-learn's bundled 8x8 digits (no download).

1,797 real handwritten digits ship inside scikit-learn.  A balanced test set of
``task.test_per_class`` images per class is held out first; the long-tailed training set
is drawn from the rest with the same construction as CIFAR-LT (n_max = ``task.n_max``).
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch.utils.data import Dataset
from torchvision import tv_tensors

from lt_bench.data.bundle import DATASETS, DataBundle, DatasetBuilder
from lt_bench.data.long_tail import SubsetView, long_tail_counts, long_tail_indices
from lt_bench.data.transforms import build_transform
from lt_bench.errors import ConfigError


class TensorImages(Dataset):
    """uint8 images [N, C, H, W] in memory, returned as torchvision Image tensors."""

    def __init__(self, images: np.ndarray, targets: np.ndarray):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.targets = [int(t) for t in targets]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return tv_tensors.Image(self.images[i]), self.targets[i]


def build_digits_lt(cfg, ctx=None) -> DataBundle:
    task, data, imbalance = cfg.task, cfg.data, cfg.imbalance
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    targets = digits.target.astype(np.int64)
    num_classes, test_per_class, n_max = int(task.num_classes), int(task.test_per_class), int(task.n_max)

    rng = np.random.RandomState(int(data.lt_seed))
    test_idx, pool_idx = [], []
    for label in range(num_classes):
        idx = np.flatnonzero(targets == label)
        rng.shuffle(idx)
        if len(idx) < test_per_class + n_max:
            raise ConfigError(
                f"digits class {label} has {len(idx)} images: test_per_class={test_per_class} "
                f"plus n_max={n_max} do not fit"
            )
        test_idx.append(idx[:test_per_class])
        pool_idx.append(idx[test_per_class:])
    test_idx, pool_idx = np.concatenate(test_idx), np.concatenate(pool_idx)

    counts = long_tail_counts(n_max, num_classes, imbalance)
    train_idx = pool_idx[long_tail_indices(targets[pool_idx], counts, seed=int(data.lt_seed))]

    base = TensorImages(images, targets)
    train = SubsetView(base, train_idx, targets[train_idx], build_transform(task.transform, True))
    test = SubsetView(base, test_idx, targets[test_idx], build_transform(task.transform, False))
    return DataBundle(train=train, test=test, num_classes=num_classes, train_counts=counts,
                      class_names=[str(d) for d in range(num_classes)],
                      info={"source": "sklearn.datasets.load_digits", "format": "bundled"})


@DATASETS.register("digits")
class DigitsLT(DatasetBuilder):
    """scikit-learn's bundled 8x8 digits, long-tailed (the demo task)."""

    def build(self, cfg, ctx=None) -> DataBundle:
        return build_digits_lt(cfg, ctx)
