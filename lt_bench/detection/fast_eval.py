"""Exact LVIS evaluation (lvis-api 0.5.3's numbers) that visits only the pairs that can count.

lvis-api's ``LVISEval`` keeps a dict per detection and loops over every image x category cell
(24 million for LVIS v1 val), although LVIS's federated rules make nearly all of them empty:
a detection only counts in a category the image is annotated with (IoU and greedy matching)
or lists in ``neg_category_ids`` (a false positive, no IoU needed).  Here detections are numpy
columns and only those pairs are touched; ``pycocotools.mask.iou`` gives the IoUs.

Every rule is lvis-api's (``lvis/results.py``, ``lvis/eval.py``):

* ``LVISResults``: at most ``max_dets`` detections per image across categories, the
  top-scoring ones (a stable sort: among equal scores the earlier result is kept); a
  detection's area is its box's w*h when the results carry ``bbox``, else its mask's area.
* ``_prepare``: ground truth and detections need 0 < area < inf (``get_ann_ids``);
  detections in categories the image neither contains (after that filter) nor lists as
  negative are dropped; a ground truth's ``ignore`` flag is kept; there is no crowd handling
  (lvis passes iscrowd = 0 for every ground truth).
* ``evaluate_img``: detections by score (stable), each in turn taking the unmatched ground
  truth of highest IoU >= the threshold (the later one on equal IoU), ground truth in the area
  range preferred; unmatched detections outside the area range or in a
  ``not_exhaustive_category_ids`` category are ignored.  A match to a ground truth of id 0
  counts as unmatched in ``accumulate`` (lvis tests ``dt_m == 0``), here too.
* ``accumulate``/``summarize``: per category and area range every detection by score (stable:
  image id, then the image's own order), cumulative tp/fp, interpolated precision at 101
  recall points, means over entries > -1.

Sharding: ``evaluate_images`` works on a subset of the images (a DDP rank's) and returns a
small ``PartialEval``; ``merge`` of the parts on one rank gives exactly the unsharded result.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from lt_bench.detection.forked import can_fork, forked_map, runs
from lt_bench.errors import ConfigError, DataError

# lvis.eval.Params, value for value
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RNG = np.array([[0 ** 2, 1e5 ** 2], [0 ** 2, 32 ** 2], [32 ** 2, 96 ** 2], [96 ** 2, 1e5 ** 2]])
AREA_LBL = ("all", "small", "medium", "large")
FREQ_LBL = ("r", "c", "f")
_THR = np.minimum(IOU_THRS, 1 - 1e-10)        # evaluate_img's min([iou_thr, 1 - 1e-10])
_T, _A, _R = len(IOU_THRS), len(AREA_RNG), len(REC_THRS)
_IGNORED, _TP, _FP = 0, 1, 2                  # a detection's status per (area range, threshold)


@dataclass
class PartialEval:
    """The matching results of one shard of images, enough to merge shards exactly: per kept
    detection its category, image and score, its result-list position (the stable tie-break
    within an image) and packed tp / fp bits over (area range, IoU threshold); per category and
    area range the number of non-ignored ground truths."""

    image_ids: np.ndarray     # the shard's images (sorted)
    num_gt: np.ndarray        # [K, A] int64
    cat: np.ndarray           # [n] category index (into the sorted category ids)
    img: np.ndarray           # [n] image index (into the sorted image ids)
    pos: np.ndarray           # [n] position in the shard's result list
    score: np.ndarray         # [n] float64
    tp_bits: np.ndarray       # [n, ceil(A*T/8)] uint8, np.packbits of [A*T] booleans
    fp_bits: np.ndarray

    def __len__(self) -> int:
        return len(self.score)


@dataclass
class _Columns:
    image_id: np.ndarray
    category_id: np.ndarray
    score: np.ndarray
    bbox: np.ndarray | None          # [n, 4] xywh, when the results carry boxes
    segmentation: Sequence | None    # RLE (or polygon) per detection, when they carry masks


class FastLVISEval:
    """lvis-api's LVISEval on numpy columns.  ``evaluate(detections)`` returns lvis-api's
    summary dict and leaves ``precision`` [T, R, K, A] and ``recall`` [T, K, A] behind."""

    def __init__(self, gt: Mapping | str | Path | Any, iou_type: str = "bbox", max_dets: int = 300,
                 source: str | None = None):
        """``gt``: an LVIS json path, its loaded dict or an ``lvis.LVIS``; ``source``: how
        error messages name it (default: the path)."""
        if iou_type not in ("bbox", "segm"):
            raise ConfigError(f"iou_type must be 'bbox' or 'segm', not {iou_type!r}")
        self.iou_type, self.max_dets = iou_type, int(max_dets)
        self.dataset, self.source = _load(gt)
        self.source = source or self.source
        self.precision: np.ndarray | None = None
        self.recall: np.ndarray | None = None
        self.results: dict[str, float] = {}
        self._index_categories()
        self._index_images()
        self._index_annotations()

    # ---- ground truth -------------------------------------------------------------------
    def _index_categories(self) -> None:
        cats = self._list("categories")
        ids = _ints(cats, "id", self.source, "category")
        _unique_or_fail(ids, self.source, "category")
        self.cat_ids = np.sort(ids)
        self.file_cat_ids = ids.tolist()          # json order (mmdet's label -> category map)
        by_id = {int(c["id"]): c for c in cats}
        self.freq_groups: list[list[int]] = [[] for _ in FREQ_LBL]
        for k, cat_id in enumerate(self.cat_ids.tolist()):
            frequency = by_id[cat_id].get("frequency")
            if frequency not in FREQ_LBL:
                raise DataError(f"{self.source}: category {cat_id} has frequency {frequency!r}, "
                                f"not one of {FREQ_LBL}")
            self.freq_groups[FREQ_LBL.index(frequency)].append(k)

    def _index_images(self) -> None:
        images = self._list("images")
        ids = _ints(images, "id", self.source, "image")
        _unique_or_fail(ids, self.source, "image")
        self.img_ids = np.sort(ids)
        self._images = [images[i] for i in np.argsort(ids, kind="stable")]
        self._neg_keys = self._image_category_keys("neg_category_ids")
        self._nel_keys = self._image_category_keys("not_exhaustive_category_ids")

    def _image_category_keys(self, name: str) -> np.ndarray:
        """(image, category) keys of an image-level category list (categories not in the file
        are left out: no detection is evaluated in them)."""
        lists = []
        for img in self._images:
            if not isinstance(img.get(name), list):
                raise DataError(f"{self.source}: image {img['id']} has no {name!r} list")
            lists.append(img[name])
        image = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
        cat = self._cat_index(np.fromiter(chain.from_iterable(lists), np.int64, len(image)))
        return np.unique(image[cat >= 0] * len(self.cat_ids) + cat[cat >= 0])

    def _index_annotations(self) -> None:
        anns = self._list("annotations")
        ids = _ints(anns, "id", self.source, "annotation")
        _unique_or_fail(ids, self.source, "annotation")
        img = self._img_index(_ints(anns, "image_id", self.source, "annotation", ids), "annotation", ids)
        cat = self._cat_index(_ints(anns, "category_id", self.source, "annotation", ids))
        if (cat < 0).any():
            bad = int(np.flatnonzero(cat < 0)[0])
            raise DataError(f"{self.source}: annotation {ids[bad]} has category {anns[bad]['category_id']}, "
                            "which is not in 'categories'")
        area = _floats(anns, "area", self.source, ids)
        keep = np.flatnonzero((area > 0) & (area < np.inf))       # LVIS.get_ann_ids
        key = img[keep] * len(self.cat_ids) + cat[keep]
        order = np.argsort(key, kind="stable")                    # pairs; file order within
        keep, self._g_key = keep[order], key[order]
        self._g_ann = keep                                        # index into the annotations
        self._g_img, self._g_cat, self._g_id = img[keep], cat[keep], ids[keep]
        ignore = np.fromiter((bool(anns[i].get("ignore", 0)) for i in keep.tolist()), bool, len(keep))
        a = area[keep]
        self._g_ig = ignore[None] | (a[None] < AREA_RNG[:, :1]) | (a[None] > AREA_RNG[:, 1:])   # [A, n]
        self._pos_keys = np.unique(self._g_key)
        self._allowed_keys = np.union1d(self._pos_keys, self._neg_keys)
        if self.iou_type == "bbox":
            try:
                boxes = [anns[i]["bbox"] for i in keep.tolist()]
                self._g_box = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(f"{self.source}: an annotation has no valid 'bbox' ({err!r})") from None

    def _list(self, name: str) -> list:
        value = self.dataset.get(name)
        if not isinstance(value, list):
            raise DataError(f"{self.source}: no {name!r} list")
        return value

    def _cat_index(self, cat_ids: np.ndarray) -> np.ndarray:
        """Index into the sorted category ids, -1 for ids not in the file."""
        if not len(self.cat_ids):
            return np.full(len(cat_ids), -1)
        idx = np.searchsorted(self.cat_ids, cat_ids).clip(max=len(self.cat_ids) - 1)
        return np.where(self.cat_ids[idx] == cat_ids, idx, -1)

    def _img_index(self, image_ids: np.ndarray, what: str, ids: np.ndarray | None = None) -> np.ndarray:
        idx = np.searchsorted(self.img_ids, image_ids).clip(max=max(len(self.img_ids) - 1, 0))
        bad = np.flatnonzero(self.img_ids[idx] != image_ids) if len(self.img_ids) else np.arange(len(image_ids))
        if len(bad):
            i = int(bad[0])
            name = f"{what} {ids[i]}" if ids is not None else f"{what} #{i}"
            raise DataError(f"{name} refers to image {image_ids[i]}, which is not in {self.source}")
        return idx

    # ---- per-shard evaluation -----------------------------------------------------------
    def evaluate_images(self, image_ids: Sequence[int] | np.ndarray | None, detections: Any) -> PartialEval:
        """Match the detections of the given images (None: all images of the file) and keep
        what ``merge`` needs.  Detections of other images are left out, so every rank may pass
        the list it holds; an image's detections must all be in the same shard."""
        cols = _columns(detections, self.iou_type == "segm")
        img = self._img_index(cols.image_id, "detection")
        if image_ids is None:
            shard = np.arange(len(self.img_ids))
            pos = np.arange(len(img))
        else:
            shard = np.unique(self._img_index(np.asarray(image_ids, dtype=np.int64).reshape(-1), "shard image"))
            pos = np.flatnonzero(np.isin(img, shard))
        pos = self._limit(pos, img, cols.score)

        K = len(self.cat_ids)
        cat = self._cat_index(cols.category_id[pos])     # results in unknown categories: dropped
        pos, key = pos[cat >= 0], img[pos[cat >= 0]] * K + cat[cat >= 0]
        ok = np.isin(key, self._allowed_keys)             # federated: present or negative
        pos, key = pos[ok], key[ok]
        area = self._det_area(cols, pos)
        ok = (area > 0) & (area < np.inf)
        pos, key, area = pos[ok], key[ok], area[ok]
        order = np.lexsort((pos, -cols.score[pos], key))          # pairs, then score (stable)
        pos, key, area = pos[order], key[order], area[order]

        out = (area[None] < AREA_RNG[:, :1]) | (area[None] > AREA_RNG[:, 1:])
        nel = np.isin(key, self._nel_keys)
        ig_unmatched = out | nel[None]                                   # [A, n]
        status = np.broadcast_to(np.where(ig_unmatched, _IGNORED, _FP).astype(np.uint8)[:, None],
                                 (_A, _T, len(pos))).copy()
        self._match(cols, pos, key, ig_unmatched, status)

        gsel = np.isin(self._g_img, shard)
        num_gt = np.stack([np.bincount(self._g_cat[gsel & ~self._g_ig[a]], minlength=K) for a in range(_A)], 1)
        flat = status.reshape(_A * _T, -1).T
        return PartialEval(image_ids=self.img_ids[shard], num_gt=num_gt.astype(np.int64),
                           cat=(key % K).astype(np.int32), img=(key // K).astype(np.int32),
                           pos=pos.astype(np.int64), score=cols.score[pos].copy(),
                           tp_bits=np.packbits(flat == _TP, axis=1), fp_bits=np.packbits(flat == _FP, axis=1))

    def _limit(self, pos: np.ndarray, img: np.ndarray, score: np.ndarray) -> np.ndarray:
        """LVISResults.limit_dets_per_image: in images with more than max_dets results, the
        max_dets highest scores (Python's stable sort: earlier results first on ties)."""
        if self.max_dets < 0 or len(pos) == 0:
            return pos
        counts = np.bincount(img[pos], minlength=len(self.img_ids))
        over = counts[img[pos]] > self.max_dets
        if not over.any():
            return pos
        crowded = pos[over]
        crowded = crowded[np.lexsort((crowded, -score[crowded], img[crowded]))]
        im = img[crowded]
        starts = np.flatnonzero(np.r_[True, im[1:] != im[:-1]])
        rank = np.arange(len(im)) - np.repeat(starts, np.diff(np.r_[starts, len(im)]))
        return np.sort(np.concatenate([pos[~over], crowded[rank < self.max_dets]]))

    def _det_area(self, cols: _Columns, pos: np.ndarray) -> np.ndarray:
        """LVISResults: w*h of the box when the results carry boxes, else the mask's area."""
        if cols.bbox is not None:
            return cols.bbox[pos, 2] * cols.bbox[pos, 3]
        if len(pos) == 0:
            return np.zeros(0)
        try:
            # pycocotools 2.0.11's area() fails on lists of 256 or more under NumPy 2: chunks (the
            # masks of one chunk at a time, for columns that make them on demand)
            return np.concatenate([mask_utils.area(_take(cols.segmentation, pos[i:i + 255]))
                                   for i in range(0, len(pos), 255)]).astype(np.float64)
        except Exception as err:   # pycocotools raises plain Exception / TypeError
            raise DataError(f"detections without 'bbox' need compressed RLE masks ({err})") from None

    def _match(self, cols: _Columns, pos: np.ndarray, key: np.ndarray, ig_unmatched: np.ndarray,
               status: np.ndarray) -> None:
        """IoU and evaluate_img's greedy matching in every pair with ground truth and
        detections; writes the matched detections' status.  Pairs in which no detection reaches
        IoU 0.5 with two ground truths (nearly all) are matched together, vectorised: each
        ground truth then goes to the first detection (in score order) that reaches it."""
        bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True]) if len(key) else np.zeros(1, np.int64)
        starts, ends = bounds[:-1], bounds[1:]
        run_keys = key[starts]
        with_gt = np.isin(run_keys, self._pos_keys)
        starts, ends, run_keys = starts[with_gt], ends[with_gt], run_keys[with_gt]
        g_starts = np.searchsorted(self._g_key, run_keys, side="left")
        g_ends = np.searchsorted(self._g_key, run_keys, side="right")
        det_geom = self._det_geometry(cols, pos)
        easy_d, easy_g, easy_iou = [], [], []
        zeros = [0] * (int((g_ends - g_starts).max()) if len(g_ends) else 0)
        K = len(self.cat_ids)
        for s, e, gs, ge, pair in zip(starts.tolist(), ends.tolist(), g_starts.tolist(), g_ends.tolist(),
                                      run_keys.tolist()):
            ious = mask_utils.iou(det_geom(s, e, pair // K), self._gt_geometry(gs, ge, pair // K), zeros[:ge - gs])
            cand = ious >= _THR[0]
            per_det = cand.sum(1)
            if per_det.max() <= 1:
                rows = np.flatnonzero(per_det)
                cols_ = cand[rows].argmax(1)
                easy_d.append(s + rows)
                easy_g.append(gs + cols_)
                easy_iou.append(ious[rows, cols_])
            else:
                match = _greedy(ious, self._g_ig[:, gs:ge])
                a, t, d = np.nonzero(match >= 0)
                self._mark(status, ig_unmatched, a, t, s + d, gs + match[a, t, d])
        if easy_d:
            d, g, iou = np.concatenate(easy_d), np.concatenate(easy_g), np.concatenate(easy_iou)
            for t in range(_T):
                reach = np.flatnonzero(iou >= _THR[t])
                _, first = np.unique(g[reach], return_index=True)    # first detection per gt
                win = reach[first]
                n = len(win)
                self._mark(status, ig_unmatched, np.repeat(np.arange(_A), n), np.full(_A * n, t),
                           np.tile(d[win], _A), np.tile(g[win], _A))

    def _mark(self, status: np.ndarray, ig_unmatched: np.ndarray, a: np.ndarray, t: np.ndarray,
              d: np.ndarray, g: np.ndarray) -> None:
        """A match of detection d to ground truth g: ignored if g is ignored in that area range;
        a match to id 0 is unmatched for accumulate (lvis's ``dt_m == 0``)."""
        id0 = self._g_id[g] == 0
        ignored = self._g_ig[a, g] | (id0 & ig_unmatched[a, d])
        status[a, t, d] = np.where(ignored, _IGNORED, np.where(id0, _FP, _TP))

    def _det_geometry(self, cols: _Columns, pos: np.ndarray):
        """A function (start, end, image index) -> the detections' boxes or RLEs for iou."""
        if self.iou_type == "bbox":
            if cols.bbox is not None:
                boxes = cols.bbox[pos]
            else:        # LVISResults: ann["bbox"] = toBbox(segmentation)
                boxes = np.concatenate([np.asarray(mask_utils.toBbox(_take(cols.segmentation, pos[i:i + 4096])),
                                                   dtype=np.float64).reshape(-1, 4)
                                        for i in range(0, len(pos), 4096)] or [np.zeros((0, 4))])
            return lambda s, e, image: boxes[s:e]
        positions = pos.tolist()

        def rles(s: int, e: int, image: int) -> list:
            img = self._images[image]
            out = []
            for i in positions[s:e]:
                segm = cols.segmentation[i] if cols.segmentation is not None else None
                if segm is None:   # LVISResults: a box result's segmentation is the box polygon
                    x1, y1, w, h = cols.bbox[i].tolist()
                    segm = [[x1, y1, x1, y1 + h, x1 + w, y1 + h, x1 + w, y1]]
                out.append(_to_rle(segm, img))
            return out
        return rles

    def _gt_geometry(self, gs: int, ge: int, image: int):
        if self.iou_type == "bbox":
            return self._g_box[gs:ge]
        anns, img = self.dataset["annotations"], self._images[image]
        out = []
        for i in self._g_ann[gs:ge].tolist():
            if "segmentation" not in anns[i]:
                raise DataError(f"{self.source}: annotation {anns[i]['id']} has no 'segmentation'")
            out.append(_to_rle(anns[i]["segmentation"], img))
        return out

    # ---- merge, accumulate, summarize ---------------------------------------------------
    def merge(self, partials: Sequence[PartialEval], workers: int = 1) -> dict[str, float]:
        """Accumulate and summarize the shards' results (each image in one shard only).
        ``workers`` > 1 accumulates runs of categories in that many forked processes (each
        category's numbers are its own: the same result)."""
        K = len(self.cat_ids)
        seen = np.concatenate([p.image_ids for p in partials]) if partials else np.zeros(0, np.int64)
        uniq, counts = np.unique(seen, return_counts=True)
        if (counts > 1).any():
            raise DataError(f"image {uniq[counts > 1][0]} was evaluated in two shards")
        if any(p.num_gt.shape != (K, _A) for p in partials):
            raise DataError(f"a shard was evaluated against another ground truth than {self.source}")
        num_gt = sum((p.num_gt for p in partials), np.zeros((K, _A), np.int64))
        cat, img, pos, score, tp_bits, fp_bits = (
            np.concatenate([getattr(p, f) for p in partials]) if partials else np.zeros(0)
            for f in ("cat", "img", "pos", "score", "tp_bits", "fp_bits"))
        order = np.lexsort((pos, img, -score, cat))    # accumulate's stable sort by score
        bounds = np.searchsorted(cat[order], np.arange(K + 1))
        self.precision = -np.ones((_T, _R, K, _A))
        self.recall = -np.ones((_T, K, _A))
        todo = np.flatnonzero(num_gt.any(1))
        state = (order, bounds, num_gt, tp_bits, fp_bits)
        if workers <= 1 or len(todo) < 2 or not can_fork():
            self._accumulate(todo, *state)
            return self.summarize()
        # contiguous runs of categories of about equal detection counts
        category_runs = runs(todo, bounds[todo + 1] - bounds[todo] + 1, workers)
        for ks, precision, recall in forked_map(_accumulate_run, category_runs, (self, state)):
            self.precision[:, :, ks], self.recall[:, ks] = precision, recall
        return self.summarize()

    def _accumulate(self, categories: np.ndarray, order: np.ndarray, bounds: np.ndarray, num_gt: np.ndarray,
                    tp_bits: np.ndarray, fp_bits: np.ndarray) -> None:
        """accumulate for these categories: precision and recall of each, in place."""
        for k in categories.tolist():
            rows = order[bounds[k]:bounds[k + 1]]
            tps = np.unpackbits(tp_bits[rows], axis=1, count=_A * _T).T.reshape(_A, _T, -1)
            fps = np.unpackbits(fp_bits[rows], axis=1, count=_A * _T).T.reshape(_A, _T, -1)
            areas = np.flatnonzero(num_gt[k])
            self._precision_at_recall(np.cumsum(tps[areas], axis=-1).astype(dtype=float),
                                      np.cumsum(fps[areas], axis=-1).astype(dtype=float), num_gt[k, areas], k, areas)

    def _precision_at_recall(self, tp: np.ndarray, fp: np.ndarray, num_gt: np.ndarray, k: int,
                             areas: np.ndarray) -> None:
        """accumulate's inner loop for one category: the area ranges with ground truth, all
        thresholds at once (tp, fp: cumulative sums [areas, T, n]), the same float operations."""
        n = tp.shape[-1]
        if n == 0:
            self.recall[:, k, areas] = 0
            self.precision[:, :, k, areas] = 0
            return
        rc = tp / num_gt[:, None, None]
        pr = tp / (fp + tp + np.spacing(1))
        pr = np.maximum.accumulate(pr[..., ::-1], axis=-1)[..., ::-1]     # max precision to the right
        self.recall[:, k, areas] = rc[..., -1].T
        for i, a in enumerate(areas.tolist()):
            for t in range(_T):
                idx = np.searchsorted(rc[i, t], REC_THRS, side="left")
                q = np.zeros(_R)
                inside = idx < n
                q[inside] = pr[i, t, idx[inside]]
                self.precision[t, :, k, a] = q

    def _summarize(self, kind: str, iou_thr: float | None = None, area_rng: str = "all",
                   freq_group_idx: int | None = None) -> float:
        aidx = [i for i, label in enumerate(AREA_LBL) if label == area_rng]
        s = self.precision if kind == "ap" else self.recall
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRS)[0]]
        if kind == "ap":
            s = s[:, :, self.freq_groups[freq_group_idx], aidx] if freq_group_idx is not None else s[:, :, :, aidx]
        else:
            s = s[:, :, aidx]
        valid = s[s > -1]
        return float(np.mean(valid)) if len(valid) else -1.0

    def summarize(self) -> dict[str, float]:
        """lvis-api's summary: AP, AP50, AP75, APs/m/l, APr/c/f, AR@max_dets, ARs/m/l@max_dets."""
        if self.precision is None:
            raise RuntimeError("evaluate() or merge() first")
        r = {"AP": self._summarize("ap"), "AP50": self._summarize("ap", iou_thr=0.50),
             "AP75": self._summarize("ap", iou_thr=0.75)}
        for label in ("small", "medium", "large"):
            r[f"AP{label[0]}"] = self._summarize("ap", area_rng=label)
        for i, group in enumerate(FREQ_LBL):
            r[f"AP{group}"] = self._summarize("ap", freq_group_idx=i)
        r[f"AR@{self.max_dets}"] = self._summarize("ar")
        for label in ("small", "medium", "large"):
            r[f"AR{label[0]}@{self.max_dets}"] = self._summarize("ar", area_rng=label)
        self.results = r
        return dict(r)

    def per_category_ap(self) -> dict[int, float | None]:
        """Each category's AP (area "all"): the mean of its precision over the IoU thresholds
        and recall points where defined, as mmdet's ``classwise`` table reads lvis-api's
        precision array; None for a category without ground truth.  Keys: category ids in
        ascending order (lvis-api's K axis)."""
        if self.precision is None:
            raise RuntimeError("evaluate() or merge() first")
        area = AREA_LBL.index("all")
        out: dict[int, float | None] = {}
        for k, cat_id in enumerate(self.cat_ids.tolist()):
            values = self.precision[:, :, k, area]
            values = values[values > -1]
            out[int(cat_id)] = float(values.mean()) if values.size else None
        return out

    def evaluate(self, detections: Any, workers: int = 1) -> dict[str, float]:
        """All images: lvis-api's ``LVISEval(gt, LVISResults(gt, dets, max_dets)).run()``.
        ``workers`` > 1 matches shards of the images in that many forked processes, which share
        the detections and this evaluator copy-on-write, and merges them on return: the numbers
        are the same (``merge`` is exact); where fork is unavailable, one process does it all."""
        if workers <= 1 or len(self.img_ids) < 2 or not can_fork():
            return self.merge([self.evaluate_images(None, detections)])
        cols = _columns(detections, self.iou_type == "segm")          # once, before the fork
        columns = {"image_id": cols.image_id, "category_id": cols.category_id, "score": cols.score,
                   "bbox": cols.bbox, "segmentation": cols.segmentation}
        # contiguous image shards of about equal detection counts
        per_image = np.bincount(self._img_index(cols.image_id, "detection"), minlength=len(self.img_ids))
        shards = runs(self.img_ids, per_image, workers)
        return self.merge(forked_map(_evaluate_shard, shards, (self, columns)), workers)


def _evaluate_shard(shared: tuple, image_ids: np.ndarray) -> PartialEval:
    evaluator, columns = shared
    return evaluator.evaluate_images(image_ids, columns)


def _accumulate_run(shared: tuple, categories: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    evaluator, state = shared
    evaluator._accumulate(categories, *state)
    return categories, evaluator.precision[:, :, categories], evaluator.recall[:, categories]


def fast_lvis_evaluate(gt: Any, detections: Any, iou_type: str = "segm", max_dets: int = 300) -> dict[str, float]:
    """Same contract as ``lt_bench.detection.evaluation.lvis_evaluate``, same numbers."""
    return FastLVISEval(gt, iou_type, max_dets).evaluate(detections)


def _greedy(ious: np.ndarray, gt_ig: np.ndarray) -> np.ndarray:
    """evaluate_img's matching of one pair for every area range and threshold at once:
    ``match[a, t, d]`` = the ground truth (column of ``ious``) detection d takes, or -1.
    Detection by detection (rows are in score order): among the unmatched ground truths with
    IoU >= threshold, the non-ignored ones if any, the highest IoU, the last on equal IoU."""
    D, G = ious.shape
    reach = ious[:, None, :] >= _THR[None, :, None]              # [D, T, G]
    taken = np.zeros((_A, _T, G), bool)
    match = np.full((_A, _T, D), -1, np.int64)
    kept = ~gt_ig[:, None, :]                                     # [A, 1, G]
    for d in np.flatnonzero(reach[:, 0].any(1)).tolist():
        cand = reach[d][None] & ~taken                            # [A, T, G]
        preferred = cand & kept
        use = np.where(preferred.any(-1, keepdims=True), preferred, cand)
        val = np.where(use, ious[d], -1.0)
        best = (val == val.max(-1, keepdims=True)) & use
        last = G - 1 - np.argmax(best[..., ::-1], axis=-1)
        a, t = np.nonzero(use.any(-1))
        g = last[a, t]
        taken[a, t, g] = True
        match[a, t, d] = g
    return match


def _to_rle(segm: Any, img: Mapping) -> dict:
    """LVIS.ann_to_rle: polygons are merged into one RLE, uncompressed RLE compressed."""
    if isinstance(segm, list):
        return mask_utils.merge(mask_utils.frPyObjects(segm, img["height"], img["width"]))
    if isinstance(segm.get("counts"), list):
        return mask_utils.frPyObjects(segm, img["height"], img["width"])
    return segm


def _take(masks: Sequence, pos: np.ndarray) -> list:
    """``[masks[i] for i in pos]``; a column that makes its masks on demand
    (``results_file.MaskColumn``) makes only these."""
    take = getattr(masks, "take", None)
    return take(pos) if callable(take) and not isinstance(masks, np.ndarray) else [masks[i] for i in pos.tolist()]


def _columns(detections: Any, need_masks: bool) -> _Columns:
    """Result dicts (image_id, category_id, score, bbox and/or segmentation) or a dict of
    columns with those keys (bbox as an [n, 4] array, segmentation as a sequence: a list, or
    ``results_file.MaskColumn``, which makes a mask's dict only when asked).  Masks are only
    kept where they are used (segm, or areas of results without boxes)."""
    if isinstance(detections, Mapping):
        n = len(detections["score"])
        bbox, segm = detections.get("bbox"), detections.get("segmentation")
        cols = _Columns(np.asarray(detections["image_id"], dtype=np.int64).reshape(n),
                        np.asarray(detections["category_id"], dtype=np.int64).reshape(n),
                        np.asarray(detections["score"], dtype=np.float64).reshape(n),
                        None if bbox is None else np.asarray(bbox, dtype=np.float64).reshape(n, 4),
                        None if segm is None else segm if isinstance(segm, Sequence) else list(segm))
    else:
        detections = list(detections)
        n = len(detections)
        try:
            image_id = np.fromiter(map(itemgetter("image_id"), detections), np.int64, n)
            category_id = np.fromiter(map(itemgetter("category_id"), detections), np.int64, n)
            score = np.fromiter(map(itemgetter("score"), detections), np.float64, n)
        except (KeyError, TypeError, ValueError) as err:
            bad = next((i for i, d in enumerate(detections)
                        if not {"image_id", "category_id", "score"} <= set(d)), None)
            raise DataError(f"detection #{bad}: needs image_id, category_id and score ({err!r})") from None
        # lvis reads the area rule off the first result (and fails on others unlike it)
        mixed = DataError("some detections have 'bbox' and some have not")
        bbox = None
        if n and "bbox" in detections[0]:
            try:
                bbox = np.fromiter(chain.from_iterable(map(itemgetter("bbox"), detections)), np.float64, 4 * n)
            except KeyError:
                raise mixed from None
            except ValueError as err:
                raise DataError(f"a detection's bbox is not 4 numbers ({err})") from None
            bbox = bbox.reshape(n, 4)
        elif any("bbox" in d for d in detections):
            raise mixed
        segm = None
        if (need_masks or bbox is None) and any("segmentation" in d for d in detections):
            try:
                segm = list(map(itemgetter("segmentation"), detections))
            except KeyError:
                segm = [d.get("segmentation") for d in detections]
        cols = _Columns(image_id, category_id, score, bbox, segm)
    if not np.isfinite(cols.score).all():
        raise DataError(f"detection #{int(np.flatnonzero(~np.isfinite(cols.score))[0])} has a non-finite score")
    if cols.bbox is None and cols.segmentation is None and n:
        raise DataError("detections need 'bbox' or 'segmentation'")
    if cols.segmentation is not None and cols.bbox is None and None in cols.segmentation:
        raise DataError(f"detection #{cols.segmentation.index(None)} has neither 'bbox' nor 'segmentation'")
    return cols


def _load(gt: Any) -> tuple[Mapping, str]:
    if isinstance(gt, (str, Path)):
        try:
            with open(gt) as f:
                return json.load(f), str(gt)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read the LVIS annotations {gt}: {err}") from None
    if isinstance(gt, Mapping):
        return gt, "the ground-truth dict"
    if isinstance(getattr(gt, "dataset", None), Mapping):      # an lvis.LVIS object
        return gt.dataset, "the LVIS object's dataset"
    raise TypeError(f"gt must be a path, a dict or an lvis.LVIS object, not {type(gt).__name__}")


def _ints(items: list, field: str, source: str, what: str, ids: np.ndarray | None = None) -> np.ndarray:
    try:
        return np.fromiter(map(itemgetter(field), items), np.int64, len(items))
    except (KeyError, TypeError, ValueError):
        i = next((i for i, x in enumerate(items) if not isinstance(x.get(field), (int, np.integer))), 0)
        name = f"{what} {ids[i]}" if ids is not None else f"{what} #{i}"
        raise DataError(f"{source}: {name} has no integer {field!r}") from None


def _floats(items: list, field: str, source: str, ids: np.ndarray) -> np.ndarray:
    try:
        return np.fromiter(map(itemgetter(field), items), np.float64, len(items))
    except (KeyError, TypeError, ValueError):
        i = next((i for i, x in enumerate(items) if not isinstance(x.get(field), (int, float))), 0)
        raise DataError(f"{source}: annotation {ids[i]} has no numeric {field!r}") from None


def _unique_or_fail(ids: np.ndarray, source: str, what: str) -> None:
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{source}: {what} id {uniq[counts > 1][0]} occurs twice")
