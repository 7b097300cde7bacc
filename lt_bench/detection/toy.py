"""A generated long-tailed detection set in LVIS v1's on-disk format: coloured shapes with masks.

The learning check of the detection track: a small Mask R-CNN trained on it for a few hundred
iterations must reach a clearly non-trivial AP, and a broken detector (dead box head, wrong
labels, a loss that does not train the classifier) must not.  Nothing is downloaded.

Categories are shape x colour (``circle``, ``square``, ``triangle``, ``diamond`` x ``red``,
``green``, ``blue``), so the classifier has to learn both cues.  Their image counts follow
``DEFAULT_IMAGE_COUNTS``: a few frequent categories, several common ones and a handful seen
in only a few images; LVIS's frequency groups (rare: 1-10 training images, common: 11-100,
frequent: > 100) are assigned from the counts by LVIS's own rule.  Every category absent from
an image is listed in its ``neg_category_ids`` (the set is annotated exhaustively), so LVIS
evaluation counts every false positive, as COCO's would.

Layout written under ``root``: ``train2017/<id>.jpg`` (one JPEG per image) and
``lvis_toy_train.json``; ``coco_url`` points into ``train2017/`` so that mmdet's
``LVISV1Dataset`` with ``data_prefix=root/`` finds the files, as it does for real LVIS v1.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230)}
# images per category, most to least frequent: 3 frequent (> 100), 4 common, 5 rare (<= 10)
DEFAULT_IMAGE_COUNTS = (150, 120, 105, 60, 40, 25, 15, 10, 6, 4, 3, 2)
COCO_URL = "http://images.cocodataset.org/"
# EQL / DropLoss threshold for the toy set: image frequency < 0.06 makes the 5 rare categories
# (<= 10 of 200 images) the tail, as lambda = 0.0011 does for LVIS v1's rare ones
TOY_LAMBDA = 0.06


def lvis_frequency(image_count: int) -> str:
    """LVIS's frequency group of a category from its training image count."""
    return "r" if image_count <= 10 else "c" if image_count <= 100 else "f"


@dataclass(frozen=True)
class ToySet:
    ann_file: Path          # LVIS v1-style json
    image_root: Path        # data.root: holds train2017/
    num_images: int
    image_counts: tuple[int, ...]   # per category, in the json's category order


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "circle":
        corners, offset = 24, 0.0
    elif shape == "square":
        corners, offset = 4, math.pi / 4 + angle
    elif shape == "triangle":
        corners, offset = 3, -math.pi / 2 + angle
    else:  # diamond: a square standing on a corner, narrower than high
        return [(cx, cy - r), (cx + 0.6 * r, cy), (cx, cy + r), (cx - 0.6 * r, cy)]
    return [(cx + r * math.cos(offset + 2 * math.pi * k / corners),
             cy + r * math.sin(offset + 2 * math.pi * k / corners)) for k in range(corners)]


def _area(points: list[tuple[float, float]]) -> float:
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _assign(image_counts: tuple[int, ...], num_images: int, rng: np.random.Generator) -> list[list[int]]:
    """Categories of each image: category k appears in exactly image_counts[k] images (once
    each), and no image is left empty (a check, not a repair: the counts must cover them)."""
    per_image: list[list[int]] = [[] for _ in range(num_images)]
    # the rarest categories first, each into the images holding the fewest objects so far
    for k in sorted(range(len(image_counts)), key=lambda k: image_counts[k]):
        load = np.array([len(c) for c in per_image]) + rng.random(num_images)
        for i in np.argsort(load)[: image_counts[k]]:
            per_image[i].append(k)
    if any(not c for c in per_image):
        raise ValueError(f"{sum(image_counts)} object-images cannot fill {num_images} images")
    return per_image


def make_toy_lvis(root: str | Path, num_images: int = 200, image_size: int = 128, seed: int = 0,
                  image_counts: tuple[int, ...] = DEFAULT_IMAGE_COUNTS) -> ToySet:
    """Write the toy set under ``root`` (deterministic for a seed) and describe it."""
    if len(image_counts) > len(SHAPES) * len(COLOURS):
        raise ValueError(f"at most {len(SHAPES) * len(COLOURS)} categories, got {len(image_counts)}")
    if max(image_counts) > num_images:
        raise ValueError(f"a category in {max(image_counts)} images needs at least that many images")
    root = Path(root)
    folder = root / "train2017"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [f"{colour}_{shape}" for shape in SHAPES for colour in COLOURS]
    order = rng.permutation(len(names))[: len(image_counts)]   # which shape-colour is frequent
    categories = [{"id": k + 1, "name": names[j], "synset": f"{names[j]}.n.01", "synonyms": [names[j]],
                   "def": f"a {names[j].replace('_', ' ')}", "frequency": lvis_frequency(n),
                   "image_count": int(n), "instance_count": int(n)}
                  for k, (j, n) in enumerate(zip(order, image_counts))]
    images, annotations = [], []
    for index, cats in enumerate(_assign(tuple(image_counts), num_images, rng)):
        image_id = index + 1
        pixels = rng.normal(128, 20, (image_size, image_size, 3)).clip(0, 255).astype(np.uint8)
        canvas = Image.fromarray(pixels)
        draw = ImageDraw.Draw(canvas)
        placed: list[tuple[float, float, float]] = []
        for k in rng.permutation(cats):
            shape, colour = names[order[k]].split("_")[1], names[order[k]].split("_")[0]
            for _ in range(100):   # a free spot: centres far enough apart that shapes do not overlap
                r = rng.uniform(0.1, 0.2) * image_size
                cx, cy = rng.uniform(r + 1, image_size - r - 1, size=2)
                if all(math.hypot(cx - x, cy - y) > r + s + 2 for x, y, s in placed):
                    break
            else:
                raise ValueError(f"no room for {len(cats)} shapes in a {image_size}px image")
            placed.append((cx, cy, r))
            points = _polygon(shape, cx, cy, r, rng.uniform(-0.3, 0.3))
            tint = np.clip(np.array(COLOURS[colour]) + rng.integers(-25, 26, 3), 0, 255)
            draw.polygon(points, fill=tuple(int(v) for v in tint))
            xs, ys = [p[0] for p in points], [p[1] for p in points]
            x0, y0 = max(min(xs), 0.0), max(min(ys), 0.0)
            x1, y1 = min(max(xs), float(image_size)), min(max(ys), float(image_size))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(k + 1),
                                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                                "area": round(_area(points), 2),
                                "segmentation": [[round(v, 2) for p in points for v in p]]})
        file_name = f"{image_id:06d}.jpg"
        canvas.save(folder / file_name, quality=95)
        present = {int(k) + 1 for k in cats}
        images.append({"id": image_id, "width": image_size, "height": image_size,
                       "coco_url": f"{COCO_URL}train2017/{file_name}", "file_name": f"train2017/{file_name}",
                       "neg_category_ids": [c["id"] for c in categories if c["id"] not in present],
                       "not_exhaustive_category_ids": []})
    ann_file = root / "lvis_toy_train.json"
    ann_file.write_text(json.dumps({"info": {"description": "lt_bench toy long-tailed shapes", "seed": seed},
                                    "licenses": [], "images": images, "annotations": annotations,
                                    "categories": categories}))
    return ToySet(ann_file=ann_file, image_root=root, num_images=num_images, image_counts=tuple(image_counts))


def make_toy_coco(root: str | Path, **kwargs) -> ToySet:
    """The toy set in COCO's format: the same images and boxes (``make_toy_lvis``), written as
    ``annotations/instances_toy.json`` with what COCO has and LVIS lacks (``iscrowd``, a
    ``file_name`` under ``train2017/``, and ``val2017`` a link to it: the set is evaluated on its
    training images) and without LVIS's own fields (frequency groups, image
    counts, negative and not-exhaustive category lists)."""
    toy = make_toy_lvis(root, **kwargs)
    data = json.loads(toy.ann_file.read_text())
    coco = {"info": data["info"], "licenses": [],
            "images": [{"id": i["id"], "width": i["width"], "height": i["height"],
                        "file_name": i["file_name"].split("/")[-1]} for i in data["images"]],
            "annotations": [{**a, "iscrowd": 0} for a in data["annotations"]],
            "categories": [{"id": c["id"], "name": c["name"], "supercategory": "shape"} for c in data["categories"]]}
    val = Path(root) / "val2017"      # evaluated on its training images: COCO reads val images from val2017/
    if not val.exists():
        val.symlink_to("train2017", target_is_directory=True)
    ann_file = Path(root) / "annotations" / "instances_toy.json"
    ann_file.parent.mkdir(parents=True, exist_ok=True)
    ann_file.write_text(json.dumps(coco))
    return ToySet(ann_file=ann_file, image_root=toy.image_root, num_images=toy.num_images,
                  image_counts=toy.image_counts)


def run_overrides(toy: ToySet, out_dir: str | Path, seed: int = 0, detector: str = "toy_mask_rcnn") -> list[str]:
    """run.py overrides that train a small detector (the Mask R-CNN ``toy_mask_rcnn``, or the
    RetinaNet ``toy_retinanet``) on ``toy`` and evaluate it on the same images (training-set
    AP), on CPU; a toy set from ``make_toy_coco`` runs as task=coco (``toy_retinanet_coco``)."""
    task = "coco" if toy.ann_file.name.startswith("instances_") else "lvis"
    return [f"task={task}", f"detector={detector}", f"data.root={toy.image_root}", f"data.train_ann={toy.ann_file}",
            f"data.val_ann={toy.ann_file}", "detection.backbone_pretrained=null", "detection.batch_size=4",
            "detection.num_workers=0", *([f"detection.lambda={TOY_LAMBDA}"] if task == "lvis" else []),
            "device=cpu", "progress=false", f"seed={seed}", f"out_dir={out_dir}"]
