"""LVIS evaluation: lvis-api 0.5.3, faster-coco-eval's LVIS mode and lt_bench's FastLVISEval.

    python benchmarks/lvis_eval.py                          # N = 5,000, bbox and segm, all three
    python benchmarks/lvis_eval.py --n 19809 --only-ours    # LVIS v1 val's size
    python benchmarks/lvis_eval.py --n 500 --iou-types bbox --data /tmp/lvis_synth

Data: ../shared/tools/lvis_synth.py (LVIS-v1-shaped ground truth, 300 detections per image),
generated once into --data/seed<S>/ and reused.  Each evaluator runs in its own subprocess,
so its peak RSS (ru_maxrss of that child, from os.wait4) is its own.  The child loads the
detection json first (not timed, but in the RSS, the same for all); the time covers reading
the ground-truth json, building the evaluator and evaluate/accumulate/summarize.  A last
child only loads the detection json: its RSS is the floor every evaluator's includes.  For
faster-coco-eval's segm run, detections in categories an image neither contains nor lists as
negative are dropped before timing (1.8.0 crashes on them; LVIS ignores them anyway).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SYNTH = REPO.parent / "shared" / "tools" / "lvis_synth.py"
EVALUATORS = ("lvis-api", "faster-coco-eval", "ours")
LOAD_ONLY = "json.load only"     # the result list itself: part of every evaluator's peak RSS


def ensure_data(folder: Path, n: int, seed: int, synth: Path) -> Path:
    """Generate (or reuse) gt_N.json, dt_bbox_N.json and dt_segm_N.json."""
    out = folder / f"seed{seed}"
    if all((out / f"{name}_{n}.json").is_file() for name in ("gt", "dt_bbox", "dt_segm")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    print(f"generating N={n} seed={seed} into {out} ...", flush=True)
    subprocess.run([sys.executable, str(synth), str(n), str(out), str(seed)], check=True)
    return out


def run_child(evaluator: str, gt: Path, dt: Path, iou_type: str) -> dict:
    """One evaluator in a fresh process; returns its result and its own peak RSS."""
    cmd = [sys.executable, __file__, "--child", evaluator, "--gt", str(gt), "--dt", str(dt), "--iou-types", iou_type]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}) as proc:
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{evaluator} {iou_type} failed (exit {proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["rss_gib"] = usage.ru_maxrss / 2 ** 20          # KiB on Linux
    return result


def child(evaluator: str, gt: str, dt: str, iou_type: str) -> dict:
    with open(dt) as f:
        dets = json.load(f)
    if evaluator == "faster-coco-eval" and iou_type == "segm":
        dets = federated_only(gt, dets)
    start = time.perf_counter()
    if evaluator == LOAD_ONLY:
        summary = {"AP": float("nan")}
    elif evaluator == "ours":
        from lt_bench.detection.fast_eval import FastLVISEval
        summary = FastLVISEval(gt, iou_type, max_dets=300).evaluate(dets)
    elif evaluator == "lvis-api":
        from lt_bench.detection.lvis_compat import patch_lvis
        patch_lvis()
        from lvis import LVIS, LVISEval, LVISResults
        with contextlib.redirect_stdout(io.StringIO()):
            lvis_gt = LVIS(gt)
            evaluator_ = LVISEval(lvis_gt, LVISResults(lvis_gt, dets, max_dets=300), iou_type=iou_type)
            evaluator_.run()
        summary = {k: float(v) for k, v in evaluator_.get_results().items()}
    else:
        from faster_coco_eval import COCO, COCOeval_faster
        coco_gt = COCO(gt)
        fce = COCOeval_faster(coco_gt, coco_gt.loadRes(dets), iouType=iou_type, lvis_style=True,
                              print_function=lambda *args: None)
        fce.params.maxDets = [300]
        fce.evaluate()
        fce.accumulate()
        fce.summarize()
        summary = {"AP": float(fce.stats_as_dict["AP_all"])}
    return {"seconds": time.perf_counter() - start, "summary": summary}


def federated_only(gt: str, dets: list[dict]) -> list[dict]:
    """Detections in categories their image contains or lists as negative."""
    with open(gt) as f:
        data = json.load(f)
    allowed = {img["id"]: set(img["neg_category_ids"]) for img in data["images"]}
    for ann in data["annotations"]:
        if ann["area"] > 0:
            allowed[ann["image_id"]].add(ann["category_id"])
    return [d for d in dets if d["category_id"] in allowed[d["image_id"]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="images (LVIS v1 val: 19,809)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "lt_bench" / "lvis_synth")
    parser.add_argument("--synth", type=Path, default=SYNTH, help="lvis_synth.py")
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    parser.add_argument("--only-ours", action="store_true", help="skip lvis-api and faster-coco-eval")
    parser.add_argument("--child", choices=(*EVALUATORS, LOAD_ONLY), help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--dt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.gt, args.dt, args.iou_types[0])))
        return

    folder = ensure_data(args.data, args.n, args.seed, args.synth)
    evaluators = (("ours",) if args.only_ours else EVALUATORS) + (LOAD_ONLY,)
    rows = []
    for iou_type in args.iou_types:
        results = {}
        for name in evaluators:
            print(f"running {name} {iou_type} N={args.n} ...", flush=True)
            results[name] = run_child(name, folder / f"gt_{args.n}.json", folder / f"dt_{iou_type}_{args.n}.json",
                                      iou_type)
        base = results.get("lvis-api")
        for name, r in results.items():
            ratio = f"{base['seconds'] / r['seconds']:.1f}×" if base and name != LOAD_ONLY else "—"
            rows.append(f"| {name} | {iou_type} | {args.n:,} | {r['seconds']:.1f} | {r['rss_gib']:.2f} | "
                        f"{r['summary']['AP']:.4f} | {ratio} |")
        if base and "ours" in results:
            same = results["ours"]["summary"] == base["summary"]
            print(f"{iou_type}: ours == lvis-api on all {len(base['summary'])} summary metrics: {same}")
    print("\n| evaluator | iou | N | seconds | peak RSS GiB | AP | speed-up vs lvis-api |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
