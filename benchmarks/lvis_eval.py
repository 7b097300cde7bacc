"""LVIS evaluation: lvis-api 0.5.3, faster-coco-eval's LVIS mode and lt_bench's FastLVISEval.

    python benchmarks/lvis_eval.py                          # N = 5,000, bbox and segm, all three
    python benchmarks/lvis_eval.py --n 19809 --only-ours    # LVIS v1 val's size
    python benchmarks/lvis_eval.py --n 500 --iou-types bbox --data /tmp/lvis_synth
    python benchmarks/lvis_eval.py --standalone --n 5000 19809   # lt-bench lvis-eval on the results files
    python benchmarks/lvis_eval.py --readers --n 19809 --iou-types bbox   # results-file readers compared

Data: ../shared/tools/lvis_synth.py (LVIS-v1-shaped ground truth, 300 detections per image),
generated once into --data/seed<S>/ and reused.  Each evaluator runs in its own subprocess,
so its peak RSS (ru_maxrss of that child, from os.wait4) is its own.  The child loads the
detection json first (not timed, but in the RSS, the same for all); the time covers reading
the ground-truth json, building the evaluator and evaluate/accumulate/summarize.  A last
child only loads the detection json: its RSS is the floor every evaluator's includes.  For
faster-coco-eval's segm run, detections in categories an image neither contains nor lists as
negative are dropped before timing (1.8.0 crashes on them; LVIS ignores them anyway).

``--standalone`` times ``lt-bench lvis-eval dt.json --ann gt.json`` as a whole command in a
child (wall and CPU seconds, peak RSS, the command's own read / evaluate split from its --json
report) and checks its 13 metrics against FastLVISEval's on the json.load'ed result list (in
another child).  ``--readers`` reads the results file into columns with each candidate library,
one child each: seconds, CPU seconds, peak RSS (the candidates other than json and msgspec are
not dependencies: ``pip install orjson polars ijson pysimdjson duckdb``; a missing one fails
its row).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import chain
from operator import attrgetter, itemgetter
from pathlib import Path

import numpy as np

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


# ---- lt-bench lvis-eval as a command --------------------------------------------------------
def wait_child(cmd: list[str]) -> tuple[str, dict]:
    """Run cmd; its stdout, wall seconds, CPU seconds and peak RSS (GiB) from os.wait4."""
    start = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}) as proc:
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed (exit {proc.returncode})")
    return out, {"wall": time.perf_counter() - start, "cpu": usage.ru_utime + usage.ru_stime,
                 "rss_gib": usage.ru_maxrss / 2 ** 20}


def standalone(folder: Path, n: int, iou_type: str, workers: list[int]) -> list[dict]:
    """One row per --workers value (the command's own read / evaluate split, wall, CPU, peak
    RSS); each row's metrics checked against FastLVISEval's on json.load's list (one child)."""
    gt, dt = folder / f"gt_{n}.json", folder / f"dt_{iou_type}_{n}.json"
    rows = []
    for w in workers:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "metrics.json"
            _, usage = wait_child([sys.executable, "-m", "lt_bench.cli", "lvis-eval", str(dt), "--ann", str(gt),
                                   "--iou-type", iou_type, "--workers", str(w), "--json", str(out)])
            rows.append({**usage, "report": json.loads(out.read_text()), "file_gib": dt.stat().st_size / 2 ** 30})
    reference = run_child("ours", gt, dt, iou_type)["summary"]       # FastLVISEval on json.load's list
    for row in rows:
        row["same"] = row["report"]["metrics"][iou_type] == reference
    return rows


def standalone_rows(results: list[tuple[int, str, dict]]) -> str:
    lines = ["| N | iou | workers | file GiB | read results s | read ann. s | evaluate s | command s (wall) | CPU s | "
             "peak RSS GiB | RSS above file GiB | AP | = FastLVISEval on json.load |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n, iou_type, r in results:
        s = r["report"]["seconds"]
        lines.append(f"| {n:,} | {iou_type} | {r['report']['workers']} | {r['file_gib']:.2f} | {s['read_results']:.1f} | "
                     f"{s['read_annotations']:.1f} | "
                     f"{s['evaluate'][iou_type]:.1f} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['rss_gib']:.2f} | "
                     f"{r['rss_gib'] - r['file_gib']:.2f} | {r['report']['metrics'][iou_type]['AP']:.4f} | "
                     f"{'all 13 equal' if r['same'] else 'DIFFERENT'} |")
    return "\n".join(lines)


# ---- results-file readers compared -----------------------------------------------------------
def _columns_of_dicts(dets: list) -> dict:
    n = len(dets)
    out = {"image_id": np.fromiter(map(itemgetter("image_id"), dets), np.int64, n),
           "category_id": np.fromiter(map(itemgetter("category_id"), dets), np.int64, n),
           "score": np.fromiter(map(itemgetter("score"), dets), np.float64, n)}
    if n and "bbox" in dets[0]:
        out["bbox"] = np.fromiter(chain.from_iterable(map(itemgetter("bbox"), dets)), np.float64, 4 * n).reshape(n, 4)
    else:
        counts = [d["segmentation"]["counts"] for d in dets]
        out["counts"] = "".join(counts).encode()
    return out


def read_json(path: str) -> dict:
    with open(path) as f:
        return _columns_of_dicts(json.load(f))


def read_orjson(path: str) -> dict:
    import orjson
    with open(path, "rb") as f:
        return _columns_of_dicts(orjson.loads(f.read()))


def read_msgspec_whole(path: str) -> dict:
    """msgspec's typed structs for the whole array at once (no batches)."""
    import msgspec
    from lt_bench.detection.results_file import _types
    det_type, _ = _types(need_masks=True)
    with open(path, "rb") as f:
        dets = msgspec.json.decode(f.read(), type=list[det_type])
    n = len(dets)
    out = {"image_id": np.fromiter(map(attrgetter("image_id"), dets), np.int64, n),
           "category_id": np.fromiter(map(attrgetter("category_id"), dets), np.int64, n),
           "score": np.fromiter(map(attrgetter("score"), dets), np.float64, n)}
    if n and dets[0].bbox is not msgspec.UNSET:
        out["bbox"] = np.fromiter(chain.from_iterable(map(attrgetter("bbox"), dets)), np.float64, 4 * n).reshape(n, 4)
    else:
        out["counts"] = "".join(d.segmentation.counts for d in dets).encode()
    return out


def read_ours(path: str) -> dict:
    from lt_bench.detection.results_file import read_results
    return read_results(path, masks="auto")


def read_polars(path: str) -> dict:
    import polars as pl
    df = pl.read_json(path)
    out = {"image_id": df["image_id"].to_numpy(), "category_id": df["category_id"].to_numpy(),
           "score": df["score"].cast(pl.Float64).to_numpy()}
    if "bbox" in df.columns:
        out["bbox"] = df["bbox"].explode().cast(pl.Float64).to_numpy().reshape(-1, 4)
    else:
        out["counts"] = df["segmentation"].struct.field("counts").str.join("").item().encode()
    return out


def read_ijson(path: str) -> dict:
    import ijson
    if ijson.backend != "yajl2_c":
        raise RuntimeError(f"ijson's C backend is not available (backend {ijson.backend})")
    parts, batch = [], []
    with open(path, "rb") as f:
        for det in ijson.items(f, "item", use_float=True):
            batch.append(det)
            if len(batch) == 65536:
                parts.append(_columns_of_dicts(batch))
                batch = []
    parts.append(_columns_of_dicts(batch))
    return {k: b"".join(p[k] for p in parts) if k == "counts" else np.concatenate([p[k] for p in parts])
            for k in parts[0]}


def read_simdjson(path: str) -> dict:
    import simdjson
    doc = simdjson.Parser().load(path)
    n = len(doc)
    out = {"image_id": np.empty(n, np.int64), "category_id": np.empty(n, np.int64), "score": np.empty(n)}
    boxes = n and "bbox" in doc[0]
    bbox, counts = np.empty((n, 4)), []
    for i, det in enumerate(doc):
        out["image_id"][i], out["category_id"][i], out["score"][i] = det["image_id"], det["category_id"], det["score"]
        if boxes:
            bbox[i] = det["bbox"].as_list()
        else:
            counts.append(det["segmentation"]["counts"])
    if boxes:
        out["bbox"] = bbox
    else:
        out["counts"] = "".join(counts).encode()
    return out


def read_duckdb(path: str) -> dict:
    """DuckDB's JSON reader (yyjson) with the columns' types given; lax: it casts "0.5" to a
    number and rounds an image_id of 1.5, so it alone would not reject such files."""
    import duckdb
    con = duckdb.connect(config={"threads": 1})
    spec = ("{image_id: 'BIGINT', category_id: 'BIGINT', score: 'DOUBLE', bbox: 'DOUBLE[]', "
            "segmentation: 'STRUCT(size BIGINT[], counts VARCHAR)'}")
    source = f"read_json('{path}', format='array', columns={spec})"
    r = con.execute(f"SELECT image_id, category_id, score, bbox[1] b0, bbox[2] b1, bbox[3] b2, bbox[4] b3, "
                    f"segmentation.counts c FROM {source}").fetchnumpy()
    out = {k: np.asarray(r[k]) for k in ("image_id", "category_id", "score")}
    if len(r["b0"]) and not np.ma.is_masked(r["b0"]):
        out["bbox"] = np.stack([np.asarray(r[f"b{i}"], np.float64) for i in range(4)], 1)
    else:
        out["counts"] = "".join(np.asarray(r["c"]).tolist()).encode()
    return out


READERS = {"json.load": read_json, "orjson": read_orjson, "msgspec, whole array": read_msgspec_whole,
           "ours (msgspec in spans)": read_ours, "polars.read_json": read_polars, "ijson (yajl2_c)": read_ijson,
           "pysimdjson": read_simdjson, "duckdb": read_duckdb}


def reader_child(name: str, path: str) -> dict:
    start = time.perf_counter()
    columns = READERS[name](path)
    seconds = time.perf_counter() - start
    box, masks = columns.get("bbox"), columns.get("segmentation")
    counts = int((masks.ends - masks.starts).sum()) if masks is not None else len(columns.get("counts", b""))
    return {"seconds": seconds, "n": int(len(columns["score"])), "score_sum": float(np.sum(columns["score"])),
            "bbox_sum": None if box is None else float(np.sum(box)), "counts_bytes": counts}


def compare_readers(folder: Path, n: int, iou_type: str, candidates: list[str]) -> list[str]:
    dt = folder / f"dt_{iou_type}_{n}.json"
    size = dt.stat().st_size / 2 ** 30
    rows, first = [], None
    for name in candidates:
        print(f"reader {name} {iou_type} N={n} ...", flush=True)
        try:
            out, usage = wait_child([sys.executable, __file__, "--reader-child", name, "--dt", str(dt)])
        except RuntimeError as err:
            rows.append(f"| {name} | {iou_type} | {n:,} | failed: {err} | | | | |")
            continue
        r = json.loads(out.strip().splitlines()[-1])
        first = first or r
        keys = ("n", "score_sum", "bbox_sum", "counts_bytes")
        same = [r[k] for k in keys] == [first[k] for k in keys]
        rows.append(f"| {name} | {iou_type} | {n:,} | {r['seconds']:.1f} | {usage['cpu']:.1f} | {usage['rss_gib']:.2f} | "
                    f"{usage['rss_gib'] - size:+.2f} | {'yes' if same else 'NO'} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[5000], help="images (LVIS v1 val: 19,809)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path.home() / ".cache" / "lt_bench" / "lvis_synth")
    parser.add_argument("--synth", type=Path, default=SYNTH, help="lvis_synth.py")
    parser.add_argument("--iou-types", nargs="+", default=["bbox", "segm"], choices=["bbox", "segm"])
    parser.add_argument("--only-ours", action="store_true", help="skip lvis-api and faster-coco-eval")
    parser.add_argument("--standalone", action="store_true",
                        help="time the lt-bench lvis-eval command on the results files (and check its metrics)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="--standalone: a row for each lt-bench lvis-eval --workers value (default: 1 2)")
    parser.add_argument("--readers", action="store_true", help="compare the libraries that read a results file")
    parser.add_argument("--candidates", nargs="+", choices=tuple(READERS), default=None,
                        help="--readers: these only (default: all; a library not installed fails its row)")
    parser.add_argument("--child", choices=(*EVALUATORS, LOAD_ONLY), help=argparse.SUPPRESS)
    parser.add_argument("--reader-child", choices=tuple(READERS), help=argparse.SUPPRESS)
    parser.add_argument("--gt", help=argparse.SUPPRESS)
    parser.add_argument("--dt", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.gt, args.dt, args.iou_types[0])))
        return
    if args.reader_child:
        print(json.dumps(reader_child(args.reader_child, args.dt)))
        return
    if args.standalone or args.readers:
        results, rows = [], []
        for n in args.n:
            folder = ensure_data(args.data, n, args.seed, args.synth)
            for iou_type in args.iou_types:
                if args.readers:
                    rows += compare_readers(folder, n, iou_type, args.candidates or list(READERS))
                if args.standalone:
                    print(f"lt-bench lvis-eval {iou_type} N={n} ...", flush=True)
                    results += [(n, iou_type, row) for row in standalone(folder, n, iou_type, args.workers)]
        if rows:
            print("\n| reader | iou | N | seconds | CPU s | peak RSS GiB | RSS - file size GiB | same columns |")
            print("| --- | --- | --- | --- | --- | --- | --- | --- |")
            print("\n".join(rows))
        if results:
            print()
            print(standalone_rows(results))
        return
    for n in args.n:
        compare_evaluators(args, n)


def compare_evaluators(args: argparse.Namespace, n: int) -> None:
    """lvis-api, faster-coco-eval and ours on the json-loaded results at N = n."""
    folder = ensure_data(args.data, n, args.seed, args.synth)
    evaluators = (("ours",) if args.only_ours else EVALUATORS) + (LOAD_ONLY,)
    rows = []
    for iou_type in args.iou_types:
        results = {}
        for name in evaluators:
            print(f"running {name} {iou_type} N={n} ...", flush=True)
            results[name] = run_child(name, folder / f"gt_{n}.json", folder / f"dt_{iou_type}_{n}.json",
                                      iou_type)
        base = results.get("lvis-api")
        for name, r in results.items():
            ratio = f"{base['seconds'] / r['seconds']:.1f}×" if base and name != LOAD_ONLY else "—"
            rows.append(f"| {name} | {iou_type} | {n:,} | {r['seconds']:.1f} | {r['rss_gib']:.2f} | "
                        f"{r['summary']['AP']:.4f} | {ratio} |")
        if base and "ours" in results:
            same = results["ours"]["summary"] == base["summary"]
            print(f"{iou_type}: ours == lvis-api on all {len(base['summary'])} summary metrics: {same}")
    print("\n| evaluator | iou | N | seconds | peak RSS GiB | AP | speed-up vs lvis-api |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
