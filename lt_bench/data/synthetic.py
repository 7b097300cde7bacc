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


# ImageNet's training images: most are 500 px on the long side (500x375, 500x333, 375x500...),
# the rest spread from about 100 px to well over 1,000 px; the mean is about 469x387 (181k pixels).
_COMMON_SIZES = ((500, 375), (500, 333), (375, 500), (500, 500), (333, 500), (500, 400))


def imagenet_like_size(rng: np.random.Generator) -> tuple[int, int]:
    """A (width, height) drawn from a mix like ImageNet's: 70 % common 500-px shapes, else a
    short/long ratio in [0.6, 1] and a long side log-uniform from 120 to 1,200 px (mean pixel
    count about 175k, near ImageNet's 181k)."""
    if rng.random() < 0.7:
        return _COMMON_SIZES[rng.integers(len(_COMMON_SIZES))]
    long_side = int(np.exp(rng.uniform(np.log(120), np.log(1200))))
    ratio = rng.uniform(0.6, 1.0)
    short = max(32, int(long_side * ratio))
    return (long_side, short) if rng.random() < 0.6 else (short, long_side)


def natural_like_image(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth colour fields, edges and fine noise: JPEG sizes like photographs' (about 100-150 KB
    at 500x375, quality 90), not the tiny files of flat images or the huge ones of pure noise."""
    coarse = rng.integers(0, 256, size=(max(2, height // 48), max(2, width // 48), 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    image += rng.normal(0, 12, size=(height, width, 3))
    for _ in range(6):                                   # a few sharp-edged shapes
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(width // 10 + 1, width // 3 + 2), rng.integers(height // 10 + 1, height // 3 + 2)
        image[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, size=3)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_imagenet_like(root: Path, n: int, num_classes: int = 10, seed: int = 0, quality: int = 90,
                        prefix: str = "Sized_LT") -> tuple[Path, Path]:
    """``n`` JPEGs of ImageNet's size distribution under root/images and a training split file
    ``<prefix>_train.txt`` under root/splits listing them (labels round robin); returns
    (splits_dir, image_root).  For input-pipeline benchmarks: decoding cost follows pixel count."""
    rng = np.random.default_rng(seed)
    splits_dir, images = root / "splits", root / "images"
    splits_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        label = i % num_classes
        rel = f"train/n{label:08d}/{i:06d}.JPEG"
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        width, height = imagenet_like_size(rng)
        Image.fromarray(natural_like_image(width, height, rng)).save(images / rel, quality=quality)
        lines.append(f"{rel} {label}\n")
    (splits_dir / f"{prefix}_train.txt").write_text("".join(lines))
    return splits_dir, images
