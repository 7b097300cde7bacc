"""Real LVIS annotations from ../shared with generated pixels, for detection tests."""
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
