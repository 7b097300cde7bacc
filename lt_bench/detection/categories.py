"""LVIS category statistics: names, frequency group (r/c/f), image counts, image-count frequency.

The label order is the annotation file's category order: mmdet's LVIS datasets number the
categories in the order the lvis API lists them, which is the json's (``LVIS.get_cat_ids``),
whatever their ids.  EQL and DropLoss compare each category's image frequency with lambda;
the frequency is the category's image count over the number of training images that hold at
least one annotation (the authors' ``image_count / len({a['image_id'] for a in annotations})``:
99,388 for LVIS v1 train, 56,740 for v0.5 train), not over every listed image (100,170 / 57,263).

Sources: a full LVIS annotation file (the one trained on), a categories list with counts
(such as ``lvis_v1_categories_with_counts.json``) plus that number of images, or the small
summary this module writes (``save_category_stats``) so that the ~1 GB training file is parsed
once per run, not once per rank.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lt_bench.errors import ConfigError, DataError

# Training images that hold annotations, in the official files (for categories-only files).
ANNOTATED_TRAIN_IMAGES = {"v1": 99_388, "v0.5": 56_740}
SUMMARY_KIND = "lt_bench.lvis_category_stats"


@dataclass(frozen=True)
class CategoryStats:
    ids: np.ndarray              # category ids in label order (label i <-> ids[i])
    names: tuple[str, ...]
    image_count: np.ndarray      # training images that contain the category
    frequency: np.ndarray        # 'r' / 'c' / 'f' per category
    num_images: int              # training images with at least one annotation
    source: str = ""

    @property
    def image_frequency(self) -> np.ndarray:
        """Fraction of annotated training images containing each category (EQL / DropLoss's f_j)."""
        return self.image_count / self.num_images

    def tail(self, lambda_: float) -> np.ndarray:
        return self.image_frequency < lambda_

    def group_counts(self) -> dict[str, int]:
        return {g: int((self.frequency == g).sum()) for g in ("r", "c", "f")}

    def summary(self) -> dict:
        return {"kind": SUMMARY_KIND, "source": self.source, "num_images": self.num_images,
                "categories": [{"id": int(i), "name": n, "image_count": int(c), "frequency": str(f)}
                               for i, n, c, f in zip(self.ids, self.names, self.image_count, self.frequency)]}


def load_category_stats(path: str | os.PathLike, num_images: int | None = None) -> CategoryStats:
    """Statistics of the file at ``path`` (see the module doc); ``num_images`` is needed only
    for a categories-only list and overrides the count otherwise."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read LVIS categories from {path}: {err}") from err
    return category_stats(data, num_images, str(path))


def category_stats(data, num_images: int | None = None, source: str = "") -> CategoryStats:
    """Statistics of parsed json ``data``: an LVIS annotation file, a categories list or a summary."""
    where = source or "LVIS categories"
    if isinstance(data, dict):
        if not isinstance(data.get("categories"), list):
            raise DataError(f"{where}: an LVIS annotation file needs a 'categories' list")
        categories = data["categories"]
        if num_images is None:
            if data.get("kind") == SUMMARY_KIND:
                num_images = data.get("num_images")
            elif isinstance(data.get("annotations"), list):
                num_images = len({a.get("image_id") for a in data["annotations"] if isinstance(a, dict)})
    elif isinstance(data, list):
        categories = data
    else:
        raise DataError(f"{where}: expected an LVIS annotation file or a list of categories")
    if not num_images:
        raise ConfigError(f"{where} lists categories only: give the number of training images with "
                          f"annotations (LVIS v1 train: {ANNOTATED_TRAIN_IMAGES['v1']:,}, "
                          f"v0.5: {ANNOTATED_TRAIN_IMAGES['v0.5']:,})")
    if (isinstance(data, dict) and isinstance(data.get("annotations"), list) and categories
            and all(isinstance(c, dict) and "id" in c and "image_count" not in c for c in categories)):
        categories = _counted(categories, data["annotations"])       # a COCO-format file
    bad = [c.get("id") if isinstance(c, dict) else c for c in categories
           if not (isinstance(c, dict) and {"id", "image_count", "frequency"} <= set(c))]
    if bad:
        raise DataError(f"{where}: categories without id/image_count/frequency (ids {bad[:5]})")
    return CategoryStats(ids=np.array([c["id"] for c in categories]),
                         names=tuple(str(c.get("name", c["id"])) for c in categories),
                         image_count=np.array([c["image_count"] for c in categories], dtype=np.float64),
                         frequency=np.array([c["frequency"] for c in categories]),
                         num_images=int(num_images), source=source)


def _counted(categories: list[dict], annotations: list) -> list[dict]:
    """Categories of a file without LVIS's counts (COCO's format): each one's image count from
    the annotations, and LVIS's frequency rule on that count (r: 1-10 images, c: 11-100, f: more)."""
    images: dict = {}
    for a in annotations:
        if isinstance(a, dict):
            images.setdefault(a.get("category_id"), set()).add(a.get("image_id"))
    out = []
    for c in categories:
        n = len(images.get(c["id"], ()))
        out.append({**c, "image_count": n, "frequency": "r" if n <= 10 else "c" if n <= 100 else "f"})
    return out


def save_category_stats(stats: CategoryStats, path: str | os.PathLike) -> Path:
    """Write the small summary (atomically) that ``load_category_stats`` reads back."""
    from lt_bench.fileio import atomic_write_json
    return atomic_write_json(path, stats.summary())
