"""Synthetic ImageNet-LT-like trees: split files in the OLTR format and the JPEG images they
list, for smoke runs, tests and benchmarks of the split-file pipeline (no real data needed)."""
from __future__ import annotations

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
