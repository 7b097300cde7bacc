"""Exact LVIS evaluation (lvis-api 0.5.3's numbers) that visits only the pairs that can count.

lvis-api's ``LVISEval`` keeps a dict per detection and loops over every image x category cell
(24 million for LVIS v1 val), although LVIS's federated rules make nearly all of them empty:
a detection only counts in a category the image is annotated with (IoU and greedy matching)
or lists in ``neg_category_ids`` (a false positive, no IoU needed).  Here detections are numpy
columns and only those pairs are touched: box IoUs are pycocotools' ``bbIou`` formula on all
pairs at once (the same float operations), mask IoUs ``pycocotools.mask.iou`` per pair; the
accumulation walks only the true positives of each category, area range and threshold (see
``_accumulate``), all of them in 40 vectorised passes.

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
``evaluate(workers=N)`` instead splits the categories into N runs, each matched over all images
and accumulated in a forked process (each category's pairs and rows are its own).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter, methodcaller
from pathlib import Path
from typing import Any

import numpy as np
import pycocotools.mask as mask_utils

from lt_bench.detection.forked import can_fork, forked_map, no_gc, runs
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
_CHUNK = 1 << 19                              # IoU entries (detection x ground truth) made at a time


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
    taken: dict | None = None        # masks already made (position -> what _take gave), made once


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
        self._cat_lut = _id_table(self.cat_ids, max(1 << 16, 4 * len(ids)))   # LVIS: 1..1203
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
        self._img_lut = _id_table(self.img_ids, max(1 << 22, 8 * len(ids)))   # LVIS: COCO's, < 600,000
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
        return _unique(image[cat >= 0] * len(self.cat_ids) + cat[cat >= 0])

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
        if any(map(methodcaller("__contains__", "ignore"), anns)):
            ignore = np.fromiter((bool(anns[i].get("ignore", 0)) for i in keep.tolist()), bool, len(keep))
        else:                      # LVIS has no "ignore" key
            ignore = np.zeros(len(keep), bool)
        a = area[keep]
        self._g_ig = ignore[None] | (a[None] < AREA_RNG[:, :1]) | (a[None] > AREA_RNG[:, 1:])   # [A, n]
        self._pos_keys = _unique(self._g_key)
        self._allowed_keys = _unique(np.concatenate([self._pos_keys, self._neg_keys]))
        if self.iou_type == "bbox":
            try:
                boxes = list(map(itemgetter("bbox"), map(anns.__getitem__, keep.tolist())))
                if all(map((4).__eq__, map(len, boxes))):        # the usual: four numbers each
                    self._g_box = np.fromiter(chain.from_iterable(boxes), np.float64, 4 * len(boxes)).reshape(-1, 4)
                else:
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
        if self._cat_lut is not None:
            return _table_index(self._cat_lut, cat_ids)
        idx = np.searchsorted(self.cat_ids, cat_ids).clip(max=len(self.cat_ids) - 1)
        return np.where(self.cat_ids[idx] == cat_ids, idx, -1)

    def _img_index(self, image_ids: np.ndarray, what: str, ids: np.ndarray | None = None) -> np.ndarray:
        if self._img_lut is not None:
            idx = _table_index(self._img_lut, image_ids)
            bad = np.flatnonzero(idx < 0)
        else:
            idx = np.searchsorted(self.img_ids, image_ids).clip(max=max(len(self.img_ids) - 1, 0))
            bad = np.flatnonzero(self.img_ids[idx] != image_ids) if len(self.img_ids) else np.arange(len(image_ids))
        if len(bad):
            i = int(bad[0])
            name = f"{what} {ids[i]}" if ids is not None else f"{what} #{i}"
            raise DataError(f"{name} refers to image {image_ids[i]}, which is not in {self.source}")
        return idx

    # ---- per-shard evaluation -----------------------------------------------------------
    def evaluate_images(self, image_ids: Sequence[int] | np.ndarray | None, detections: Any,
                        categories: np.ndarray | None = None) -> PartialEval:
        """Match the detections of the given images (None: all images of the file) and keep
        what ``merge`` needs.  Detections of other images are left out, so every rank may pass
        the list it holds; an image's detections must all be in the same shard.
        ``categories``: only the detections in these (indices into the sorted category ids)
        are kept, after each image's ``max_dets`` highest scores are taken over all of them."""
        with no_gc():
            return self._evaluate_images(image_ids, detections, categories)

    def _evaluate_images(self, image_ids: Sequence[int] | np.ndarray | None, detections: Any,
                         categories: np.ndarray | None) -> PartialEval:
        cols = _columns(detections, self.iou_type == "segm")
        img = self._img_index(cols.image_id, "detection")
        if image_ids is None:
            shard = np.arange(len(self.img_ids))
            pos = np.arange(len(img))
        else:
            shard = _unique(self._img_index(np.asarray(image_ids, dtype=np.int64).reshape(-1), "shard image"))
            pos = np.flatnonzero(_isin(img, shard))
        pos = self._limit(pos, img, cols.score)

        K = len(self.cat_ids)
        cat = self._cat_index(cols.category_id[pos])     # results in unknown categories: dropped
        known = cat >= 0
        if categories is not None:
            chosen = np.zeros(K, bool)
            chosen[np.asarray(categories, dtype=np.int64)] = True
            known &= chosen[np.where(known, cat, 0)]
        pos, key = pos[known], img[pos[known]] * K + cat[known]
        ok = _isin(key, self._allowed_keys)               # federated: present or negative
        pos, key = pos[ok], key[ok]
        keep = None
        if cols.bbox is None and self.iou_type == "segm":    # areas from the masks: those of pairs with
            cols.taken, keep = {}, _isin(key, self._pos_keys)  # ground truth kept for their IoUs
        area = self._det_area(cols, pos, keep)
        ok = (area > 0) & (area < np.inf)
        pos, key, area = pos[ok], key[ok], area[ok]
        order = _lexorder(-cols.score[pos], key % K, key // K)    # pairs, then score (stable: pos ascending)
        pos, key, area = pos[order], key[order], area[order]

        out = (area[None] < AREA_RNG[:, :1]) | (area[None] > AREA_RNG[:, 1:])
        nel = _isin(key, self._nel_keys)
        ig_unmatched = out | nel[None]                                   # [A, n]
        status = np.broadcast_to(np.where(ig_unmatched.T, _IGNORED, _FP).astype(np.uint8)[:, :, None],
                                 (len(pos), _A, _T)).copy()                 # [n, A, T]
        self._match(cols, pos, key, ig_unmatched, status)

        gsel = _isin(self._g_img, shard)
        num_gt = np.stack([np.bincount(self._g_cat[gsel & ~self._g_ig[a]], minlength=K) for a in range(_A)], 1)
        flat = status.reshape(len(pos), _A * _T)
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

    def _det_area(self, cols: _Columns, pos: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
        """LVISResults: w*h of the box when the results carry boxes, else the mask's area (the
        masks made for it kept in ``cols.taken`` where ``keep``, when that is given)."""
        if cols.bbox is not None:
            return cols.bbox[pos, 2] * cols.bbox[pos, 3]
        if len(pos) == 0:
            return np.zeros(0)
        try:
            # pycocotools 2.0.11's area() fails on lists of 256 or more under NumPy 2: chunks (the
            # masks of one chunk at a time, for columns that make them on demand)
            areas = []
            for i in range(0, len(pos), 255):
                masks = _take(cols.segmentation, pos[i:i + 255])
                areas.append(mask_utils.area(masks))
                if keep is not None and len(cols.taken) < _TAKEN_MAX:
                    for j in np.flatnonzero(keep[i:i + 255]).tolist():
                        cols.taken[int(pos[i + j])] = masks[j]
            return np.concatenate(areas).astype(np.float64)
        except Exception as err:   # pycocotools raises plain Exception / TypeError
            raise DataError(f"detections without 'bbox' need compressed RLE masks ({err})") from None

    def _match(self, cols: _Columns, pos: np.ndarray, key: np.ndarray, ig_unmatched: np.ndarray,
               status: np.ndarray) -> None:
        """IoU and evaluate_img's greedy matching in every pair with ground truth and
        detections; writes the matched detections' status.  The pairs' IoU matrices are made a
        chunk of pairs at a time as one flat array (boxes: vectorised, pycocotools' formula;
        masks: pycocotools per pair).  Pairs in which no detection reaches IoU 0.5 with two
        ground truths (nearly all) are matched together, vectorised: each ground truth then goes
        to the first detection (in score order) that reaches it; the others take ``_greedy``."""
        if not len(key):
            return
        bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
        starts, ends = bounds[:-1], bounds[1:]
        run_keys = key[starts]
        with_gt = _isin(run_keys, self._pos_keys)
        starts, ends, run_keys = starts[with_gt], ends[with_gt], run_keys[with_gt]
        if not len(starts):
            return
        g_starts = np.searchsorted(self._g_key, run_keys, side="left")
        g_ends = np.searchsorted(self._g_key, run_keys, side="right")
        sizes = (ends - starts) * (g_ends - g_starts)
        easy: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for c in _chunks(sizes, _CHUNK):
            runs_ = (starts[c], ends[c], g_starts[c], g_ends[c], run_keys[c] // len(self.cat_ids))
            ious = self._pair_ious(cols, pos, *runs_)
            easy.append(self._match_chunk(ious, *runs_[:4], ig_unmatched, status))
        d, g, iou = (np.concatenate(x) for x in zip(*easy))
        for t in range(_T):
            reach = np.flatnonzero(iou >= _THR[t])
            _, first, _ = _unique_first(g[reach])                 # first detection per gt
            win = reach[first]
            n = len(win)
            self._mark(status, ig_unmatched, np.repeat(np.arange(_A), n), np.full(_A * n, t),
                       np.tile(d[win], _A), np.tile(g[win], _A))

    def _match_chunk(self, ious: np.ndarray, starts: np.ndarray, ends: np.ndarray, g_starts: np.ndarray,
                     g_ends: np.ndarray, ig_unmatched: np.ndarray, status: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One chunk of pairs (``ious``: each pair's [D, G] matrix, row-major, one after the
        other): the crowded pairs matched by ``_greedy`` (status written), the others' candidate
        (detection, ground truth, IoU) triples returned."""
        D, G = ends - starts, g_ends - g_starts
        offsets = np.r_[0, np.cumsum(D * G)]
        cand = np.flatnonzero(ious >= _THR[0])
        run = np.searchsorted(offsets, cand, side="right") - 1
        det, gt = _entry_pairs(cand, run, offsets, starts, g_starts, G)
        uniq, first, count = _unique_first(det)
        crowded = np.zeros(len(D), bool)
        crowded[run[first[count > 1]]] = True           # a detection reaching two ground truths
        for r in np.flatnonzero(crowded).tolist():
            s, gs = int(starts[r]), int(g_starts[r])
            match = _greedy(ious[offsets[r]:offsets[r + 1]].reshape(D[r], G[r]), self._g_ig[:, gs:g_ends[r]])
            a, t, d = np.nonzero(match >= 0)
            self._mark(status, ig_unmatched, a, t, s + d, gs + match[a, t, d])
        keep = ~crowded[run]
        return det[keep], gt[keep], ious[cand[keep]]

    def _pair_ious(self, cols: _Columns, pos: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                   g_starts: np.ndarray, g_ends: np.ndarray, images: np.ndarray) -> np.ndarray:
        """The IoU matrices of these pairs (detections ``pos[start:end]``, ground truths
        ``g_start:g_end``), each [D, G] row-major, one after the other in one flat array."""
        if self.iou_type == "bbox":
            D, G = ends - starts, g_ends - g_starts
            offsets = np.r_[0, np.cumsum(D * G)]
            entry = np.arange(offsets[-1])
            det, gt = _entry_pairs(entry, np.repeat(np.arange(len(D)), D * G), offsets, starts, g_starts, G)
            return _box_iou(self._det_boxes(cols, pos[det]), self._g_box[gt])
        D = ends - starts
        ends_ = np.cumsum(D)                        # the pairs' detections, one after the other
        rows = np.repeat(starts - (ends_ - D), D) + np.arange(ends_[-1])
        rles = self._det_rles(cols, pos[rows])
        anns = self.dataset["annotations"]
        out = []
        for s, e, gs, ge, image in zip((ends_ - D).tolist(), ends_.tolist(), g_starts.tolist(), g_ends.tolist(),
                                       images.tolist()):
            img = self._images[image]
            gts = []
            for i in self._g_ann[gs:ge].tolist():
                if "segmentation" not in anns[i]:
                    raise DataError(f"{self.source}: annotation {anns[i]['id']} has no 'segmentation'")
                gts.append(_to_rle(anns[i]["segmentation"], img))
            out.append(np.asarray(mask_utils.iou(rles[s:e], gts, [0] * (ge - gs)), np.float64).ravel())
        return np.concatenate(out)

    def _det_boxes(self, cols: _Columns, rows: np.ndarray) -> np.ndarray:
        """The detections' boxes for box IoU (LVISResults: toBbox of the mask without a box)."""
        if cols.bbox is not None:
            return cols.bbox[rows]
        return np.concatenate([np.asarray(mask_utils.toBbox(_take(cols.segmentation, rows[i:i + 4096])),
                                          dtype=np.float64).reshape(-1, 4)
                               for i in range(0, len(rows), 4096)] or [np.zeros((0, 4))])

    def _det_rles(self, cols: _Columns, rows: np.ndarray) -> list:
        """The masks of these detections as pycocotools takes them (LVISResults: a box result
        without a mask has its box's polygon; polygons and uncompressed RLE converted)."""
        if cols.taken:          # made for their areas (each detection is in one pair: let go once used)
            masks = [cols.taken.pop(i, _NOT_TAKEN) for i in rows.tolist()]
            missing = [j for j, m in enumerate(masks) if m is _NOT_TAKEN]
            if missing:
                for j, m in zip(missing, _take(cols.segmentation, rows[missing])):
                    masks[j] = m
        else:
            masks = _take(cols.segmentation, rows) if cols.segmentation is not None else [None] * len(rows)
        compressed = getattr(cols.segmentation, "compressed", None)
        if callable(compressed) and compressed(rows):    # a MaskColumn that has only compressed RLEs there
            return masks
        for j, m in enumerate(masks):
            if type(m) is dict and not isinstance(m.get("counts"), list):
                continue
            i = int(rows[j])
            if m is None:
                x1, y1, w, h = cols.bbox[i].tolist()
                m = [[x1, y1, x1, y1 + h, x1 + w, y1 + h, x1 + w, y1]]
            masks[j] = _to_rle(m, self._images[self._img_index(cols.image_id[i:i + 1], "detection")[0]])
        return masks

    def _mark(self, status: np.ndarray, ig_unmatched: np.ndarray, a: np.ndarray, t: np.ndarray,
              d: np.ndarray, g: np.ndarray) -> None:
        """A match of detection d to ground truth g: ignored if g is ignored in that area range;
        a match to id 0 is unmatched for accumulate (lvis's ``dt_m == 0``)."""
        id0 = self._g_id[g] == 0
        ignored = self._g_ig[a, g] | (id0 & ig_unmatched[a, d])
        status[d, a, t] = np.where(ignored, _IGNORED, np.where(id0, _FP, _TP))

    # ---- merge, accumulate, summarize ---------------------------------------------------
    def merge(self, partials: Sequence[PartialEval]) -> dict[str, float]:
        """Accumulate and summarize the shards' results (each image in one shard only)."""
        K = len(self.cat_ids)
        seen = np.concatenate([p.image_ids for p in partials]) if partials else np.zeros(0, np.int64)
        uniq, _, counts = _unique_first(seen)
        if (counts > 1).any():
            raise DataError(f"image {uniq[counts > 1][0]} was evaluated in two shards")
        if any(p.num_gt.shape != (K, _A) for p in partials):
            raise DataError(f"a shard was evaluated against another ground truth than {self.source}")
        num_gt = sum((p.num_gt for p in partials), np.zeros((K, _A), np.int64))
        cat, img, pos, score = (np.concatenate([getattr(p, f) for p in partials]) if partials else np.zeros(0, np.int64)
                                for f in ("cat", "img", "pos", "score"))
        tp_bits, fp_bits = (np.concatenate([getattr(p, f) for p in partials]) if partials
                            else np.zeros((0, -(-_A * _T // 8)), np.uint8) for f in ("tp_bits", "fp_bits"))
        self.precision, self.recall = _accumulate_categories((cat, img, pos, score, tp_bits, fp_bits, num_gt),
                                                             np.arange(K))
        return self.summarize()

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
        ``workers`` > 1 matches and accumulates runs of the categories in that many forked
        processes, which share the detections and this evaluator copy-on-write (each category's
        pairs and rows are its own, and each image's ``max_dets`` are taken over all categories
        first): the numbers are the same; where fork is unavailable, one process does it all."""
        if workers <= 1 or len(self.img_ids) < 2 or not can_fork():
            return self.merge([self.evaluate_images(None, detections)])
        cols = _columns(detections, self.iou_type == "segm")          # once, before the fork
        columns = {"image_id": cols.image_id, "category_id": cols.category_id, "score": cols.score,
                   "bbox": cols.bbox, "segmentation": cols.segmentation}
        # contiguous runs of categories with about equal detection counts, each matched over all
        # images and accumulated in its own process: only their precision and recall come back
        K = len(self.cat_ids)
        cat = self._cat_index(cols.category_id)
        groups = runs(np.arange(K), np.bincount(cat[cat >= 0], minlength=K), workers)
        if len(groups) < 2:
            return self.merge([self.evaluate_images(None, detections)])
        self.precision, self.recall = -np.ones((_T, _R, K, _A)), -np.ones((_T, K, _A))
        for ks, (precision, recall) in zip(groups, forked_map(_evaluate_categories, groups, (self, columns))):
            self.precision[:, :, ks], self.recall[:, ks] = precision, recall
        return self.summarize()


def _evaluate_categories(shared: tuple, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A forked worker's run of categories over all images: their precision and recall."""
    evaluator, columns = shared
    p = evaluator.evaluate_images(None, columns, categories=ks)
    return _accumulate_categories((p.cat, p.img, p.pos, p.score, p.tp_bits, p.fp_bits, p.num_gt), ks)


def fast_lvis_evaluate(gt: Any, detections: Any, iou_type: str = "segm", max_dets: int = 300) -> dict[str, float]:
    """Same contract as ``lt_bench.detection.evaluation.lvis_evaluate``, same numbers."""
    return FastLVISEval(gt, iou_type, max_dets).evaluate(detections)


def _accumulate_categories(kept: tuple, ks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``_accumulate`` of the contiguous categories ``ks`` (``kept``: the shards' detections
    concatenated: category, image, position, score, tp / fp bits; the ground-truth counts):
    their precision [T, R, len(ks), A] and recall [T, len(ks), A]."""
    cat, img, pos, score, tp_bits, fp_bits, num_gt = kept
    if len(ks) < len(num_gt):
        rows = np.flatnonzero((cat >= ks[0]) & (cat <= ks[-1]))
        cat, img, pos, score = cat[rows] - ks[0], img[rows], pos[rows], score[rows]
        tp_bits, fp_bits = tp_bits[rows], fp_bits[rows]
    # accumulate's stable sort by score within a category: ties by image, then result position.
    # Each shard comes sorted by (image, category, score, position) (evaluate_images); when the
    # shards follow each other in image order, so does their concatenation, and a stable sort
    # by (category, score) alone keeps the ties in (image, position) order.
    in_image_order = bool(len(img) < 2 or (img[1:] >= img[:-1]).all())
    order = _lexorder(-score, cat) if in_image_order else _lexorder(pos, img, -score, cat)
    return _accumulate(cat[order], tp_bits[order], fp_bits[order], num_gt[ks])


def _accumulate(cat: np.ndarray, tp_bits: np.ndarray, fp_bits: np.ndarray, num_gt: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """lvis-api's ``accumulate`` for every category, area range and IoU threshold at once:
    ``precision`` [T, R, K, A] and ``recall`` [T, K, A] (-1 where a category has no ground
    truth in the area range).  ``cat``, ``tp_bits``, ``fp_bits``: the kept detections in
    accumulate's order (category, then score; stable), their packed tp / fp bits over
    (area range, threshold).

    lvis-api walks each (category, area, threshold) row densely: cumulative tp and fp,
    precision tp / (fp + tp + eps), its maximum to the right, read at the first position whose
    recall tp / num_gt reaches each recall threshold.  Only the true positives matter for that:
    precision falls between them, so the maximum to the right of the c-th true positive is the
    maximum over the c-th and later true positives, and the first position reaching recall
    threshold r is the c(r)-th true positive, c(r) the smallest count with c / num_gt >= r
    (the same float division).  So each row is its true positives alone: their count c, the
    false positives before them f, precision c / (f + c + eps) as lvis-api computes it."""
    K = len(num_gt)
    precision, recall = -np.ones((_T, _R, K, _A)), -np.ones((_T, K, _A))
    bounds = np.searchsorted(cat, np.arange(K + 1))                 # each category's detections
    levels, which = np.unique(num_gt, return_inverse=True)
    which = which.reshape(num_gt.shape)
    # per ground-truth count u: the true positives c(r) needed to reach each recall threshold r
    need = np.stack([np.searchsorted(np.arange(u + 1, dtype=np.float64) / max(u, 1), REC_THRS, side="left")
                     for u in levels.tolist()])
    tp_bytes, fp_bytes = np.ascontiguousarray(tp_bits.T), np.ascontiguousarray(fp_bits.T)   # a row per byte
    for col in range(_A * _T):                                      # the bit order: a * T + t
        a, t = divmod(col, _T)
        ks = np.flatnonzero(num_gt[:, a] > 0)
        if not len(ks):
            continue
        byte, mask = col >> 3, np.uint8(0x80 >> (col & 7))         # np.packbits: big-endian within a byte
        det = np.flatnonzero(tp_bytes[byte] & mask)                 # the true positives, in order
        k_tp = cat[det]
        # false positives before it, in its category: counted directly, or as its position in its
        # category less the true positives and the ignored before it (whichever are fewer)
        is_fp = fp_bytes[byte] & mask
        start = bounds[k_tp]
        if 2 * np.count_nonzero(is_fp) <= len(is_fp):
            fps = np.flatnonzero(is_fp)
            f = np.searchsorted(fps, det) - np.searchsorted(fps, start)
        else:
            others = np.flatnonzero(is_fp == 0)                    # true positives and ignored
            f = (det - start) - (np.searchsorted(others, det) - np.searchsorted(others, start))
        tp_count = np.bincount(k_tp, minlength=K)
        tp_start = np.r_[0, np.cumsum(tp_count)[:-1]]
        c = np.arange(len(det)) - tp_start[k_tp] + 1.0               # it is its category's c-th
        best = _suffix_max(c / (f.astype(np.float64) + c + np.spacing(1)), k_tp)
        ng = num_gt[ks, a]
        recall[t, ks, a] = tp_count[ks] / ng
        c_r = np.maximum(need[which[ks, a]], 1)                      # [categories, R]
        inside = c_r <= tp_count[ks][:, None]
        at = np.where(inside, tp_start[ks][:, None] + c_r - 1, 0)
        precision[t, :, ks, a] = np.where(inside, best[at] if len(best) else 0.0, 0.0)
    return precision, recall


def _suffix_max(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The maximum of ``values`` from each entry to the end of its row (rows: contiguous runs
    of equal ``rows``), by doubling: exact, a log2(longest row) passes."""
    out = values.copy()
    longest = int(np.bincount(rows).max()) if len(rows) else 0
    step = 1
    while step < longest:
        same = rows[step:] == rows[:-step]
        out[:-step] = np.where(same, np.maximum(out[:-step], out[step:]), out[:-step])
        step *= 2
    return out


def _lexorder(*keys: np.ndarray) -> np.ndarray:
    """``np.lexsort(keys)`` (the last key primary) as successive stable sorts, keys that fit in
    16 bits sorted as such (NumPy's radix sort)."""
    order = None
    for key in keys:
        key = key if order is None else key[order]
        if key.dtype.kind in "iu" and len(key) and 0 <= key.min() and key.max() < 1 << 16:
            key = key.astype(np.uint16)
        step = np.argsort(key, kind="stable")
        order = step if order is None else order[step]
    return order if order is not None else np.zeros(0, np.int64)


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


def _box_iou(dt: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """pycocotools' ``bbIou`` (maskApi.c) of box pairs ``dt[i]``, ``gt[i]`` (xywh, no crowd),
    with its float operations in its order: fmin/fmax, ``w <= 0`` or ``h <= 0`` gives 0."""
    w = np.fmin(dt[:, 2] + dt[:, 0], gt[:, 2] + gt[:, 0]) - np.fmax(dt[:, 0], gt[:, 0])
    h = np.fmin(dt[:, 3] + dt[:, 1], gt[:, 3] + gt[:, 1]) - np.fmax(dt[:, 1], gt[:, 1])
    inter = w * h
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (dt[:, 2] * dt[:, 3] + gt[:, 2] * gt[:, 3] - inter)
    return np.where((w <= 0) | (h <= 0), 0.0, iou)


def _entry_pairs(entry: np.ndarray, run: np.ndarray, offsets: np.ndarray, starts: np.ndarray,
                 g_starts: np.ndarray, G: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (detection, ground truth) of entries of the pairs' flat IoU array (pair ``run``'s
    [D, G] matrix row-major from ``offsets[run]``)."""
    local = entry - offsets[run]
    return starts[run] + local // G[run], g_starts[run] + local % G[run]


def _chunks(sizes: np.ndarray, limit: int) -> list[slice]:
    """Contiguous slices of the runs whose sizes add up to at most ``limit`` (a larger run alone)."""
    total = np.cumsum(sizes)
    out, lo = [], 0
    while lo < len(sizes):
        base = int(total[lo - 1]) if lo else 0
        hi = max(lo + 1, int(np.searchsorted(total, base + limit, side="right")))
        out.append(slice(lo, hi))
        lo = hi
    return out


_TAKEN_MAX = 500_000      # masks kept from the area step for the IoUs, per process (about 0.2 GiB)
_NOT_TAKEN = object()


def _to_rle(segm: Any, img: Mapping) -> dict:
    """LVIS.ann_to_rle: polygons are merged into one RLE, uncompressed RLE compressed (a
    ``msgspec.Raw``, as ``read_annotations(masks="raw")`` leaves it, decoded first)."""
    if not isinstance(segm, (list, dict)):
        import msgspec
        if isinstance(segm, msgspec.Raw):
            segm = msgspec.json.decode(segm)
    if isinstance(segm, list):
        rles = mask_utils.frPyObjects(segm, img["height"], img["width"])
        # merge() of one RLE is that RLE (maskApi's rleMerge copies it when n == 1): not decoded again
        return rles[0] if len(rles) == 1 else mask_utils.merge(rles)
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
        i = next((i for i, x in enumerate(items)
                  if not isinstance(x, Mapping) or not isinstance(x.get(field), (int, np.integer))), 0)
        if not isinstance(items[i], Mapping):
            raise DataError(f"{source}: {what} #{i} is not a JSON object") from None
        name = f"{what} {ids[i]}" if ids is not None else f"{what} #{i}"
        raise DataError(f"{source}: {name} has no integer {field!r}") from None


def _floats(items: list, field: str, source: str, ids: np.ndarray) -> np.ndarray:
    try:
        return np.fromiter(map(itemgetter(field), items), np.float64, len(items))
    except (KeyError, TypeError, ValueError):
        i = next((i for i, x in enumerate(items) if not isinstance(x, Mapping) or not isinstance(x.get(field), (int, float))), 0)
        raise DataError(f"{source}: annotation {ids[i]} has no numeric {field!r}") from None


def _unique_or_fail(ids: np.ndarray, source: str, what: str) -> None:
    uniq, _, counts = _unique_first(ids)
    if (counts > 1).any():
        raise DataError(f"{source}: {what} id {uniq[counts > 1][0]} occurs twice")


def _id_table(ids: np.ndarray, bound: int) -> np.ndarray | None:
    """For sorted unique non-negative ids below ``bound``: a table id -> index (-1 elsewhere);
    None otherwise (then ``searchsorted``)."""
    if not len(ids) or ids[0] < 0 or ids[-1] >= bound:
        return None
    table = np.full(int(ids[-1]) + 1, -1, np.int64)
    table[ids] = np.arange(len(ids))
    return table


def _table_index(table: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``table[ids]``, -1 for ids outside it."""
    inside = (ids >= 0) & (ids < len(table))
    return np.where(inside, table[np.where(inside, ids, 0)], -1)


def _unique(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)``, by one sort (NumPy 2's hashing unique is about 50x slower at
    these sizes, measured: 0.15 s against 3 ms for 178,000 keys)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def _unique_first(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(values, return_index=True, return_counts=True)`` by one stable sort: the
    sorted distinct values, where each first occurs, how often."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(values) else np.zeros(0, np.int64)
    return ordered[starts], order[starts], np.diff(np.r_[starts, len(values)])


def _isin(values: np.ndarray, members: np.ndarray) -> np.ndarray:
    """``np.isin`` for integer arrays: NumPy's lookup-table method when the members' range
    is small (at most 32 MiB of table, or 4 bytes per element), else its sorting method
    (its default chose sorting here, 13x slower: 1.2 s against 0.09 s for 3 million keys)."""
    values, members = np.asarray(values), np.asarray(members)
    if len(members) and values.dtype.kind in "iu" and members.dtype.kind in "iu":
        if int(members.max()) - int(members.min()) < max(1 << 25, 4 * (len(values) + len(members))):
            return np.isin(values, members, kind="table")
    return np.isin(values, members, kind="sort")
