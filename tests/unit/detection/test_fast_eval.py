"""FastLVISEval against lvis-api 0.5.3: the precision array (within 1e-9, -1 at the same places),
recall and every summary metric, on the real LVIS v0.5 sample, on lvis_synth.py's LVIS-v1-shaped
sets and on hand-made corner cases; sharded evaluation against unsharded; the mmdet metric
against mmdet's LVISMetric."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lvis", reason="the detection extra is not installed (make det)")
from pycocotools import mask as mask_utils  # noqa: E402

from lt_bench.detection.evaluation import lvis_evaluate  # noqa: E402
from lt_bench.detection.fast_eval import FastLVISEval, fast_lvis_evaluate  # noqa: E402
from lt_bench.detection.lvis_compat import patch_lvis  # noqa: E402
from lt_bench.errors import DataError  # noqa: E402

from tests.conftest import ROOT  # noqa: E402

SHARED = ROOT.parent / "shared"
LVIS_VAL_100 = SHARED / "data" / "lvis" / "lvis_v0.5_val_100.json"
SYNTH = SHARED / "tools" / "lvis_synth.py"
needs_sample = pytest.mark.skipif(not LVIS_VAL_100.is_file(), reason="../shared/data/lvis not present")
needs_synth = pytest.mark.skipif(not SYNTH.is_file(), reason="../shared/tools/lvis_synth.py not present")


def lvis_reference(gt_path: Path, detections: list[dict], iou_type: str, max_dets: int = 300):
    """lvis-api's LVISEval after run() (on a copy: lvis rewrites the result dicts)."""
    patch_lvis()
    from lvis import LVIS, LVISEval, LVISResults
    with contextlib.redirect_stdout(io.StringIO()):
        gt = LVIS(str(gt_path))
        evaluator = LVISEval(gt, LVISResults(gt, copy.deepcopy(detections), max_dets=max_dets), iou_type)
        evaluator.params.max_dets = max_dets
        evaluator.run()
    return evaluator


def assert_same_as_lvis(gt_path: Path, detections: list[dict], iou_type: str, max_dets: int = 300,
                        shards: int = 0) -> FastLVISEval:
    reference = lvis_reference(gt_path, detections, iou_type, max_dets)
    ours = FastLVISEval(gt_path, iou_type, max_dets)
    summary = ours.evaluate(copy.deepcopy(detections))
    expected = reference.eval["precision"]
    assert ours.precision.shape == expected.shape
    np.testing.assert_array_equal(ours.precision == -1, expected == -1)
    np.testing.assert_allclose(ours.precision, expected, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(ours.recall == -1, reference.eval["recall"] == -1)
    np.testing.assert_allclose(ours.recall, reference.eval["recall"], rtol=0, atol=1e-9)
    lvis_summary = {k: float(v) for k, v in reference.get_results().items()}
    assert summary == lvis_summary
    assert (expected > -1).any() and 0 < summary["AP"] < 1      # a non-trivial case
    if shards:
        assert_sharded_equal(ours, detections, shards, summary)
    return ours


def assert_sharded_equal(ours: FastLVISEval, detections: list[dict], shards: int, summary: dict) -> None:
    """Images split into interleaved shards, each evaluated on its own (and on a shuffled
    list that also holds other images' detections), merged: the same result bit for bit."""
    precision = ours.precision.copy()
    rng = np.random.default_rng(shards)
    image_ids = rng.permutation(ours.img_ids)
    partials = []
    for s in range(shards):
        mine = set(image_ids[s::shards].tolist())
        own = [d for d in detections if d["image_id"] in mine]
        other = [d for d in detections if d["image_id"] not in mine][:50]
        partials.append(ours.evaluate_images(sorted(mine), copy.deepcopy(own + other)))
    assert ours.merge(partials) == summary
    np.testing.assert_array_equal(ours.precision, precision)
    # forked processes (image shards matched, then merged): bit for bit too
    recall = ours.recall.copy()
    assert ours.evaluate(copy.deepcopy(detections), workers=shards) == summary
    np.testing.assert_array_equal(ours.precision, precision)
    np.testing.assert_array_equal(ours.recall, recall)


# ---- the real LVIS v0.5 sample ---------------------------------------------------------------
def rle_of_polygons(polygons: list, height: int, width: int) -> dict:
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    rle["counts"] = rle["counts"].decode()
    return rle


def perturbed(gt: dict, iou_type: str, seed: int) -> list[dict]:
    """Jittered ground truth (20% missing, some duplicates), random scores with ties, false
    positives in negative categories and in categories neither present nor negative, and one
    image with more than 300 detections."""
    rng = np.random.default_rng(seed)
    images = {img["id"]: img for img in gt["images"]}
    cat_ids = [c["id"] for c in gt["categories"]]
    out = []

    def add(image_id, category_id, box, polygons=None):
        img = images[image_id]
        score = float(rng.random()) if rng.random() < 0.7 else float(rng.integers(1, 10)) / 10   # ties
        det = {"image_id": image_id, "category_id": int(category_id), "score": score}
        if iou_type == "bbox":
            det["bbox"] = [float(v) for v in box]
        else:
            x, y, w, h = box
            polygons = polygons or [[x, y, x + w, y, x + w, y + h, x, y + h]]
            det["segmentation"] = rle_of_polygons(polygons, img["height"], img["width"])
        out.append(det)

    for ann in gt["annotations"]:
        for copy_ in range(1 + (rng.random() < 0.3)):
            if rng.random() < 0.2:
                continue
            x, y, w, h = ann["bbox"]
            j = rng.normal(0, 0.1 * (1 + 2 * copy_), 4)
            dx, dy, sx, sy = j[0] * w, j[1] * h, 1 + j[2], 1 + j[3]
            polygons = [[(v - x) * sx + x + dx if i % 2 == 0 else (v - y) * sy + y + dy for i, v in enumerate(p)]
                        for p in ann["segmentation"]]
            add(ann["image_id"], ann["category_id"], [x + dx, y + dy, w * sx, h * sy], polygons)
    for img in gt["images"]:
        extra = list(img["neg_category_ids"][:3]) + [int(c) for c in rng.choice(cat_ids, 3)]
        for category_id in extra:
            w, h = rng.uniform(5, img["width"] / 2), rng.uniform(5, img["height"] / 2)
            add(img["id"], category_id, [rng.uniform(0, img["width"] - w), rng.uniform(0, img["height"] - h), w, h])
    crowded = gt["images"][0]
    present = sorted({a["category_id"] for a in gt["annotations"] if a["image_id"] == crowded["id"]})
    for _ in range(320):
        w, h = rng.uniform(5, 200), rng.uniform(5, 200)
        add(crowded["id"], rng.choice(present + crowded["neg_category_ids"][:2]), [rng.uniform(0, 400), rng.uniform(0, 250), w, h])
    return [out[i] for i in rng.permutation(len(out))]


@needs_sample
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_lvis_v05_sample_perturbed(iou_type):
    gt = json.loads(LVIS_VAL_100.read_text())
    assert_same_as_lvis(LVIS_VAL_100, perturbed(gt, iou_type, seed=0), iou_type, shards=3)


# ---- lvis_synth.py: LVIS-v1-shaped ------------------------------------------------------------
@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    made = {}

    def make(n: int, seed: int) -> Path:
        if (n, seed) not in made:
            out = tmp_path_factory.mktemp(f"synth_{n}_{seed}")
            subprocess.run([sys.executable, str(SYNTH), str(n), str(out), str(seed)], check=True,
                           capture_output=True)
            made[n, seed] = out
        return made[n, seed]
    return make


@needs_synth
@pytest.mark.parametrize("n,seed,iou_type,max_dets", [
    (20, 0, "bbox", 300), (20, 0, "segm", 300), (20, 1, "bbox", 100), (20, 2, "segm", 100),
    (60, 3, "bbox", 300), (60, 3, "segm", 300)])
def test_lvis_synth(synth, n, seed, iou_type, max_dets):
    folder = synth(n, seed)
    detections = json.loads((folder / f"dt_{iou_type}_{n}.json").read_text())
    assert_same_as_lvis(folder / f"gt_{n}.json", detections, iou_type, max_dets, shards=2 if n == 60 else 0)


@needs_synth
def test_columns_equal_result_dicts(synth):
    folder = synth(20, 0)
    detections = json.loads((folder / "dt_segm_20.json").read_text())
    ours = FastLVISEval(folder / "gt_20.json", "segm")
    columns = {"image_id": np.array([d["image_id"] for d in detections]),
               "category_id": np.array([d["category_id"] for d in detections]),
               "score": np.array([d["score"] for d in detections]),
               "segmentation": [d["segmentation"] for d in detections]}
    assert ours.evaluate(columns) == ours.evaluate(detections)


# ---- hand-made corner cases -------------------------------------------------------------------
H, W = 150, 200


def corner_gt() -> dict:
    """Six images: A crowded (clusters of near-identical boxes straddling the small/medium
    boundary, an ``ignore`` flag, identical twins for IoU ties of which the later has id 0 (lvis
    then counts its match as unmatched)), B zero-area
    ground truth, C the >300-detection image, D no detections, E no ground truth, F a
    not-exhaustive category.  Categories 7 and 8 have no ground truth anywhere; the category
    list is not sorted by id (mmdet maps labels in file order)."""
    rng = np.random.default_rng(5)
    cats = [{"id": i, "name": f"c{i}", "frequency": "rcf"[i % 3]} for i in (5, 1, 8, 2, 3, 7, 4, 6)]
    images = [{"id": i, "height": H, "width": W, "neg_category_ids": neg, "not_exhaustive_category_ids": nel}
              for i, neg, nel in ((10, [7], []), (3, [2], []), (7, [7, 8, 6], []), (42, [], []),
                                  (5, [2, 7], []), (0, [4], [3]))]
    anns = []

    def add(image_id, category_id, box, **extra):
        x, y, w, h = box
        anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": category_id, "bbox": list(box),
                     "area": float(w * h), "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]], **extra})

    for cx, cy in ((40, 40), (110, 45), (160, 100), (60, 110)):            # A: clusters
        for side in (28, 31, 33, 36):
            add(10, 1, (cx - side / 2 + rng.integers(-1, 2), cy - side / 2, side, side))
    add(10, 1, (5, 5, 100, 100), ignore=1)
    add(10, 1, (100, 50, 95, 95)), add(10, 1, (100, 50, 95, 95), id=0)     # twins: equal IoU, medium
    add(10, 5, (10, 60, 50, 50))
    add(3, 3, (20, 20, 0, 0))                                              # B: zero area (dropped)
    add(3, 3, (50, 50, 40, 30))
    for k in range(12):                                                    # C
        add(7, (1, 3, 5)[k % 3], tuple(rng.uniform(0, 90, 2)) + tuple(rng.uniform(10, 100, 2)))
    add(42, 4, (30, 30, 50, 40)), add(42, 6, (100, 60, 20, 20))              # D
    add(0, 3, (10, 10, 60, 60)), add(0, 3, (100, 50, 30, 30)), add(0, 5, (20, 80, 40, 40))   # F
    return {"images": images, "annotations": anns, "categories": cats}


def corner_detections(gt: dict, iou_type: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []

    def add(image_id, category_id, box, score=None):
        x, y, w, h = (float(v) for v in box)
        det = {"image_id": image_id, "category_id": category_id,
               "score": float(score if score is not None else rng.integers(1, 6) / 5)}      # many ties
        if iou_type == "bbox":
            det["bbox"] = [x, y, w, h]
        elif w * h == 0:                                                     # an empty mask
            rle = mask_utils.encode(np.zeros((H, W, 1), np.uint8, order="F"))[0]
            det["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
        else:
            det["segmentation"] = rle_of_polygons([[x, y, x + w, y, x + w, y + h, x, y + h]], H, W)
        out.append(det)

    for ann in gt["annotations"]:
        if ann["image_id"] == 42:
            continue
        x, y, w, h = ann["bbox"]
        for _ in range(3 if ann["image_id"] == 10 else 1):
            j = rng.normal(0, 0.05, 4)
            add(ann["image_id"], ann["category_id"], (x + j[0] * w, y + j[1] * h, w * (1 + j[2]), h * (1 + j[3])))
    add(3, 3, (60, 60, 0, 10))                                             # zero-area detection
    for k in range(340):                                                   # C: more than 300
        box = tuple(rng.uniform(0, 100, 2)) + tuple(rng.uniform(5, 90, 2))
        add(7, (1, 3, 5, 7, 8, 6, 2)[k % 7], box, score=0.5 if k % 4 else None)
    for category_id in (2, 7, 7, 4, 1):                                   # E: negatives and unknowns
        add(5, category_id, (10, 10, 50, 50))
    for k in range(6):                                                     # F: not exhaustive
        add(0, 3, tuple(rng.uniform(0, 120, 2)) + (30.0, 30.0))
        add(0, 4, tuple(rng.uniform(0, 120, 2)) + (30.0, 30.0))
    add(0, 99, (1, 1, 5, 5))                                               # a category not in the file
    return [out[i] for i in rng.permutation(len(out))]


@pytest.fixture(scope="module")
def corner(tmp_path_factory):
    path = tmp_path_factory.mktemp("corner") / "gt.json"
    path.write_text(json.dumps(corner_gt()))
    return path


@pytest.mark.parametrize("iou_type,seed,max_dets", [("bbox", 0, 300), ("bbox", 1, 300), ("bbox", 2, 50),
                                                    ("segm", 0, 300), ("segm", 3, 20)])
def test_corner_cases(corner, iou_type, seed, max_dets):
    detections = corner_detections(json.loads(corner.read_text()), iou_type, seed)
    ours = assert_same_as_lvis(corner, detections, iou_type, max_dets, shards=3)
    k7 = int(np.searchsorted(ours.cat_ids, 7))
    assert (ours.precision[:, :, k7] == -1).all()                         # no ground truth anywhere


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_fast_lvis_evaluate_has_lvis_evaluates_contract(corner, iou_type):
    detections = corner_detections(json.loads(corner.read_text()), iou_type, 6)
    assert fast_lvis_evaluate(str(corner), copy.deepcopy(detections), iou_type) == \
        lvis_evaluate(str(corner), copy.deepcopy(detections), iou_type)


def test_crowded_pairs_take_the_exact_greedy_path(corner):
    """The cluster image needs the general matcher (a detection reaching two ground truths)."""
    from lt_bench.detection import fast_eval
    calls = []
    original = fast_eval._greedy
    fast_eval._greedy = lambda *args: calls.append(1) or original(*args)
    try:
        assert_same_as_lvis(corner, corner_detections(json.loads(corner.read_text()), "bbox", 0), "bbox")
    finally:
        fast_eval._greedy = original
    assert calls


def test_bad_inputs_name_the_file_and_the_id(corner, tmp_path):
    ours = FastLVISEval(corner, "bbox")
    with pytest.raises(DataError, match="image 12345"):
        ours.evaluate([{"image_id": 12345, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}])
    with pytest.raises(DataError, match="non-finite"):
        ours.evaluate([{"image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 5], "score": float("nan")}])
    gt = corner_gt()
    del gt["images"][2]["neg_category_ids"]
    (tmp_path / "bad.json").write_text(json.dumps(gt))
    with pytest.raises(DataError, match=r"bad\.json: image 7 has no 'neg_category_ids'"):
        FastLVISEval(tmp_path / "bad.json")
    ours.evaluate_images([10], [])
    with pytest.raises(DataError, match="image 10 was evaluated in two shards"):
        ours.merge([ours.evaluate_images([10], []), ours.evaluate_images([10, 3], [])])


# ---- the mmdet metric -------------------------------------------------------------------------
def metric_samples(gt: dict) -> list[dict]:
    """mmdet data samples (boxes, scores, labels in file order, masks) for all images but the
    last, so that its ground truth counts as missed."""
    import torch
    file_order = [c["id"] for c in gt["categories"]]
    detections = [d for d in corner_detections(gt, "bbox", 4) if d["category_id"] in file_order]
    samples = []
    for img in gt["images"][:-1]:
        mine = [d for d in detections if d["image_id"] == img["id"]]
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in mine)]).reshape(-1, 4)
        masks = torch.zeros((len(mine), H, W), dtype=torch.bool)
        for i, (x, y, w, h) in enumerate(d["bbox"] for d in mine):
            masks[i, int(y):int(y + h) + 1, int(x):int(x + w) + 1] = True
        samples.append({"img_id": img["id"], "ori_shape": (H, W), "pred_instances": {
            "bboxes": boxes.float(), "scores": torch.tensor([d["score"] for d in mine]).float(),
            "labels": torch.tensor([file_order.index(d["category_id"]) for d in mine], dtype=torch.long),
            "masks": masks}})
    return samples


def run_metric(metric, samples: list[dict]) -> dict:
    with contextlib.redirect_stdout(io.StringIO()):
        metric.process({}, copy.deepcopy(samples))
        return metric.evaluate(len(samples))


@pytest.fixture(scope="module")
def mmdet_metrics():
    pytest.importorskip("torch")
    pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")
    from mmdet.evaluation.metrics import LVISMetric
    from mmengine.logging import MMLogger

    from lt_bench.detection import fast_metric
    patch_lvis()
    MMLogger.get_instance("fast_lvis_test", log_level="WARNING")
    return LVISMetric, fast_metric


def test_fast_metric_equals_mmdets_lvis_metric(corner, mmdet_metrics):
    lvis_metric, fast_metric = mmdet_metrics
    samples = metric_samples(json.loads(corner.read_text()))
    expected = run_metric(lvis_metric(ann_file=str(corner), metric=["bbox", "segm"]), samples)
    assert set(expected) == {f"lvis/{m}_{k}" for m in ("bbox", "segm") for k in
                             ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")}
    assert run_metric(fast_metric.FastLVISMetric(ann_file=str(corner), metric=["bbox", "segm"]), samples) == expected


def test_fast_metric_over_two_ranks(corner, mmdet_metrics, monkeypatch):
    """Two ranks (threads with an in-process all_gather / broadcast), the sampler's padding
    repeating an image on the second: both ranks get the single-process metrics."""
    import threading
    _, fast_metric = mmdet_metrics
    samples = metric_samples(json.loads(corner.read_text()))
    expected = run_metric(fast_metric.FastLVISMetric(ann_file=str(corner), metric=["bbox", "segm"]), samples)
    world, barrier, slots, local = 2, threading.Barrier(2, timeout=60), [None, None], threading.local()

    def all_gather_object(obj):
        slots[local.rank] = obj
        barrier.wait()
        out = list(slots)
        barrier.wait()
        return out

    def broadcast_object_list(objs):
        if local.rank == 0:
            slots[0] = list(objs)
        barrier.wait()
        objs[:] = slots[0]
        barrier.wait()

    for name, fn in (("all_gather_object", all_gather_object), ("broadcast_object_list", broadcast_object_list),
                     ("get_rank", lambda: local.rank), ("is_main_process", lambda: local.rank == 0)):
        monkeypatch.setattr(fast_metric, name, fn)
    padded = samples + samples[:1]
    results, errors = [None, None], []

    def rank(r: int) -> None:
        local.rank = r
        try:
            results[r] = run_metric(fast_metric.FastLVISMetric(ann_file=str(corner), metric=["bbox", "segm"]),
                                    padded[r::world])
        except Exception as err:   # surfaced below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert results == [expected, expected]


@needs_sample
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_per_category_ap_is_mmdets_classwise_reading_of_lvis_apis_precision(iou_type):
    """Per-category AP (the record's ``per_category``) against lvis-api's precision array read
    as mmdet's LVISMetric(classwise=True) reads it (precision[:, :, k, area all], entries > -1,
    mean); None exactly for the categories without ground truth; and LVIS's AP is their mean."""
    gt = json.loads(LVIS_VAL_100.read_text())
    detections = perturbed(gt, iou_type, seed=1)
    reference = lvis_reference(LVIS_VAL_100, detections, iou_type)
    ours = FastLVISEval(LVIS_VAL_100, iou_type)
    summary = ours.evaluate(copy.deepcopy(detections))
    per_category = ours.per_category_ap()
    assert list(per_category) == sorted(c["id"] for c in gt["categories"])
    with_gt = {a["category_id"] for a in gt["annotations"]}
    precision = reference.eval["precision"]
    for k, cat_id in enumerate(reference.params.cat_ids):
        values = precision[:, :, k, 0]
        values = values[values > -1]
        if cat_id in with_gt:
            assert per_category[cat_id] == pytest.approx(float(np.mean(values)), abs=1e-12)
        else:
            assert values.size == 0 and per_category[cat_id] is None
    defined = [v for v in per_category.values() if v is not None]
    assert len(defined) == len(with_gt) and 0 <= min(defined) < max(defined) <= 1
    assert float(np.mean(defined)) == pytest.approx(summary["AP"], abs=1e-12)


# ---- the vectorised pieces against what they replace ------------------------------------------
def test_box_iou_is_pycocotools_bit_for_bit():
    """Box pairs, degenerate ones included (zero and negative sizes, touching edges, a box
    inside another, identical boxes): the same float64 as pycocotools' bbIou."""
    from lt_bench.detection.fast_eval import _box_iou
    rng = np.random.default_rng(0)
    dt = np.round(rng.uniform(-5, 60, (3000, 4)), rng.integers(0, 3))
    gt = np.round(rng.uniform(-5, 60, (3000, 4)), 2)
    dt[200:, 2:] = np.abs(dt[200:, 2:]) + 0.5
    dt[:200, 2:] = 0.0
    dt[200:400, 2] = -dt[200:400, 2]
    gt[400:600] = dt[400:600]
    gt[600:800, 0] = dt[600:800, 0] + dt[600:800, 2]          # touching on the left edge
    gt[800:1000, :2], gt[800:1000, 2:] = dt[800:1000, :2] + 1, dt[800:1000, 2:] / 3
    expected = np.array([mask_utils.iou(d[None], g[None], [0])[0, 0] for d, g in zip(dt, gt)])
    got = _box_iou(dt, gt)
    assert got.tobytes() == expected.tobytes()
    assert (got[400:600] == 1).all() and (got[600:800] == 0).all() and (got[:200] == 0).all()


def test_suffix_max_and_lexorder_are_the_plain_versions():
    from lt_bench.detection.fast_eval import _lexorder, _suffix_max
    rng = np.random.default_rng(1)
    rows = np.sort(rng.integers(0, 300, 5000))
    values = rng.integers(0, 7, 5000) / 7
    expected = np.array([values[i:np.searchsorted(rows, rows[i], side="right")].max() for i in range(5000)])
    assert np.array_equal(_suffix_max(values, rows), expected)
    keys = (rng.integers(0, 5, 4000), -rng.integers(0, 4, 4000) / 4, rng.integers(0, 70_000, 4000) % 9,
            rng.integers(0, 3, 4000).astype(np.int32))
    assert np.array_equal(_lexorder(*keys), np.lexsort(keys))
    assert np.array_equal(_lexorder(np.arange(0)), np.zeros(0, np.int64))


def dense_accumulate(cat, tp, fp, num_gt):
    """lvis-api 0.5.3's accumulate loop as it is written (cumulative tp / fp, precision with
    its maximum to the right, read at np.searchsorted(rc, rec_thrs) in a try/except)."""
    from lt_bench.detection.fast_eval import REC_THRS
    K, A = num_gt.shape
    T = tp.shape[1] // A
    precision, recall = -np.ones((T, len(REC_THRS), K, A)), -np.ones((T, K, A))
    for k in range(K):
        for a in range(A):
            if num_gt[k, a] == 0:
                continue
            rows = np.flatnonzero(cat == k)
            tp_sum = np.cumsum(tp[rows][:, a * T:(a + 1) * T].T, axis=1).astype(float)
            fp_sum = np.cumsum(fp[rows][:, a * T:(a + 1) * T].T, axis=1).astype(float)
            for t, (tp_, fp_) in enumerate(zip(tp_sum, fp_sum)):
                rc = tp_ / num_gt[k, a]
                recall[t, k, a] = rc[-1] if len(tp_) else 0
                pr = (tp_ / (fp_ + tp_ + np.spacing(1))).tolist()
                for i in range(len(tp_) - 1, 0, -1):
                    if pr[i] > pr[i - 1]:
                        pr[i - 1] = pr[i]
                q = [0.0] * len(REC_THRS)
                try:
                    for j, idx in enumerate(np.searchsorted(rc, REC_THRS, side="left")):
                        q[j] = pr[idx]
                except IndexError:
                    pass
                precision[t, :, k, a] = q
    return precision, recall


@pytest.mark.parametrize("seed,fp_share", [(0, 0.5), (1, 0.8), (2, 0.2)])
def test_accumulate_over_true_positives_is_lvis_apis_dense_loop(seed, fp_share):
    """Random tp / fp / ignored statuses (a detection is one of the three per area and
    threshold), categories without detections, without ground truth, with more true positives
    than ground truth would allow in lvis-api: the same precision and recall, bit for bit.
    Mostly false positives (counted as position less the others) and few (counted directly)."""
    from lt_bench.detection.fast_eval import _A, _T, _accumulate
    rng = np.random.default_rng(seed)
    K, n = 12, 1500
    cat = np.sort(rng.choice([0, 1, 2, 3, 5, 6, 7, 9, 10, 11], n, p=[.3, .2, .1, .1, .1, .05, .05, .05, .03, .02]))
    status = rng.choice(3, (n, _A * _T), p=[0.4 * (1 - fp_share), 0.6 * (1 - fp_share), fp_share])  # 0 ignored, 1 tp, 2 fp
    share = (status == 2).mean(0)
    if fp_share != 0.5:         # every column takes the branch meant
        assert ((share > 0.5) if fp_share > 0.5 else (share <= 0.5)).all()
    status[cat == 3] = rng.choice([0, 2], ((cat == 3).sum(), _A * _T))  # a category without a true positive
    num_gt = rng.integers(0, 60, (K, _A))
    num_gt[2] = 0
    num_gt[4] = [5, 0, 3, 1]                                       # ground truth, no detections
    tp, fp = (status == 1).astype(np.uint8), (status == 2).astype(np.uint8)
    precision, recall = _accumulate(cat, np.packbits(tp, axis=1), np.packbits(fp, axis=1), num_gt)
    ref_precision, ref_recall = dense_accumulate(cat, tp, fp, num_gt)
    assert precision.tobytes() == ref_precision.tobytes()
    assert recall.tobytes() == ref_recall.tobytes()


def test_unique_and_isin_helpers_are_numpys():
    """The sort- and table-based stand-ins give NumPy's own answers (values, first indices,
    counts; membership), also for negative, empty and wide-ranged integers."""
    from lt_bench.detection.fast_eval import _isin, _unique, _unique_first
    rng = np.random.default_rng(4)
    for values in (rng.integers(-50, 50, 3000), rng.integers(0, 2 ** 40, 2000), np.zeros(0, np.int64),
                   np.array([7, 7, 7]), rng.integers(0, 30, 500).astype(np.int32)):
        assert np.array_equal(_unique(values), np.unique(values))
        got, want = _unique_first(values), np.unique(values, return_index=True, return_counts=True)
        for a, b in zip(got, want):
            assert np.array_equal(a, b)
    for members in (rng.integers(-40, 40, 300), rng.integers(0, 2 ** 40, 300), np.zeros(0, np.int64),
                    np.array([2 ** 62, -(2 ** 62)])):
        values = np.concatenate([rng.integers(-60, 60, 4000), members[:50], rng.integers(0, 2 ** 41, 100)])
        assert np.array_equal(_isin(values, members), np.isin(values, members))


@needs_synth
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_forked_category_runs_and_any_shard_order_are_exact(synth, iou_type):
    """All images in one process, in forked runs of categories (2 and 3 workers), and image
    shards merged in image order (a two-key sort) and in reverse (the full four-key sort): the
    same precision and recall arrays, bit for bit, and lvis-api's numbers.  Scores rounded to
    0.05 so that equal scores in other images are common and their order (image, then
    position) matters; max_dets 100, so that each image's highest scores are taken over all
    categories before a worker keeps its own."""
    folder = synth(60, 3)
    detections = json.loads((folder / f"dt_{iou_type}_60.json").read_text())
    for d in detections:
        d["score"] = round(d["score"] * 20) / 20
    ours = FastLVISEval(folder / "gt_60.json", iou_type, max_dets=100)
    reference = ours.evaluate(detections)
    precision, recall = ours.precision.copy(), ours.recall.copy()
    assert (precision > -1).any()

    def same(summary):
        assert summary == reference
        assert ours.precision.tobytes() == precision.tobytes() and ours.recall.tobytes() == recall.tobytes()
    for workers in (2, 3):
        same(ours.evaluate(detections, workers=workers))
    partials = [ours.evaluate_images(ids, detections) for ids in np.array_split(ours.img_ids, 3)]
    same(ours.merge(partials))
    same(ours.merge(partials[::-1]))
    expected = lvis_reference(folder / "gt_60.json", detections, iou_type, max_dets=100).eval["precision"]
    np.testing.assert_array_equal(ours.precision == -1, expected == -1)
    np.testing.assert_allclose(ours.precision, expected, rtol=0, atol=1e-9)


@needs_synth
@pytest.mark.parametrize("kept", [0, 25, 10 ** 9])
def test_masks_kept_from_the_area_step_give_lvis_apis_numbers(synth, monkeypatch, kept):
    """Results without boxes: the masks made for the areas are kept for the IoUs of pairs with
    ground truth, at most ``_TAKEN_MAX`` of them (none, some, all); the same numbers as
    lvis-api whichever, through the results reader's MaskColumn too."""
    from lt_bench.detection import fast_eval
    from lt_bench.detection.results_file import read_results
    monkeypatch.setattr(fast_eval, "_TAKEN_MAX", kept)
    folder = synth(20, 2)
    path = folder / "dt_segm_20.json"
    detections = json.loads(path.read_text())
    assert "bbox" not in detections[0]
    ours = assert_same_as_lvis(folder / "gt_20.json", detections, "segm")
    precision = ours.precision.copy()
    ours.evaluate(read_results(path))
    assert ours.precision.tobytes() == precision.tobytes()
