"""LVIS annotation files checked before training: a missing key fails here, naming the file
and the image, annotation or category id, instead of deep inside mmdet or the lvis API."""
from __future__ import annotations

import json
import os
from numbers import Number
from pathlib import Path

from lt_bench.errors import DataError

# What mmdet's LVIS datasets and the lvis API read from each entry.
REQUIRED = {
    "images": ("id", "height", "width", "neg_category_ids", "not_exhaustive_category_ids"),
    "annotations": ("id", "image_id", "category_id", "bbox", "area", "segmentation"),
    "categories": ("id", "name", "frequency"),
}
SINGULAR = {"images": "image", "annotations": "annotation", "categories": "category"}
FREQUENCIES = ("r", "c", "f")
MAX_REPORTED = 10


def check_lvis_annotations(path: str | os.PathLike) -> dict:
    """The parsed annotation file; DataError listing its problems (file and ids) if any."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataError(f"LVIS annotation file not found: {path}") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a readable JSON file ({err})") from err
    problems = annotation_problems(data)
    if problems:
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{path}: {len(problems)} problem(s) in the LVIS annotations:\n  "
                        + "\n  ".join(problems[:MAX_REPORTED]) + more)
    return data


def annotation_problems(data) -> list[str]:
    """Every structural problem of a parsed LVIS annotation file, as readable lines."""
    if not isinstance(data, dict):
        return [f"the top level is a {type(data).__name__}, an LVIS file is an object"]
    problems = [f"missing the '{key}' list" for key in REQUIRED if not isinstance(data.get(key), list)]
    if problems:
        return problems
    ids: dict[str, set] = {}
    for section, keys in REQUIRED.items():
        singular = SINGULAR[section]
        seen = ids.setdefault(section, set())
        for position, entry in enumerate(data[section]):
            if not isinstance(entry, dict):
                problems.append(f"{singular} #{position} is not an object")
                continue
            name = f"{singular} id {entry['id']}" if "id" in entry else f"{singular} #{position}"
            missing = [k for k in keys if k not in entry]
            if missing:
                problems.append(f"{name}: missing {', '.join(repr(k) for k in missing)}")
            if "id" in entry:
                try:
                    if entry["id"] in seen:
                        problems.append(f"{name}: duplicate id")
                    seen.add(entry["id"])
                except TypeError:
                    problems.append(f"{name}: id is not a number")
            problems += _entry_problems(section, name, entry)
    images, categories = ids["images"], ids["categories"]
    for entry in data["annotations"]:
        if isinstance(entry, dict) and "id" in entry:
            for key, known in (("image_id", images), ("category_id", categories)):
                try:
                    if key in entry and entry[key] not in known:
                        problems.append(f"annotation id {entry['id']}: unknown {key} {entry[key]!r}")
                except TypeError:
                    problems.append(f"annotation id {entry['id']}: {key} is not a number")
    return problems


def _entry_problems(section: str, name: str, entry: dict) -> list[str]:
    found = []
    if section == "images":
        if "coco_url" not in entry and "file_name" not in entry:
            found.append(f"{name}: neither 'coco_url' (v1) nor 'file_name' (v0.5)")
    elif section == "annotations":
        box = entry.get("bbox")
        if "bbox" in entry and not (isinstance(box, list) and len(box) == 4
                                    and all(isinstance(v, Number) for v in box)):
            found.append(f"{name}: bbox must be [x, y, width, height], got {box!r}")
    elif section == "categories" and "frequency" in entry and entry["frequency"] not in FREQUENCIES:
        found.append(f"{name}: frequency {entry['frequency']!r} is not one of r, c, f")
    return found
