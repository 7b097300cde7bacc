"""CIFAR-10/100-LT from torchvision's pickles or from an image-folder layout."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision import datasets

from lt_bench.data.bundle import DATASETS, DataBundle, DatasetBuilder
from lt_bench.data.long_tail import SubsetView, class_counts, long_tail_counts, long_tail_indices
from lt_bench.data.decoders import UNREADABLE_IMAGE, load_rgb
from lt_bench.data.transforms import build_transform
from lt_bench.errors import ConfigError, DataError
from lt_bench.fileio import file_digest

TORCHVISION_CIFAR = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}
FORMATS = ("pickle", "imagefolder")


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what the official CIFAR python files hold: dicts, lists, strings, bytes,
    numbers and NumPy arrays.  Any other global (``os.system`` in a ``__reduce__``) is refused
    before it is called: reading a CIFAR file never runs code."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"), ("copy_reg", "_reconstructor"),
               ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}: a CIFAR pickle holds only arrays, "
                                     "lists, strings and numbers")


def read_cifar_pickle(path: Path) -> dict:
    """One CIFAR pickle through the restricted unpickler; DataError naming the file."""
    try:
        with open(path, "rb") as f:
            entry = _CifarUnpickler(f, encoding="latin1").load()
    except (EOFError, pickle.UnpicklingError, ValueError, OSError, AttributeError, ImportError, IndexError,
            TypeError, KeyError) as err:
        raise DataError(f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err or 'empty file'})") from err
    if not isinstance(entry, dict):
        raise DataError(f"{path}: expected a dict, found {type(entry).__name__}")
    return entry


def _batch_arrays(path: Path) -> tuple[np.ndarray, list[int]]:
    """Images (N, 32, 32, 3 uint8) and labels of one data pickle, checked."""
    entry = read_cifar_pickle(path)
    labels = entry.get("labels", entry.get("fine_labels"))
    data = entry.get("data")
    if data is None or labels is None:
        raise DataError(f"{path}: needs 'data' and 'labels' (CIFAR-10) or 'fine_labels' (CIFAR-100)")
    if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(labels):
        raise DataError(f"{path}: 'data' must be N x 3072 bytes for N labels, got shape "
                        f"{getattr(data, 'shape', None)} and {len(labels)} labels")
    if data.dtype != np.uint8:
        raise DataError(f"{path}: 'data' must hold uint8 pixels, found {data.dtype}")
    if not isinstance(labels, list) or not all(type(y) is int for y in labels):
        raise DataError(f"{path}: labels must be a list of integers")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


class CifarArrays(Dataset):
    """CIFAR images held as arrays; items are (PIL image, label), as torchvision's CIFAR."""

    def __init__(self, images: np.ndarray, targets: list[int], classes: list[str]):
        self.data, self.targets, self.classes = images, targets, classes

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return Image.fromarray(self.data[i]), self.targets[i]


def load_cifar_pickles(variant: str, root: Path, download: bool, verify_md5: bool):
    """torchvision's CIFAR files: every md5 checked first (``verify_md5``), then each file read by
    the restricted unpickler.  ``verify_md5=false`` trusts the files' contents, not their code:
    the unpickler still refuses anything but data."""
    cls = TORCHVISION_CIFAR[variant]
    folder = root / cls.base_folder
    if download:
        try:
            cls(str(root), train=True, download=True)       # torchvision downloads and checks md5s
        except (RuntimeError, OSError) as err:
            raise DataError(f"{variant}: cannot download the CIFAR pickles into {root}: {err}") from err
    files = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]
    missing = [n for n, _ in files if not (folder / n).is_file()]
    if missing:
        raise DataError(
            f"{variant}: missing {', '.join(missing)} in {folder}; put torchvision's "
            f"'{cls.base_folder}' folder under data.root or pass data.download=true"
        )
    if verify_md5:
        for name, md5 in files:
            if file_digest(folder / name, "md5") != md5:
                raise DataError(f"{folder / name}: md5 differs from the official file's; re-packed files need "
                                "data.verify_md5=false (their contents are then trusted; the reader still "
                                "refuses anything but data)")
    meta = read_cifar_pickle(folder / cls.meta["filename"])
    if cls.meta["key"] not in meta:
        raise DataError(f"{folder / cls.meta['filename']}: the meta file has no {cls.meta['key']!r}")
    classes = [str(c) for c in meta[cls.meta["key"]]]
    splits = []
    for file_list in (cls.train_list, cls.test_list):
        parts = [_batch_arrays(folder / name) for name, _ in file_list]
        images = np.concatenate([p[0] for p in parts])
        labels = [y for p in parts for y in p[1]]
        bad = sorted({y for y in labels if not 0 <= y < len(classes)})
        if bad:
            raise DataError(f"{folder}: labels {bad[:5]} outside the {len(classes)} classes of {cls.meta['filename']}")
        splits.append(CifarArrays(images, labels, classes))
    return splits[0], splits[1], classes


def load_named_rgb(path: str) -> Image.Image:
    """ImageFolder's loader: an unreadable image is a DataError naming its file."""
    try:
        return load_rgb(Path(path))
    except UNREADABLE_IMAGE as err:
        raise DataError(f"cannot read image {path}: {err}") from err


def load_imagefolder(root: Path):
    splits = {}
    for split in ("train", "test"):
        path = root / split
        if not path.is_dir():
            raise DataError(f"image-folder layout needs {path}/<class>/*.jpg (data.format=imagefolder)")
        try:
            splits[split] = datasets.ImageFolder(str(path), loader=load_named_rgb)
        except FileNotFoundError as err:    # a class folder without images
            raise DataError(f"{path}: {err} (every class folder needs at least one image)") from err
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
