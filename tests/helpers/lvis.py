"""Real LVIS annotations from ../shared with generated pixels, run.py's task=lvis overrides and
mmdet's stock LVIS configs, for detection tests."""
import json
from pathlib import Path

import numpy as np
import pytest

SHARED_LVIS = Path(__file__).resolve().parents[3] / "shared" / "data" / "lvis"
needs_shared = pytest.mark.skipif(not SHARED_LVIS.is_dir(), reason="../shared/data/lvis not present")


def write_images(ann_file: Path, folder: Path) -> None:
    """Random images of the annotated sizes, named as mmdet's LVIS v0.5 loader expects."""
    from PIL import Image
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for img in json.loads(ann_file.read_text())["images"]:
        pixels = rng.integers(0, 255, (img["height"], img["width"], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / img["file_name"][-16:], quality=75)


def lvis_overrides(tmp_path, *extra):
    """task=lvis with the COCO images and LVIS annotations under tmp_path."""
    return ("task=lvis", f"data.root={tmp_path / 'coco'}", f"data.lvis_dir={tmp_path / 'lvis'}", *extra)


# mmdet's own LVIS v1 Mask R-CNN configs by backbone depth: the stock reference of the detection tests
STOCK = {50: "mmdet::lvis/mask-rcnn_r50_fpn_sample1e-3_ms-1x_lvis-v1.py",
         101: "mmdet::lvis/mask-rcnn_r101_fpn_sample1e-3_ms-1x_lvis-v1.py"}
