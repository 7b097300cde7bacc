"""``lt-bench det-distributions --ann VAL.json --results DETS.json --categories 3 17 --out-dir DIR``:
where a detector puts a category's objects against where they really are (the GOL paper,
Section 3.1 and Figures 2, 5 and 8).

For a category c, the centre of each box ``[x, y, w, h]`` is divided by its image's width and
height (from the annotation file's ``images``) and counted in a G x G grid over the unit square
(``--grid``, default 20; a centre outside the image counts in the nearest border cell):

- the ground-truth distribution P_gt(u | c) counts the annotated objects of c;
- the predicted distribution P_pred(u | c) sums the scores of the detections of c (those with
  score >= ``--score-thr``), so that a confident detection weighs more than a doubtful one.

Each is normalised to sum to 1 and smoothed by mixing with the uniform distribution,
``(1 - eps) * P + eps / G**2`` (``--epsilon``, default 1e-3), so that every cell is positive and
the divergence is finite.  The divergence is KL(P_gt || P_pred) = sum_u P_gt(u) log(P_gt(u) /
P_pred(u)), in nats.  The paper compares the ground-truth object distribution with the predicted
one through the KL divergence; we take the ground truth as the reference and the detector's
distribution as its model (the usual direction: the expected extra log-loss of describing where
the objects are with the detector's distribution).  It is large where objects are and the
detector puts little score (missed places).  The reverse direction would instead be large
wherever score lands on a cell without ground truth, which for a rare category (a handful of
objects, so a few occupied cells) is nearly everywhere, even for a detector in the right places.
A category with no ground truth or no (scored) detections has no KL: ``null`` with the reason.
"""
from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lt_bench.detection.analysis.outputs import check_outputs, run_command, save_png
from lt_bench.detection.analysis.weight_norms import FREQUENCY_WORDS
from lt_bench.errors import ConfigError, DataError

KIND = "lt_bench.det_distributions"
JSON_NAME, PNG_NAME = "distributions.json", "distributions.png"
DEFAULT_GRID, DEFAULT_EPSILON = 20, 1e-3


def centre_cells(boxes: np.ndarray, sizes: np.ndarray, grid: int) -> np.ndarray:
    """Flat cell index (row * grid + col) of each box centre: row from the image's top,
    col from its left; ``boxes`` [n, 4] as [x, y, w, h], ``sizes`` [n, 2] as (width, height)."""
    cx = (boxes[:, 0] + boxes[:, 2] / 2) / sizes[:, 0]
    cy = (boxes[:, 1] + boxes[:, 3] / 2) / sizes[:, 1]
    col = np.clip(np.floor(cx * grid), 0, grid - 1).astype(np.int64)
    row = np.clip(np.floor(cy * grid), 0, grid - 1).astype(np.int64)
    return row * grid + col


def histogram(cells: np.ndarray, weights: np.ndarray | None, grid: int) -> np.ndarray:
    """[grid, grid] sum of ``weights`` (1 each when None) per cell."""
    return np.bincount(cells, weights=weights, minlength=grid * grid).astype(np.float64).reshape(grid, grid)


def smoothed(hist: np.ndarray, epsilon: float) -> np.ndarray:
    """``hist`` normalised to sum to 1, mixed with the uniform distribution: (1 - eps) P + eps / cells."""
    return (1 - epsilon) * (hist / hist.sum()) + epsilon / hist.size


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) = sum p log(p / q), in nats, for strictly positive distributions."""
    return float(np.sum(p * np.log(p / q)))


def _read_ground_truth(path: str | os.PathLike) -> dict[str, Any]:
    """The annotation file, with images checked to have positive width and height."""
    from lt_bench.detection.results_file import read_annotations
    if not Path(path).is_file():
        raise DataError(f"the annotation file {path} does not exist" if not Path(path).exists()
                        else f"the annotation file {path} is not a file")
    data = read_annotations(path)
    for section in ("images", "annotations", "categories"):
        if not isinstance(data.get(section), list):
            raise DataError(f"{path}: an LVIS annotation file needs an {section!r} list")
    for img in data["images"]:
        if not (isinstance(img, dict) and isinstance(img.get("id"), int)
                and all(_positive(img.get(k)) for k in ("width", "height"))):
            raise DataError(f"{path}: image {img.get('id') if isinstance(img, dict) else img!r} needs an integer id "
                            "and a positive width and height")
    for cat in data["categories"]:
        if not (isinstance(cat, dict) and isinstance(cat.get("id"), int)):
            raise DataError(f"{path}: category {cat!r:.80} has no integer id")
    return data


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def resolve_categories(tokens: Sequence[str | int], categories: Sequence[Mapping[str, Any]],
                       source: str) -> list[Mapping[str, Any]]:
    """The categories named by id (digits) or name, in the order given, each once; ConfigError
    naming an unknown one (with the closest names)."""
    by_id = {c["id"]: c for c in categories}
    by_name = {str(c.get("name")): c for c in categories}
    chosen: list[Mapping[str, Any]] = []
    for token in tokens:
        text = str(token).strip()
        cat = by_id.get(int(text)) if text.lstrip("-").isdigit() else by_name.get(text)
        if cat is None:
            close = difflib.get_close_matches(text, list(by_name), n=3)
            raise ConfigError(f"unknown category {text!r} in {source} (give an id or a name"
                              + (f"; did you mean {', '.join(close)}?)" if close else ")"))
        if cat not in chosen:
            chosen.append(cat)
    if not chosen:
        raise ConfigError("--categories: name at least one category")
    return chosen


def distributions(ann: str | os.PathLike, results: str | os.PathLike, categories: Sequence[str | int],
                  grid: int = DEFAULT_GRID, score_thr: float = 0.0, epsilon: float = DEFAULT_EPSILON) -> dict[str, Any]:
    """The report (``distributions.json``): per category its id, name, frequency, ground-truth
    objects and images, detections and their summed score, KL(gt || pred) (or null and a
    reason), and both distributions (normalised, before smoothing; [row][col], row 0 the top)."""
    from lt_bench.detection.results_file import read_results
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
        raise ConfigError(f"--grid must be a positive integer, not {grid!r}")
    if not 0 < epsilon < 1:
        raise ConfigError(f"--epsilon must be in (0, 1), not {epsilon!r}")
    if not math.isfinite(score_thr):
        raise ConfigError(f"--score-thr must be a number, not {score_thr!r}")
    data = _read_ground_truth(ann)
    chosen = resolve_categories(categories, data["categories"], str(ann))
    wanted = {c["id"] for c in chosen}
    if not Path(results).is_file():
        raise DataError(f"the results file {results} does not exist" if not Path(results).exists()
                        else f"the results file {results} is not a file")
    dets = read_results(results, masks="skip")
    if dets["bbox"] is None and len(dets["score"]):
        raise DataError(f"{results}: the detections have no bbox; the centres need boxes")
    sizes = {img["id"]: (float(img["width"]), float(img["height"])) for img in data["images"]}
    gt: dict[int, list] = {c: [] for c in wanted}
    for a in data["annotations"]:
        if isinstance(a, dict) and a.get("category_id") in wanted:
            box = a.get("bbox")
            if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)):
                raise DataError(f"{ann}: annotation {a.get('id')} has no bbox [x, y, w, h] of 4 numbers")
            if a.get("image_id") not in sizes:
                raise DataError(f"{ann}: annotation {a.get('id')} is on image {a.get('image_id')!r}, "
                                "which the images list does not hold")
            gt[a["category_id"]].append((*box, *sizes[a["image_id"]], a["image_id"]))
    image_ids = np.array(sorted(sizes), dtype=np.int64)
    image_sizes = np.array([sizes[i] for i in image_ids], dtype=np.float64).reshape(-1, 2)
    out = []
    for cat in chosen:
        rows = np.array(gt[cat["id"]], dtype=np.float64).reshape(-1, 7)
        gt_hist = histogram(centre_cells(rows[:, :4], rows[:, 4:6], grid), None, grid) if len(rows) else None
        keep = (dets["category_id"] == cat["id"]) & (dets["score"] >= score_thr)
        scores, det_images = dets["score"][keep], dets["image_id"][keep]
        if (scores < 0).any():
            raise DataError(f"{results}: category {cat['id']} has a negative score ({scores.min():g}); the predicted "
                            "distribution weighs detections by their scores")
        pos = np.clip(np.searchsorted(image_ids, det_images), 0, max(len(image_ids) - 1, 0))
        unknown = image_ids[pos] != det_images if len(image_ids) else np.ones(len(det_images), bool)
        if unknown.any():
            raise DataError(f"{results}: a detection of category {cat['id']} is on image "
                            f"{int(det_images[unknown][0])}, which {ann} does not list (its size is needed)")
        weight = float(scores.sum())
        pred_hist = (histogram(centre_cells(dets["bbox"][keep], image_sizes[pos], grid), scores, grid)
                     if weight > 0 else None)
        reasons = [r for r, missing in ((f"no ground-truth objects in {Path(ann).name}", gt_hist is None),
                                        (f"no detections with score >= {score_thr:g}" if not len(scores) else
                                         "the detections' scores sum to 0", pred_hist is None)) if missing]
        kl = None if reasons else kl_divergence(smoothed(gt_hist, epsilon), smoothed(pred_hist, epsilon))
        out.append({"id": cat["id"], "name": str(cat.get("name", cat["id"])), "frequency": cat.get("frequency"),
                    "gt_objects": len(rows), "gt_images": len(set(rows[:, 6].tolist())),
                    "detections": int(keep.sum()), "detection_weight": weight,
                    "kl": kl, "kl_reason": "; ".join(reasons) or None,
                    "gt_distribution": None if gt_hist is None else (gt_hist / gt_hist.sum()).tolist(),
                    "pred_distribution": None if pred_hist is None else (pred_hist / pred_hist.sum()).tolist()})
    return {"kind": KIND, "annotations": str(ann), "results": str(results), "grid": grid, "score_thr": score_thr,
            "epsilon": epsilon, "kl": "KL(gt || pred) in nats, both distributions mixed with the uniform: "
                                      "(1 - epsilon) P + epsilon / grid**2",
            "layout": "distribution[row][col]: row = centre y / image height from the top, col = centre x / width",
            "categories": out}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_distributions(report: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Per category a row: the ground-truth heat map | the predicted one (one square-root colour
    scale per row, so that thin mass stays visible), the KL in the row's title; an empty side says why."""
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure
    cats = report["categories"]
    grid = report["grid"]
    fig = Figure(figsize=(8.2, 0.4 + 3.5 * len(cats)), layout="constrained")
    thr = f", score ≥ {report['score_thr']:g}" if report["score_thr"] > 0 else ""
    fig.suptitle(f"Object centres on a {grid}×{grid} grid of the image: ground truth | detections "
                 f"(score-weighted{thr})", fontsize=12)
    for sub, cat in zip(np.atleast_1d(fig.subfigures(len(cats), 1)), cats):
        group = FREQUENCY_WORDS.get(cat["frequency"], cat["frequency"])
        kl = f"KL(gt ‖ pred) = {cat['kl']:.3f} nats" if cat["kl"] is not None else f"no KL: {cat['kl_reason']}"
        sub.suptitle(f"{cat['name']} (id {cat['id']}{', ' + group if group else ''}): {kl}", fontsize=11)
        axes = sub.subplots(1, 2)
        dists = [np.array(d) if d is not None else None for d in (cat["gt_distribution"], cat["pred_distribution"])]
        vmax = max((d.max() for d in dists if d is not None), default=1.0)
        titles = (f"ground truth: {cat['gt_objects']} objects in {cat['gt_images']} images",
                  f"detections: {cat['detections']}, summed score {cat['detection_weight']:.3g}")
        empty = ("no ground-truth objects", "no detections" if not cat["detections"] else "scores sum to 0")
        image = None
        for ax, dist, title, none in zip(axes, dists, titles, empty):
            ax.set_title(title, fontsize=10)
            if dist is None:
                ax.text(0.5, 0.5, none, ha="center", va="center", color="0.4", transform=ax.transAxes)
                ax.set_xlim(0, 1)
                ax.set_ylim(1, 0)
            else:
                image = ax.imshow(dist, extent=(0, 1, 1, 0), cmap="magma", norm=PowerNorm(0.5, vmin=0, vmax=vmax),
                                  interpolation="nearest")
            ax.set_aspect("equal")
            ax.set_xticks([0, 0.25, 0.5, 0.75, 1])
            ax.set_yticks([0, 0.25, 0.5, 0.75, 1])
            ax.set_xlabel("centre x / image width")
            ax.set_ylabel("centre y / image height")
        if image is not None:
            sub.colorbar(image, ax=list(axes), shrink=0.85, label="share of objects / of score (square-root scale)")
    return save_png(fig, out)


def main(argv: list[str] | None = None) -> int:
    """``lt-bench det-distributions --ann VAL.json --results DETS.json --categories ID|NAME ...
    --out-dir DIR [--grid 20] [--score-thr 0] [--epsilon 1e-3] [--overwrite]``."""
    parser = argparse.ArgumentParser(
        prog="lt-bench det-distributions",
        description="compare where a category's objects are (ground truth) with where a detector finds them "
                    "(score-weighted detections): box centres on a grid of the normalised image, KL(gt || pred) "
                    "per category (GOL, Section 3.1); writes DIR/distributions.json and DIR/distributions.png")
    parser.add_argument("--ann", required=True, help="the LVIS annotation file (e.g. lvis_v1_val.json)")
    parser.add_argument("--results", required=True, help="the detections (LVIS/COCO results format, with bbox)")
    parser.add_argument("--categories", nargs="+", required=True, help="category ids or names")
    parser.add_argument("--grid", type=int, default=DEFAULT_GRID, help="cells per side (default 20)")
    parser.add_argument("--score-thr", type=float, default=0.0, help="keep detections with score >= this (default 0)")
    parser.add_argument("--epsilon", type=float, default=DEFAULT_EPSILON,
                        help="smoothing: each distribution is mixed with the uniform one, (1 - eps) P + eps / grid^2 "
                             "(default 1e-3)")
    parser.add_argument("--out-dir", required=True, help="the folder for distributions.json and distributions.png")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    def body() -> None:
        folder = Path(args.out_dir)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--out-dir {folder} is a file, not a folder")
        outputs = [folder / JSON_NAME, folder / PNG_NAME]
        check_outputs(outputs, (args.ann, args.results), args.overwrite)
        report = distributions(args.ann, args.results, args.categories, args.grid, args.score_thr, args.epsilon)
        for cat in report["categories"]:
            kl = f"KL {cat['kl']:.4f}" if cat["kl"] is not None else f"no KL ({cat['kl_reason']})"
            print(f"{cat['id']:>5} {cat['name']:<28} {cat['frequency'] or '-'}  {cat['gt_objects']:>6} gt  "
                  f"{cat['detections']:>7} detections (score {cat['detection_weight']:.4g})  {kl}")
        check_outputs(outputs, (args.ann, args.results), args.overwrite)     # not made meanwhile
        from lt_bench.fileio import atomic_write_json
        print(f"-> {atomic_write_json(outputs[0], report)}")
        print(f"-> {plot_distributions(report, outputs[1])}")

    return run_command("lt-bench det-distributions", body)


if __name__ == "__main__":
    sys.exit(main())
