"""LVIS category statistics: frequency group (r/c/f), image counts, image-count frequency.

Read from the annotation file the user trains on (a full LVIS json: its ``categories`` and
the number of its ``images``), or from a categories list with counts (such as
``lvis_v1_categories_with_counts.json``) plus the number of training images.
Categories are ordered by id, which is the label order of mmdet's LVIS datasets.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lt_bench.errors import ConfigError, DataError

# Training images of the official annotation files (for categories-only files).
TRAIN_IMAGES = {"v1": 100_170, "v0.5": 57_263}


@dataclass(frozen=True)
class CategoryStats:
    ids: np.ndarray              # category ids, ascending (label i <-> ids[i])
    image_count: np.ndarray      # training images that contain the category
    frequency: np.ndarray        # 'r' / 'c' / 'f' per category
    num_images: int

    @property
    def image_frequency(self) -> np.ndarray:
        """Fraction of training images containing each category (EQL / DropLoss's f_j)."""
        return self.image_count / self.num_images

    def group_counts(self) -> dict[str, int]:
        return {g: int((self.frequency == g).sum()) for g in ("r", "c", "f")}


def load_category_stats(path: str | os.PathLike, num_images: int | None = None) -> CategoryStats:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read LVIS categories from {path}: {err}") from err
    if isinstance(data, dict):
        if "categories" not in data:
            raise DataError(f"{path}: an LVIS annotation file needs a 'categories' list")
        categories = data["categories"]
        num_images = num_images or len(data.get("images", [])) or None
    else:
        categories = data
    if not num_images:
        raise ConfigError(f"{path} lists categories only: give the number of training images "
                          f"(LVIS v1 train: {TRAIN_IMAGES['v1']:,}, v0.5: {TRAIN_IMAGES['v0.5']:,})")
    missing = [c.get("id") for c in categories if not {"id", "image_count", "frequency"} <= set(c)]
    if missing:
        raise DataError(f"{path}: categories without id/image_count/frequency (ids {missing[:5]})")
    categories = sorted(categories, key=lambda c: c["id"])
    return CategoryStats(ids=np.array([c["id"] for c in categories]),
                         image_count=np.array([c["image_count"] for c in categories], dtype=np.float64),
                         frequency=np.array([c["frequency"] for c in categories]),
                         num_images=int(num_images))
