"""Long-tailed subsets as the field builds them (LDAM-DRW, Cao et al. 2019)."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from torch.utils.data import Dataset

from lt_bench.errors import ConfigError, DataError


def long_tail_counts(n_max: int, num_classes: int, imbalance: float) -> list[int]:
    """Images kept per class: class i keeps int(n_max * (1/imbalance) ** (i / (C - 1)))."""
    if imbalance is None or not imbalance >= 1:
        raise ConfigError(f"imbalance must be a number >= 1 (n_max / n_min), got {imbalance!r}")
    if num_classes < 2:
        raise ConfigError(f"a long-tailed split needs at least 2 classes, got {num_classes}")
    ratio = 1.0 / imbalance
    counts = [int(n_max * ratio ** (i / (num_classes - 1.0))) for i in range(num_classes)]
    if counts[-1] < 1:
        empty = sum(c < 1 for c in counts)
        raise DataError(f"imbalance={imbalance:g} leaves {empty} class(es) without training images (the rarest "
                        f"keeps int({n_max} / {imbalance:g}) = 0 of the {n_max} per class): the largest imbalance "
                        f"this set supports is {n_max}")
    return counts


def long_tail_indices(targets: Sequence[int], counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """Indices of the long-tailed subset, class by class.

    Each class's indices are shuffled by one NumPy RandomState(seed) in class order and the
    first counts[c] kept: the same draw as LDAM-DRW's np.random.seed(0) followed by
    np.random.shuffle per class, so subsets match the published ones image for image.
    """
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.RandomState(seed)
    chosen = []
    for label, count in enumerate(counts):
        idx = np.flatnonzero(targets == label)
        if len(idx) < count:
            raise DataError(
                f"class {label} has {len(idx)} images but the long-tailed profile keeps {count}"
            )
        rng.shuffle(idx)
        chosen.append(idx[:count])
    return np.concatenate(chosen)


def class_counts(targets: Sequence[int], num_classes: int) -> list[int]:
    return np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).tolist()


class SubsetView(Dataset):
    """Selected items of a base dataset with their labels and an optional transform.

    The base returns (image, label); keeping ``targets`` here lets samplers, metrics and
    the feature cache read labels without decoding images.  Two views of one base (train
    augmentation, evaluation transform) share the decoded data.
    """

    def __init__(self, base: Dataset, indices: Sequence[int], targets: Sequence[int],
                 transform: Callable | None = None):
        if len(indices) != len(targets):
            raise ValueError(f"{len(indices)} indices but {len(targets)} targets")
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.targets = [int(t) for t in targets]
        self.transform = transform

    def with_transform(self, transform: Callable | None) -> "SubsetView":
        return SubsetView(self.base, self.indices, self.targets, transform)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.base[int(self.indices[i])]
        if self.transform is not None:
            image = self.transform(image)
        return image, label
