"""``lt-bench lvis-eval RESULTS.json --ann VAL.json``: a detection results file (from any
detector, the LVIS/COCO results format) evaluated exactly as lvis-api 0.5.3 evaluates it.

The results are read into columns (``results_file.read_results``), not a dict per detection,
and evaluated by ``FastLVISEval``, which gives lvis-api's numbers.  Prints the 13 LVIS metrics
per IoU type and the seconds spent; ``--json OUT`` also writes them (never over an existing
file unless ``--force``).  A problem with the files or the options is one line on stderr and
exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from lt_bench.errors import ConfigError, DataError, LtBenchError

IOU_TYPES = ("bbox", "segm", "both")


def default_workers() -> int:
    """The CPUs this process may use, at most 4: the processes that read spans of the results
    file and then match and accumulate runs of categories (the detections shared copy-on-write)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:           # no sched_getaffinity (macOS, Windows)
        cpus = os.cpu_count() or 1
    return max(1, min(4, cpus))


def evaluate_file(results: str | Path, ann: str | Path, iou_type: str | None = None,
                  max_dets: int = 300, workers: int = 1) -> dict[str, Any]:
    """The report: the files, the detections, the metrics per IoU type and the seconds."""
    from lt_bench.detection.fast_eval import FastLVISEval
    from lt_bench.detection.forked import Once
    from lt_bench.detection.results_file import read_annotations, read_results
    if iou_type is not None and iou_type not in IOU_TYPES:
        raise ConfigError(f"--iou-type must be one of {', '.join(IOU_TYPES)}, not {iou_type!r}")
    if isinstance(max_dets, bool) or not isinstance(max_dets, int) or max_dets < 1:
        raise ConfigError(f"--max-dets must be a positive integer, not {max_dets!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"--workers must be a positive integer, not {workers!r}")
    for what, path in (("results file", results), ("annotation file", ann)):
        if not Path(path).is_file():
            raise DataError(f"the {what} {path} does not exist" if not Path(path).exists()
                            else f"the {what} {path} is not a file")
    start = time.perf_counter()
    masks = {"bbox": "skip", "segm": "read", "both": "read", None: "auto"}[iou_type]
    known = {"bbox": ["bbox"], "segm": ["segm"], "both": ["bbox", "segm"], None: []}[iou_type]

    def prepare() -> tuple[dict, dict, float]:
        """The annotations and their evaluators, while forked readers decode the results."""
        began = time.perf_counter()
        gt = read_annotations(ann, masks="skip" if known == ["bbox"] else "raw")   # polygons decoded when matched
        evaluators = {kind: FastLVISEval(gt, kind, max_dets, source=str(ann)) for kind in known}
        return gt, evaluators, time.perf_counter() - began

    prepared = Once(prepare)
    columns = read_results(results, masks=masks, workers=workers, meanwhile=prepared)
    read_res = time.perf_counter()
    gt, evaluators, ann_seconds = prepared.result()
    if iou_type is None:      # what the detections have (the first one speaks for all, as in lvis-api)
        types = [t for t, has in (("bbox", columns["bbox"] is not None),
                                  ("segm", columns["segmentation"] is not None)) if has] or ["bbox"]
    else:
        types = known
    metrics, seconds = {}, {}
    for kind in types:
        t0 = time.perf_counter()
        evaluator = evaluators.pop(kind, None) or FastLVISEval(gt, kind, max_dets, source=str(ann))
        metrics[kind] = evaluator.evaluate(columns, workers=workers)
        seconds[kind] = time.perf_counter() - t0
        del evaluator
    return {"results": str(results), "annotations": str(ann), "results_bytes": os.path.getsize(results),
            "detections": int(len(columns["score"])), "max_dets": max_dets, "workers": workers, "iou_types": types,
            "metrics": metrics,
            "seconds": {"read_results": read_res - start, "read_annotations": ann_seconds,
                        "evaluate": seconds, "total": time.perf_counter() - start}}


def report_text(report: dict[str, Any]) -> str:
    types = report["iou_types"]
    names = list(report["metrics"][types[0]])
    lines = [f"{report['results']}: {report['detections']:,} detections ({report['results_bytes'] / 2 ** 20:,.1f} MiB), "
             f"{report['annotations']}, at most {report['max_dets']} per image",
             f"{'metric':<10}" + "".join(f"{t:>9}" for t in types)]
    lines += [f"{name:<10}" + "".join(f"{report['metrics'][t][name]:>9.4f}" for t in types) for name in names]
    s = report["seconds"]
    lines.append(f"seconds: read results {s['read_results']:.1f} (the annotations read and indexed meanwhile: "
                 f"{s['read_annotations']:.1f}), "
                 + ", ".join(f"evaluate {t} {s['evaluate'][t]:.1f}" for t in types) + f"; total {s['total']:.1f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``lt-bench lvis-eval RESULTS.json --ann VAL.json [--iou-type bbox|segm|both] [--max-dets 300]
    [--json OUT [--force]]``."""
    parser = argparse.ArgumentParser(
        prog="lt-bench lvis-eval",
        description="evaluate a detection results file (JSON array of image_id, category_id, score, bbox [x,y,w,h] "
                    "and/or segmentation RLE) exactly as lvis-api 0.5.3: AP, AP50, AP75, APs/m/l, APr/c/f, AR")
    parser.add_argument("results", help="the results file (the LVIS/COCO results format)")
    parser.add_argument("--ann", required=True, help="the LVIS annotation file (e.g. lvis_v1_val.json)")
    parser.add_argument("--iou-type", choices=IOU_TYPES, default=None,
                        help="default: what the detections have (boxes: bbox, masks: segm, both: both)")
    parser.add_argument("--max-dets", type=int, default=300, help="detections kept per image (default 300)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes reading spans of the file and matching runs of categories "
                             "(default: the usable CPUs, at most 4); "
                             "the numbers do not depend on it")
    parser.add_argument("--json", dest="out", metavar="OUT", default=None,
                        help="also write the metrics and the seconds to this json file")
    parser.add_argument("--force", action="store_true", help="replace an existing --json OUT")
    args = parser.parse_args(argv)
    try:
        if args.out is not None:
            _check_out(Path(args.out), args.force, (args.results, args.ann))
        workers = default_workers() if args.workers is None else args.workers
        report = evaluate_file(args.results, args.ann, args.iou_type, args.max_dets, workers)
        print(report_text(report), end="")
        if args.out is not None:
            from lt_bench.fileio import atomic_write_json
            _check_out(Path(args.out), args.force, (args.results, args.ann))   # not made meanwhile
            print(f"-> {atomic_write_json(args.out, report)}")
    except LtBenchError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except ImportError as err:        # msgspec / pycocotools: the detection extra
        print(f"lt-bench lvis-eval needs the detection extra (pip install 'lt_bench[det]'): {err}", file=sys.stderr)
        return 2
    return 0


def _check_out(out: Path, force: bool, inputs: tuple) -> None:
    if any(out.exists() and Path(p).exists() and out.samefile(p) for p in inputs):
        raise ConfigError(f"--json {out} is one of the input files")
    if out.is_dir():
        raise ConfigError(f"--json {out}: is a folder; name the file to write")
    if out.exists() and not force:
        raise ConfigError(f"--json {out} exists; --force replaces it")


if __name__ == "__main__":
    sys.exit(main())
