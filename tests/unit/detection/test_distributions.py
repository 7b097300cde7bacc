"""lt-bench det-distributions: box centres on a normalised grid, score-weighted predictions and
KL(gt || pred) checked against numbers worked out by hand on tiny files; identical distributions
give 0; categories without ground truth or detections get a null KL and a reason; a bad name is
an error naming it; the real LVIS v0.5 sample is read."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("msgspec", reason="the detection extra is not installed (make det)")
pytest.importorskip("matplotlib")

from lt_bench.detection.analysis.distributions import distributions, main  # noqa: E402
from lt_bench.errors import ConfigError, DataError  # noqa: E402

from tests.helpers.lvis import SHARED_LVIS, needs_shared  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EPS = 1e-3
IMAGES = [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 200, "height": 100},
          {"id": 3, "width": 100, "height": 50}]
CATEGORIES = [{"id": 1, "name": "apple", "frequency": "f"}, {"id": 2, "name": "bolt", "frequency": "r"},
              {"id": 3, "name": "cup", "frequency": "c"}, {"id": 4, "name": "drum", "frequency": "c"}]
ANNOTATIONS = [  # on a 2 x 2 grid: cell (row, col) of each centre
    {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},   # (20, 20) / 100x100 -> (0, 0)
    {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20, 10, 40, 20]},   # (40, 20) / 200x100 -> (0, 0)
    {"id": 3, "image_id": 3, "category_id": 2, "bbox": [60, 30, 10, 10]},   # (65, 35) / 100x50 -> (1, 1)
    {"id": 4, "image_id": 1, "category_id": 4, "bbox": [0, 0, 10, 10]},     # drum: never detected
]
DETECTIONS = [
    {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.6},    # (0, 0)
    {"image_id": 2, "category_id": 1, "bbox": [140, 60, 20, 20], "score": 0.2},   # (150, 70) / 200x100 -> (1, 1)
    {"image_id": 1, "category_id": 1, "bbox": [60, 10, 10, 10], "score": 0.01},   # (65, 15) -> (0, 1): below 0.05
    {"image_id": 3, "category_id": 2, "bbox": [60, 30, 10, 10], "score": 0.9},    # bolt: where its object is
    {"image_id": 3, "category_id": 2, "bbox": [70, 40, 4, 4], "score": 0.3},      # (72, 42) / 100x50 -> (1, 1)
    {"image_id": 2, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.5},      # cup: no ground truth
    {"image_id": 77, "category_id": 9, "bbox": [0, 0, 1, 1], "score": 0.5},       # not asked for: not looked at
]


@pytest.fixture
def files(tmp_path) -> tuple[Path, Path]:
    ann, dets = tmp_path / "val.json", tmp_path / "dets.json"
    ann.write_text(json.dumps({"images": IMAGES, "annotations": ANNOTATIONS, "categories": CATEGORIES}))
    dets.write_text(json.dumps(DETECTIONS))
    return ann, dets


def kl_by_hand(p: list[float], q: list[float], eps: float = EPS) -> float:
    """KL(p || q) after mixing each (normalised) distribution with the uniform one."""
    n = len(p)
    ps = [(1 - eps) * v / sum(p) + eps / n for v in p]
    qs = [(1 - eps) * v / sum(q) + eps / n for v in q]
    return sum(a * math.log(a / b) for a, b in zip(ps, qs))


def run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def test_kl_and_counts_by_hand(files, tmp_path, capsys):
    ann, dets = files
    status, out, err = run(capsys, "--ann", ann, "--results", dets, "--categories", "apple", "2", "3", "drum",
                           "--grid", 2, "--score-thr", 0.05, "--out-dir", tmp_path / "out")
    assert status == 0, err
    assert (tmp_path / "out" / "distributions.png").read_bytes()[:8] == PNG_MAGIC
    text = (tmp_path / "out" / "distributions.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    report = json.loads(text)
    assert report["grid"] == 2 and report["epsilon"] == EPS and report["score_thr"] == 0.05
    apple, bolt, cup, drum = report["categories"]
    # apple: both objects in the top-left cell; detections 0.6 there and 0.2 bottom-right (0.01 dropped)
    assert [apple[k] for k in ("id", "name", "frequency", "gt_objects", "gt_images", "detections")] == \
        [1, "apple", "f", 2, 2, 2]
    assert apple["detection_weight"] == pytest.approx(0.8)
    assert apple["gt_distribution"] == [[1.0, 0.0], [0.0, 0.0]]
    np.testing.assert_allclose(apple["pred_distribution"], [[0.75, 0.0], [0.0, 0.25]])
    # worked out: p = (0.99925, 0.00025, 0.00025, 0.00025), q = (0.74950, 0.00025, 0.00025, 0.25000)
    by_hand = 0.99925 * math.log(0.99925 / 0.7495) + 0.00025 * math.log(0.00025 / 0.25)
    assert apple["kl"] == pytest.approx(by_hand, rel=1e-12)
    assert apple["kl"] == pytest.approx(kl_by_hand([1, 0, 0, 0], [0.6, 0, 0, 0.2]), rel=1e-12)
    assert apple["kl_reason"] is None
    # bolt: one object and two detections, all in the bottom-right cell: the same distribution
    assert bolt["kl"] == 0.0 and bolt["detection_weight"] == pytest.approx(1.2)
    # no ground truth, no detections: null with the reason
    assert cup["kl"] is None and "no ground-truth objects in val.json" in cup["kl_reason"]
    assert cup["gt_distribution"] is None and cup["detections"] == 1
    assert drum["kl"] is None and drum["kl_reason"] == "no detections with score >= 0.05"
    assert drum["pred_distribution"] is None and drum["gt_objects"] == 1
    assert "no KL (no detections with score >= 0.05)" in out


def test_score_threshold_and_epsilon(files):
    ann, dets = files
    apple = distributions(ann, dets, ["apple"], grid=2)["categories"][0]      # every detection, 0.01 too
    assert apple["detections"] == 3
    assert apple["kl"] == pytest.approx(kl_by_hand([1, 0, 0, 0], [0.6, 0.01, 0, 0.2]), rel=1e-12)
    smoother = distributions(ann, dets, ["apple"], grid=2, score_thr=0.05, epsilon=0.1)["categories"][0]
    assert smoother["kl"] == pytest.approx(kl_by_hand([1, 0, 0, 0], [0.6, 0, 0, 0.2], eps=0.1), rel=1e-12)
    fine = distributions(ann, dets, ["apple"], grid=20, score_thr=0.05)["categories"][0]
    gt = np.array(fine["gt_distribution"])
    assert gt.shape == (20, 20) and gt[4, 4] == 1.0      # centre (0.2, 0.2) -> cell 4 of 20
    pred = np.array(fine["pred_distribution"])
    assert pred[4, 4] == pytest.approx(0.75) and pred[14, 15] == pytest.approx(0.25)   # (0.75, 0.7) -> row 14, col 15
    with pytest.raises(ConfigError, match="--epsilon must be in"):
        distributions(ann, dets, ["apple"], epsilon=0)
    with pytest.raises(ConfigError, match="--grid must be a positive integer"):
        distributions(ann, dets, ["apple"], grid=0)


def test_bad_category_and_files(files, tmp_path, capsys):
    ann, dets = files
    status, _, err = run(capsys, "--ann", ann, "--results", dets, "--categories", "apple", "appel",
                         "--out-dir", tmp_path / "out")
    assert status == 2
    assert err.startswith("ConfigError: unknown category 'appel' in ") and "val.json" in err and "apple" in err
    assert not (tmp_path / "out" / "distributions.json").exists()
    with pytest.raises(ConfigError, match="unknown category '42'"):
        distributions(ann, dets, ["42"])
    stray = tmp_path / "stray.json"
    stray.write_text(json.dumps([{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]))
    with pytest.raises(DataError, match=r"stray.json: a detection of category 1 is on image 5, which .*val.json"):
        distributions(ann, stray, ["apple"])
    with pytest.raises(DataError, match="the results file .*missing.json does not exist"):
        distributions(ann, tmp_path / "missing.json", ["apple"])
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"images": [{"id": 1, "width": 0, "height": 5}], "annotations": [],
                                  "categories": CATEGORIES}))
    with pytest.raises(DataError, match="broken.json: image 1 needs .* positive width and height"):
        distributions(broken, dets, ["apple"])


def test_outputs_are_not_overwritten(files, tmp_path, capsys):
    ann, dets = files
    out = tmp_path / "out"
    out.mkdir()
    (out / "distributions.png").write_bytes(b"old")
    argv = ("--ann", ann, "--results", dets, "--categories", "1", "--out-dir", out)
    status, _, err = run(capsys, *argv)
    assert status == 2 and err.strip() == f"ConfigError: {out / 'distributions.png'} exists; --overwrite replaces it"
    assert (out / "distributions.png").read_bytes() == b"old" and not (out / "distributions.json").exists()
    status, _, err = run(capsys, *argv, "--overwrite")
    assert status == 0, err
    assert (out / "distributions.png").read_bytes()[:8] == PNG_MAGIC


@needs_shared
def test_real_lvis_sample(tmp_path):
    """LVIS v0.5 val, 100 images: banana's centres (87 objects) counted independently; the
    ground-truth boxes as detections give KL 0."""
    ann = SHARED_LVIS / "lvis_v0.5_val_100.json"
    data = json.loads(ann.read_text())
    sizes = {img["id"]: (img["width"], img["height"]) for img in data["images"]}
    banana = next(c for c in data["categories"] if c["name"] == "banana")
    expected = np.zeros((20, 20))
    for a in data["annotations"]:
        if a["category_id"] == banana["id"]:
            x, y, w, h = a["bbox"]
            width, height = sizes[a["image_id"]]
            expected[min(int((y + h / 2) / height * 20), 19), min(int((x + w / 2) / width * 20), 19)] += 1
    dets = tmp_path / "dets.json"
    dets.write_text(json.dumps([{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                                 "score": 1.0} for a in data["annotations"]]))
    report = distributions(ann, dets, ["banana", "pole"])
    got = report["categories"][0]
    assert got["id"] == banana["id"] and got["frequency"] == "f" and got["gt_objects"] == expected.sum() == 87
    np.testing.assert_allclose(got["gt_distribution"], expected / expected.sum(), rtol=0, atol=1e-15)
    assert got["kl"] == pytest.approx(0.0, abs=1e-12)
    assert report["categories"][1]["name"] == "pole" and report["categories"][1]["gt_objects"] > 0


def write_example(folder: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """A synthetic annotation file (300 images, a frequent, a common and a rare category in
    different places) and a synthetic detector's results (the docs picture,
    docs/det_distributions.png): the frequent category found where it is, the common one less
    precisely, the rare one missed, with a few weak detections where the frequent objects are."""
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": int(rng.choice([640, 480, 500])), "height": int(rng.choice([480, 640, 375])),
               "neg_category_ids": [], "not_exhaustive_category_ids": []} for i in range(300)]
    cats = [{"id": 1, "name": "synthetic_frequent", "frequency": "f"},
            {"id": 2, "name": "synthetic_common", "frequency": "c"},
            {"id": 3, "name": "synthetic_rare", "frequency": "r"}]
    # per category: centre mean and spread (x, y), objects; then found objects' jitter and score range
    objects = {1: ((0.5, 0.25), (0.2, 0.08), 400), 2: ((0.35, 0.8), (0.1, 0.06), 90), 3: ((0.7, 0.55), (0.05, 0.05), 8)}
    found = {1: (1.0, 0.01, (0.5, 0.95)), 2: (0.6, 0.04, (0.2, 0.7)), 3: (0.0, 0.0, (0.0, 0.0))}
    false = {1: (150, (0.5, 0.3), 0.2), 2: (120, (0.5, 0.3), 0.2), 3: (60, (0.25, 0.08), 0.1)}   # n, y, top score

    def box(img, cx, cy):
        w, h = 0.08 * img["width"], 0.08 * img["height"]
        return [cx * img["width"] - w / 2, cy * img["height"] - h / 2, w, h]
    anns, dets = [], []
    for cat, ((mx, my), (sx, sy), n) in objects.items():
        rate, jitter, (lo, hi) = found[cat]
        for _ in range(n):
            img = images[rng.integers(len(images))]
            cx, cy = np.clip(rng.normal([mx, my], [sx, sy]), 0.02, 0.98)
            b = box(img, cx, cy)
            anns.append({"id": len(anns) + 1, "image_id": img["id"], "category_id": cat, "bbox": b,
                         "area": b[2] * b[3], "segmentation": [[b[0], b[1], b[0] + b[2], b[1], b[0], b[1] + b[3]]]})
            if rng.random() < rate:
                dx, dy = np.clip([cx, cy] + rng.normal(0, jitter, 2), 0.02, 0.98)
                dets.append({"image_id": img["id"], "category_id": cat, "bbox": box(img, dx, dy),
                             "score": float(rng.uniform(lo, hi))})
        n, (my, sy), top = false[cat]
        for _ in range(n):
            img = images[rng.integers(len(images))]
            dets.append({"image_id": img["id"], "category_id": cat, "score": float(rng.uniform(0.01, top)),
                         "bbox": box(img, rng.uniform(0.05, 0.95), np.clip(rng.normal(my, sy), 0.02, 0.98))})
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "synthetic_val.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    (folder / "synthetic_dets.json").write_text(json.dumps(dets))
    return folder / "synthetic_val.json", folder / "synthetic_dets.json"


def test_docs_example(tmp_path):
    """The docs picture's inputs: the KL grows from the frequent to the rare category."""
    ann, dets = write_example(tmp_path)
    kl = [c["kl"] for c in distributions(ann, dets, ["1", "2", "3"])["categories"]]
    assert 0 < kl[0] < kl[1] < kl[2]
