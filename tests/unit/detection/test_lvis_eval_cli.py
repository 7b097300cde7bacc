"""lt-bench lvis-eval: a results file's metrics equal lvis-api 0.5.3's (its LVISEval on the
json-loaded list, computed here independently) for boxes, masks and a file with both; --json
never replaces a file unless --force; problems are one line and exit status 2."""
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
pytest.importorskip("msgspec", reason="the detection extra is not installed (make det)")
from pycocotools import mask as mask_utils  # noqa: E402

from lt_bench.cli import main as cli_main  # noqa: E402
from lt_bench.detection.lvis_compat import patch_lvis  # noqa: E402
from lt_bench.detection.lvis_eval_cli import main  # noqa: E402

from tests.conftest import ROOT  # noqa: E402

SHARED = ROOT.parent / "shared"
SYNTH = SHARED / "tools" / "lvis_synth.py"
LVIS_VAL_100 = SHARED / "data" / "lvis" / "lvis_v0.5_val_100.json"
needs_synth = pytest.mark.skipif(not SYNTH.is_file(), reason="../shared/tools/lvis_synth.py not present")
needs_sample = pytest.mark.skipif(not LVIS_VAL_100.is_file(), reason="../shared/data/lvis not present")
METRICS = ["AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf"]


def lvis_api(gt_path: Path, detections: list[dict], iou_type: str, max_dets: int = 300) -> dict[str, float]:
    patch_lvis()
    from lvis import LVIS, LVISEval, LVISResults
    with contextlib.redirect_stdout(io.StringIO()):
        gt = LVIS(str(gt_path))
        evaluator = LVISEval(gt, LVISResults(gt, copy.deepcopy(detections), max_dets=max_dets), iou_type)
        evaluator.params.max_dets = max_dets
        evaluator.run()
    return {k: float(v) for k, v in evaluator.get_results().items()}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture(scope="module")
def synth30(tmp_path_factory) -> Path:
    if not SYNTH.is_file():
        pytest.skip("../shared/tools/lvis_synth.py not present")
    out = tmp_path_factory.mktemp("synth30")
    subprocess.run([sys.executable, str(SYNTH), "30", str(out), "0"], check=True, capture_output=True)
    return out


@needs_synth
@pytest.mark.parametrize("kind,iou_type,max_dets", [
    ("bbox", None, 300), ("segm", None, 300), ("bbox", None, 100),
    ("segm", "bbox", 300),      # boxes from the masks (toBbox), as LVISResults makes them
    ("bbox", "segm", 300)])     # masks from the boxes (their polygons)
def test_metrics_equal_lvis_api(synth30, tmp_path, capsys, kind, iou_type, max_dets):
    gt, dt = synth30 / "gt_30.json", synth30 / f"dt_{kind}_30.json"
    out = tmp_path / "metrics.json"
    options = ["--iou-type", iou_type] if iou_type else []
    status, printed, _ = run_cli(capsys, dt, "--ann", gt, "--max-dets", max_dets, "--json", out, *options)
    assert status == 0
    report = json.loads(out.read_text())
    iou_type = iou_type or kind                                 # by default: what the file has
    expected = lvis_api(gt, json.loads(dt.read_text()), iou_type, max_dets)
    assert report["iou_types"] == [iou_type]
    assert report["metrics"][iou_type] == expected            # all 13, exactly
    assert list(expected) == METRICS + [f"AR{s}@{max_dets}" for s in ("", "s", "m", "l")]
    assert 0.05 < expected["AP"] < 0.9
    assert report["detections"] == 30 * 300 and report["results_bytes"] == dt.stat().st_size
    assert set(report["seconds"]) == {"read_annotations", "read_results", "evaluate", "total"}
    assert f"{'AP':<10}{expected['AP']:>9.4f}" in printed and "seconds: read results" in printed


@needs_synth
@pytest.mark.parametrize("kind", ["bbox", "segm"])
def test_forked_image_shards_give_the_same_numbers(synth30, tmp_path, capsys, kind):
    """--workers N matches N image shards in forked processes and merges them: the 13 metrics
    equal one process's exactly (and, through the test above, lvis-api's)."""
    gt, dt = synth30 / "gt_30.json", synth30 / f"dt_{kind}_30.json"
    reports = {}
    for workers in (1, 3, 7):
        out = tmp_path / f"w{workers}.json"
        assert run_cli(capsys, dt, "--ann", gt, "--workers", workers, "--json", out)[0] == 0
        reports[workers] = json.loads(out.read_text())
        assert reports[workers]["workers"] == workers
    assert reports[3]["metrics"] == reports[1]["metrics"] == reports[7]["metrics"]
    status, _, err = run_cli(capsys, dt, "--ann", gt, "--workers", 0)
    assert status == 2 and "--workers must be a positive integer" in err


def sample_detections(gt: dict, seed: int) -> list[dict]:
    """Boxes and masks (compressed RLE) for the real LVIS v0.5 sample: jittered ground truth
    (boxes and polygons moved and scaled alike), duplicates, false positives in negative and in
    unrelated categories, tied scores."""
    rng = np.random.default_rng(seed)
    images = {img["id"]: img for img in gt["images"]}
    cat_ids = [c["id"] for c in gt["categories"]]
    shapes = [(a["image_id"], a["category_id"], a["bbox"], a["segmentation"])
              for a in gt["annotations"] for _ in range(1 + (rng.random() < 0.3)) if rng.random() < 0.8]
    for img in gt["images"]:
        for c in list(img["neg_category_ids"][:2]) + [int(c) for c in rng.choice(cat_ids, 2)]:
            shapes.append((img["id"], c, [20.0, 30.0, 60.0, 40.0], [[20.0, 30.0, 80.0, 30.0, 80.0, 70.0, 20.0, 70.0]]))
    out = []
    for image_id, category_id, (x, y, w, h), polygons in shapes:
        img = images[image_id]
        j = rng.normal(0, 0.08, 4)
        dx, dy, sx, sy = j[0] * w, j[1] * h, 1 + j[2], 1 + j[3]
        moved = [[(v - x) * sx + x + dx if i % 2 == 0 else (v - y) * sy + y + dy for i, v in enumerate(p)]
                 for p in polygons]
        rle = mask_utils.merge(mask_utils.frPyObjects(moved, img["height"], img["width"]))
        out.append({"image_id": image_id, "category_id": int(category_id),
                    "bbox": [float(v) for v in (x + dx, y + dy, w * sx, h * sy)],
                    "score": float(rng.integers(1, 20)) / 20,
                    "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    return [out[i] for i in rng.permutation(len(out))]


@needs_sample
def test_a_file_with_boxes_and_masks_is_evaluated_both_ways(tmp_path, capsys):
    gt = json.loads(LVIS_VAL_100.read_text())
    detections = sample_detections(gt, seed=1)
    dt = tmp_path / "dt.json"
    dt.write_text(json.dumps(detections, indent=1))
    out = tmp_path / "metrics.json"
    status, printed, _ = run_cli(capsys, dt, "--ann", LVIS_VAL_100, "--json", out)
    assert status == 0
    report = json.loads(out.read_text())
    assert report["iou_types"] == ["bbox", "segm"]
    for iou_type in ("bbox", "segm"):
        assert report["metrics"][iou_type] == lvis_api(LVIS_VAL_100, detections, iou_type)
    assert report["metrics"]["bbox"] != report["metrics"]["segm"]
    assert all(0.1 < report["metrics"][t]["AP"] < 0.95 for t in ("bbox", "segm"))
    # one type on request: the same numbers
    status, _, _ = run_cli(capsys, dt, "--ann", LVIS_VAL_100, "--iou-type", "segm", "--json", tmp_path / "segm.json")
    assert status == 0 and json.loads((tmp_path / "segm.json").read_text())["metrics"] == {"segm": report["metrics"]["segm"]}


@needs_sample
def test_json_out_is_never_replaced_without_force(tmp_path, capsys):
    dt = tmp_path / "dt.json"
    dt.write_text(json.dumps(sample_detections(json.loads(LVIS_VAL_100.read_text()), 2)[:200]))
    out = tmp_path / "metrics.json"
    out.write_text("keep me")
    status, printed, err = run_cli(capsys, dt, "--ann", LVIS_VAL_100, "--json", out)
    assert status == 2 and printed == "" and out.read_text() == "keep me"
    assert err.strip() == f"ConfigError: --json {out} exists; --force replaces it"
    status, printed, _ = run_cli(capsys, dt, "--ann", LVIS_VAL_100, "--json", out, "--force")
    assert status == 0 and json.loads(out.read_text())["detections"] == 200
    status, _, err = run_cli(capsys, dt, "--ann", LVIS_VAL_100, "--json", dt, "--force")
    assert status == 2 and "is one of the input files" in err and json.loads(dt.read_text())


@needs_sample
@pytest.mark.parametrize("case,message", [
    ("truncated", r"DataError: {dt}: not valid JSON: truncated"),
    ("no score", r"DataError: {dt}: detection #1: Object missing required field `score`"),
    ("unknown image", r"DataError: detection #0 refers to image 123456789, which is not in {ann}"),
    ("no ann", r"DataError: the annotation file {missing} does not exist"),
])
def test_problems_are_one_line_and_exit_2(tmp_path, capsys, case, message):
    import re
    good = {"image_id": json.loads(LVIS_VAL_100.read_text())["images"][0]["id"], "category_id": 1, "score": 0.5,
            "bbox": [1, 2, 3, 4]}
    dets = [good, dict(good)]
    ann = LVIS_VAL_100
    if case == "no score":
        del dets[1]["score"]
    if case == "unknown image":
        dets[0]["image_id"] = 123456789
    text = json.dumps(dets)
    if case == "truncated":
        text = text[:-10]
    if case == "no ann":
        ann = tmp_path / "missing.json"
    dt = tmp_path / "dt.json"
    dt.write_text(text)
    status, printed, err = run_cli(capsys, dt, "--ann", ann)
    assert status == 2 and printed == ""
    assert len(err.strip().splitlines()) == 1
    assert re.match(message.format(dt=re.escape(str(dt)), ann=re.escape(str(ann)),
                                   missing=re.escape(str(tmp_path / "missing.json"))), err.strip()), err


def test_the_lt_bench_command_hands_over(capsys):
    with pytest.raises(SystemExit) as done:
        cli_main(["lvis-eval", "--help"])
    assert done.value.code == 0 and "--iou-type" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        cli_main(["--help"])
    assert "lvis-eval" in capsys.readouterr().out
