"""Synthetic data in the real on-disk formats, for smoke runs, tests and benchmarks (no
download needed): CIFAR pickles as torchvision reads them, and ImageNet-LT-like trees of split
files in the OLTR format with the JPEG images they list.  Classes are learnable: each has a
colour of its own plus noise, so a short run reaches accuracies far from chance."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_COUNTS = [12, 9, 6, 4, 3, 2]


def write_split_tree(root: Path, prefix: str = "Synthetic_LT", train_counts=TRAIN_COUNTS,
                     eval_per_class: int = 3, size: int = 40) -> tuple[Path, Path]:
    """Write ``<prefix>_{train,val,test}.txt`` under root/splits and the images under
    root/images; returns (splits_dir, image_root).  Class c has a colour of its own plus
    noise, so that the classes are learnable."""
    rng = np.random.default_rng(0)
    splits_dir, images = root / "splits", root / "images"
    splits_dir.mkdir(parents=True)
    palette = rng.integers(0, 256, size=(len(train_counts), 3))
    per_split = {"train": train_counts, "val": [eval_per_class] * len(train_counts),
                 "test": [eval_per_class] * len(train_counts)}
    for split, counts in per_split.items():
        lines = []
        for label, count in enumerate(counts):
            folder = images / split / f"n{label:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(palette[label] + rng.normal(0, 30, size=(size, size, 3)), 0, 255)
                rel = f"{split}/n{label:08d}/{split}_{label}_{i}.JPEG"
                Image.fromarray(pixels.astype(np.uint8)).save(images / rel, quality=90)
                lines.append(f"{rel} {label}\n")
        (splits_dir / f"{prefix}_{split}.txt").write_text("".join(lines))
    return splits_dir, images


def _images(labels: np.ndarray, palette: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    n = len(labels)
    if palette is None:
        return np.zeros((n, 3072), dtype=np.uint8)
    pixels = palette[labels][:, :, None] + rng.normal(0, 40, size=(n, 3, 1024))
    return np.clip(pixels, 0, 255).astype(np.uint8).reshape(n, 3072)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(root: Path, variant: str, train_per_class: int, test_per_class: int,
                learnable: bool = True, seed: int = 0) -> Path:
    """Write a CIFAR-10 or CIFAR-100 folder under ``root``; returns ``root``."""
    rng = np.random.default_rng(seed)
    num_classes = 10 if variant == "cifar10" else 100
    train_labels = np.tile(np.arange(num_classes), train_per_class)
    rng.shuffle(train_labels)
    test_labels = np.repeat(np.arange(num_classes), test_per_class)
    palette = rng.integers(0, 256, size=(num_classes, 3)) if learnable else None
    train_images = _images(train_labels, palette, rng)
    test_images = _images(test_labels, palette, rng)
    names = [f"class_{i:03d}" for i in range(num_classes)]
    if variant == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for b, part in enumerate(np.array_split(np.arange(len(train_labels)), 5), start=1):
            _dump(folder / f"data_batch_{b}", {"data": train_images[part], "labels": train_labels[part].tolist(),
                                                "batch_label": f"training batch {b} of 5"})
        _dump(folder / "test_batch", {"data": test_images, "labels": test_labels.tolist()})
        _dump(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": 10000})
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        _dump(folder / "train", {"data": train_images, "fine_labels": train_labels.tolist(),
                                 "coarse_labels": (train_labels // 5).tolist()})
        _dump(folder / "test", {"data": test_images, "fine_labels": test_labels.tolist(),
                                "coarse_labels": (test_labels // 5).tolist()})
        _dump(folder / "meta", {"fine_label_names": names, "coarse_label_names": names[:20]})
    return root
