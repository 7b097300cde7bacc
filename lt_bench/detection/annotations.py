"""LVIS (and COCO) annotation files checked before training: a missing key fails here, naming
the file and the image, annotation or category id, instead of deep inside mmdet or the lvis API."""
from __future__ import annotations

import json
import math
import os
import reprlib
from pathlib import Path

from lt_bench.errors import DataError

# What mmdet's LVIS datasets and the lvis API read from each entry.
REQUIRED = {
    "images": ("id", "height", "width", "neg_category_ids", "not_exhaustive_category_ids"),
    "annotations": ("id", "image_id", "category_id", "bbox", "area", "segmentation"),
    "categories": ("id", "name", "frequency"),
}
# What mmdet's CocoDataset and pycocotools' COCOeval read (boxes; masks only where given).
REQUIRED_COCO = {
    "images": ("id", "height", "width", "file_name"),
    "annotations": ("id", "image_id", "category_id", "bbox", "area", "iscrowd"),
    "categories": ("id", "name"),
}
FORMATS = {"lvis": ("LVIS", REQUIRED), "coco": ("COCO", REQUIRED_COCO)}
SINGULAR = {"images": "image", "annotations": "annotation", "categories": "category"}
FREQUENCIES = ("r", "c", "f")
MAX_REPORTED = 10


def check_lvis_annotations(path: str | os.PathLike, task: str = "lvis") -> dict:
    """The parsed annotation file; DataError listing its problems (file and ids) if any.
    A file that is missing, a folder, unreadable, not UTF-8, not JSON or nested too deeply
    for the JSON parser is a DataError naming the path too.  ``task``: ``lvis`` or ``coco``
    (COCO's instances format: ``file_name`` and ``iscrowd``, no LVIS-only fields)."""
    path = Path(path)
    LVIS, required = FORMATS[task]
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError as err:
        raise DataError(f"{LVIS} annotation file not found: {path}") from err
    except IsADirectoryError as err:
        raise DataError(f"{path}: is a folder, expected an {LVIS} annotation JSON file") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.object[err.start:err.start + 1]!r} at offset "
                        f"{err.start}); an {LVIS} annotation file is UTF-8 JSON") from err
    except RecursionError as err:
        raise DataError(f"{path}: JSON nested too deeply to be an {LVIS} annotation file") from err
    except (OSError, ValueError) as err:   # ValueError: JSONDecodeError, or an integer of over 4300 digits
        raise DataError(f"{path}: not a readable JSON file ({err})") from err
    problems = annotation_problems(data, required)
    if problems:
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(f"{path}: {len(problems)} problem(s) in the {LVIS} annotations:\n  "
                        + "\n  ".join(problems[:MAX_REPORTED]) + more)
    return data


def _shown(value) -> str:
    """A short repr: a value from a hostile file may be huge or deeply nested."""
    return _REPR.repr(value)


class _ShortRepr(reprlib.Repr):
    def repr_int(self, value, level):
        if value.bit_length() > 128:   # repr() refuses integers of over 4300 digits
            return f"<integer of {value.bit_length()} bits>"
        return super().repr_int(value, level)


_REPR = _ShortRepr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 6, 4, 40, 40


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value) -> bool:
    """A finite JSON number (an int of any size, or a finite float); never a bool."""
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def annotation_problems(data, required: dict = REQUIRED) -> list[str]:
    """Every structural problem of a parsed LVIS annotation file, as readable lines: missing
    keys, values of the wrong type (ids are integers, boxes and areas finite numbers, image
    sizes positive integers, id lists lists of integers, segmentation polygons or RLE), and
    duplicate or unknown ids. Never raises on any parsed JSON value."""
    if not isinstance(data, dict):
        return [f"the top level is a {type(data).__name__}, an annotation file is an object"]
    problems = [f"missing the '{key}' list" if key not in data else
                f"'{key}' is {_json_type(data[key])}, expected a list of objects"
                for key in required if not isinstance(data.get(key), list)]
    if problems:
        return problems
    ids: dict[str, set] = {}
    for section, keys in required.items():
        singular = SINGULAR[section]
        seen = ids.setdefault(section, set())
        for position, entry in enumerate(data[section]):
            if not isinstance(entry, dict):
                problems.append(f"{singular} #{position} is not an object")
                continue
            name = _name(singular, position, entry)
            missing = [k for k in keys if k not in entry]
            if missing:
                problems.append(f"{name}: missing {', '.join(repr(k) for k in missing)}")
            if "id" in entry:
                if not _is_int(entry["id"]):
                    problems.append(f"{name}: id must be an integer, got {_shown(entry['id'])}")
                elif entry["id"] in seen:
                    problems.append(f"{name}: duplicate id")
                else:
                    seen.add(entry["id"])
            problems += _entry_problems(section, name, entry)
    images, categories = ids["images"], ids["categories"]
    for position, entry in enumerate(data["annotations"]):
        if isinstance(entry, dict):
            for key, known in (("image_id", images), ("category_id", categories)):
                if key in entry and _is_int(entry[key]) and entry[key] not in known:
                    problems.append(f"{_name('annotation', position, entry)}: unknown {key} {_shown(entry[key])}")
    return problems


def _json_type(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), f"a {type(value).__name__}")


def _name(singular: str, position: int, entry: dict) -> str:
    """'annotation id 7' when the id is an integer, else 'annotation #3' (its position)."""
    return f"{singular} id {_shown(entry['id'])}" if _is_int(entry.get("id")) else f"{singular} #{position}"


def _is_id_list(value) -> bool:
    return isinstance(value, list) and all(_is_int(v) for v in value)


def _segmentation_problem(segmentation) -> str | None:
    """Polygons (a list of lists of finite numbers) or RLE ({'counts': str or list of
    integers, 'size': [height, width]}), as pycocotools reads them."""
    if isinstance(segmentation, list):
        if all(isinstance(p, list) and all(_is_finite(v) for v in p) for p in segmentation):
            return None
        return f"segmentation polygons must be lists of finite numbers, got {_shown(segmentation)}"
    if isinstance(segmentation, dict):
        counts, size = segmentation.get("counts"), segmentation.get("size")
        if ((isinstance(counts, str) or _is_id_list(counts)) and isinstance(size, list) and len(size) == 2
                and all(_is_int(v) and v >= 0 for v in size)):
            return None
        return ("segmentation RLE must have 'counts' (a string or a list of integers) and 'size' "
                f"[height, width], got {_shown(segmentation)}")
    return f"segmentation must be a list of polygons or an RLE object, got {_shown(segmentation)}"


def _entry_problems(section: str, name: str, entry: dict) -> list[str]:
    found = []
    if section == "images":
        if "coco_url" not in entry and "file_name" not in entry:
            found.append(f"{name}: neither 'coco_url' (v1) nor 'file_name' (v0.5)")
        for key in ("coco_url", "file_name"):
            if key in entry and not isinstance(entry[key], str):
                found.append(f"{name}: {key} must be a string, got {_shown(entry[key])}")
        for key in ("height", "width"):
            if key in entry and not (_is_int(entry[key]) and entry[key] > 0):
                found.append(f"{name}: {key} must be a positive integer, got {_shown(entry[key])}")
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            if key in entry and not _is_id_list(entry[key]):
                found.append(f"{name}: {key} must be a list of integer category ids, got {_shown(entry[key])}")
    elif section == "annotations":
        for key in ("image_id", "category_id"):
            if key in entry and not _is_int(entry[key]):
                found.append(f"{name}: {key} must be an integer, got {_shown(entry[key])}")
        box = entry.get("bbox")
        if "bbox" in entry and not (isinstance(box, list) and len(box) == 4 and all(_is_finite(v) for v in box)
                                    and box[2] >= 0 and box[3] >= 0):
            found.append(f"{name}: bbox must be 4 finite numbers [x, y, width, height] with width, height >= 0, "
                         f"got {_shown(box)}")
        if "area" in entry and not (_is_finite(entry["area"]) and entry["area"] >= 0):
            found.append(f"{name}: area must be a finite number >= 0, got {_shown(entry['area'])}")
        if "iscrowd" in entry and entry["iscrowd"] not in (0, 1):
            found.append(f"{name}: iscrowd must be 0 or 1, got {_shown(entry['iscrowd'])}")
        if "segmentation" in entry:
            why = _segmentation_problem(entry["segmentation"])
            if why is not None:
                found.append(f"{name}: {why}")
    elif section == "categories":
        if "name" in entry and not isinstance(entry["name"], str):
            found.append(f"{name}: name must be a string, got {_shown(entry['name'])}")
        if "frequency" in entry and entry["frequency"] not in FREQUENCIES:
            found.append(f"{name}: frequency {_shown(entry['frequency'])} is not one of r, c, f")
    return found
