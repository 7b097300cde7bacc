"""CIFAR-10/100-LT from torchvision's pickles or from an image-folder layout."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from torchvision import datasets

from lt_bench.data.bundle import DATASETS, DataBundle, DatasetBuilder
from lt_bench.data.long_tail import SubsetView, class_counts, long_tail_counts, long_tail_indices
from lt_bench.data.transforms import build_transform
from lt_bench.errors import ConfigError, DataError

TORCHVISION_CIFAR = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}
FORMATS = ("pickle", "imagefolder")


def _without_md5(cls: type) -> type:
    """The torchvision class with its md5 list emptied: files must exist, checksums are not
    compared (synthetic or re-packed pickles).  Only public class attributes change."""
    return type(
        f"Unverified{cls.__name__}",
        (cls,),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _check_pickle(path: Path, meta_key: str | None) -> None:
    """A CIFAR pickle that torchvision can read, else DataError naming the file: empty,
    truncated, or without the arrays torchvision expects."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except (EOFError, pickle.UnpicklingError, ValueError, OSError, AttributeError, ImportError, IndexError) as err:
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err or 'empty file'})") from err
    if not isinstance(entry, dict):
        raise DataError(f"{path}: expected a dict, found {type(entry).__name__}")
    if meta_key is not None:
        if meta_key not in entry:
            raise DataError(f"{path}: the meta file has no {meta_key!r}")
        return
    labels = entry.get("labels", entry.get("fine_labels"))
    data = entry.get("data")
    if data is None or labels is None:
        raise DataError(f"{path}: needs 'data' and 'labels' (CIFAR-10) or 'fine_labels' (CIFAR-100)")
    if getattr(data, "shape", (None,))[0] != len(labels) or getattr(data, "ndim", 0) != 2 or data.shape[1] != 3072:
        raise DataError(f"{path}: 'data' must be N x 3072 bytes for N labels, got shape "
                        f"{getattr(data, 'shape', None)} and {len(labels)} labels")


def load_cifar_pickles(variant: str, root: Path, download: bool, verify_md5: bool):
    cls = TORCHVISION_CIFAR[variant]
    folder = root / cls.base_folder
    if not download:
        names = [n for n, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(
                f"{variant}: missing {', '.join(missing)} in {folder}; put torchvision's "
                f"'{cls.base_folder}' folder under data.root or pass data.download=true"
            )
    if not download:
        for name in names:
            _check_pickle(folder / name, cls.meta["key"] if name == cls.meta["filename"] else None)
    if not verify_md5:
        cls = _without_md5(cls)
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except (RuntimeError, ValueError, EOFError, OSError, KeyError, pickle.UnpicklingError) as err:
        hint = " (data.verify_md5=false skips the checksum for re-packed files)" if verify_md5 else ""
        raise DataError(f"{variant}: cannot load the CIFAR pickles in {folder}: {err}{hint}") from err
    return train, test, list(train.classes)


def load_imagefolder(root: Path):
    splits = {}
    for split in ("train", "test"):
        path = root / split
        if not path.is_dir():
            raise DataError(f"image-folder layout needs {path}/<class>/*.jpg (data.format=imagefolder)")
        splits[split] = datasets.ImageFolder(str(path))
    train, test = splits["train"], splits["test"]
    if train.classes != test.classes:
        raise DataError(f"class folders differ between {root / 'train'} and {root / 'test'}")
    return train, test, list(train.classes)


def build_cifar_lt(cfg, ctx=None) -> DataBundle:
    task, data, imbalance = cfg.task, cfg.data, cfg.imbalance
    variant, num_classes = task.dataset, int(task.num_classes)
    if data.format not in FORMATS:
        raise ConfigError(f"unknown data.format {data.format!r}; valid: {', '.join(FORMATS)}")
    root = Path(data.root).expanduser()
    if data.format == "pickle":
        train_base, test_base, names = load_cifar_pickles(variant, root, bool(data.download), bool(data.verify_md5))
    else:
        train_base, test_base, names = load_imagefolder(root)
    if len(names) != num_classes:
        raise DataError(f"{root}: found {len(names)} classes, task {task.name} expects {num_classes}")

    source_counts = class_counts(train_base.targets, num_classes)
    if min(source_counts) != max(source_counts):
        raise DataError(
            f"{root}: the CIFAR-LT construction starts from a balanced training set, found "
            f"{min(source_counts)} to {max(source_counts)} images per class"
        )
    counts = long_tail_counts(source_counts[0], num_classes, imbalance)
    indices = long_tail_indices(train_base.targets, counts, seed=int(data.lt_seed))
    train_targets = np.asarray(train_base.targets)[indices]

    autoaugment = bool(data.autoaugment)
    train = SubsetView(train_base, indices, train_targets,
                       build_transform(task.transform, True, autoaugment=autoaugment))
    test = SubsetView(test_base, np.arange(len(test_base)), test_base.targets,
                      build_transform(task.transform, False))
    return DataBundle(train=train, test=test, num_classes=num_classes, train_counts=counts,
                      class_names=names, info={"source": str(root), "format": data.format})


@DATASETS.register("cifar10")
class Cifar10LT(DatasetBuilder):
    """CIFAR-10-LT (LDAM-DRW construction): torchvision's pickles or an image-folder copy."""

    def build(self, cfg, ctx=None) -> DataBundle:
        return build_cifar_lt(cfg, ctx)


@DATASETS.register("cifar100")
class Cifar100LT(Cifar10LT):
    """CIFAR-100-LT (LDAM-DRW construction)."""
