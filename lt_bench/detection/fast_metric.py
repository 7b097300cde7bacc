"""``FastLVISMetric``: mmdet's LVIS metric computed by ``FastLVISEval`` (same keys, same numbers).

mmdet's ``LVISMetric`` gathers every rank's predictions (masks included) on rank 0, writes
them to json and runs lvis-api over all image x category cells.  Here each rank matches its
own images (``FastLVISEval.evaluate_images``) and only the small per-detection results travel
to rank 0, which merges them.  Keys and rounding are ``LVISMetric``'s (``lvis/bbox_AP``, ...,
three decimals), so the runner's record does not change.  Predictions are turned into results
exactly as ``LVISMetric.results2json`` does (xyxy -> xywh in float64, ``mask_scores`` for segm
when present), and images of the annotation file that no rank saw count with no detections,
as they do in lvis-api.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
from mmdet.registry import METRICS
from mmdet.structures.mask import encode_mask_results
from mmengine.dist import all_gather_object, broadcast_object_list, get_rank, is_main_process
from mmengine.evaluator import BaseMetric
from mmengine.fileio import get_local_path
from mmengine.logging import MMLogger

from lt_bench.detection.evaluation import SUMMARY_KEYS
from lt_bench.detection.fast_eval import FastLVISEval
from lt_bench.errors import ConfigError



@METRICS.register_module()
class FastLVISMetric(BaseMetric):
    """Drop-in for mmdet's ``LVISMetric`` (bbox and segm; no proposal, classwise or
    format_only modes).  ``max_dets``: detections per image, as lvis-api's 300."""

    default_prefix = "lvis"

    def __init__(self, ann_file: str, metric: str | Sequence[str] = "bbox", max_dets: int = 300,
                 metric_items: Sequence[str] | None = None, collect_device: str = "cpu",
                 prefix: str | None = None, backend_args: dict | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.metrics = [metric] if isinstance(metric, str) else list(metric)
        unknown = [m for m in self.metrics if m not in ("bbox", "segm")]
        if unknown:
            raise ConfigError(f"FastLVISMetric evaluates 'bbox' and 'segm', not {unknown}")
        self.metric_items = tuple(metric_items or SUMMARY_KEYS)
        with get_local_path(ann_file, backend_args=backend_args) as path, open(path) as f:
            dataset = json.load(f)
        self.evaluators = {m: FastLVISEval(dataset, m, max_dets, source=str(ann_file)) for m in self.metrics}
        self.cat_ids = np.asarray(next(iter(self.evaluators.values())).file_cat_ids, dtype=np.int64)
        # rank 0, after evaluate(): {metric: {category id: AP in [0, 1] or None}} (the record's
        # per-category AP; not among the returned metrics, which mmengine logs as scalars)
        self.per_category: dict[str, dict[int, float | None]] = {}

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        """Keep each image's predictions as arrays (masks RLE-encoded), like LVISMetric."""
        for sample in data_samples:
            pred = sample["pred_instances"]
            entry = {"img_id": sample["img_id"], "bboxes": pred["bboxes"].cpu().numpy(),
                     "scores": pred["scores"].cpu().numpy(), "labels": pred["labels"].cpu().numpy()}
            if "masks" in pred:
                entry["masks"] = encode_mask_results(pred["masks"].detach().cpu().numpy())
            if "mask_scores" in pred:
                entry["mask_scores"] = pred["mask_scores"].cpu().numpy()
            self.results.append(entry)

    def evaluate(self, size: int) -> dict:
        """Match this rank's images, merge every rank's partial results on rank 0."""
        own, extra = self._own_images()
        image_ids = [e["img_id"] for e in own] + extra
        partials = {m: self.evaluators[m].evaluate_images(image_ids, self._detections(own, m)) for m in self.metrics}
        gathered = all_gather_object((partials, sum(len(e["labels"]) for e in own)))
        metrics = [None]
        if is_main_process():
            metrics = [self._summaries(gathered)]
        broadcast_object_list(metrics)
        self.results.clear()
        return metrics[0]

    def compute_metrics(self, results: list) -> dict:   # required by BaseMetric; evaluate() is overridden
        raise NotImplementedError("FastLVISMetric computes its metrics in evaluate()")

    def _own_images(self) -> tuple[list[dict], list[int]]:
        """This rank's predictions of images no earlier rank holds (samplers pad by repeating
        images); rank 0 also takes the annotation file's images that no rank saw."""
        ids = [e["img_id"] for e in self.results]
        every = all_gather_object(ids)
        rank = get_rank()
        seen = set().union(*every[:rank])
        own = []
        for entry in self.results:
            if entry["img_id"] not in seen:
                seen.add(entry["img_id"])
                own.append(entry)
        extra = []
        if rank == 0:
            held = set().union(*every)
            extra = [i for i in next(iter(self.evaluators.values())).img_ids.tolist() if i not in held]
        return own, extra

    def _detections(self, entries: list[dict], metric: str) -> dict:
        """LVISMetric.results2json's results, as columns."""
        if metric == "segm" and any("masks" not in e for e in entries):
            raise ConfigError("the segm metric needs mask predictions (pred_instances.masks)")
        counts = [len(e["labels"]) for e in entries]
        boxes = np.concatenate([e["bboxes"].reshape(-1, 4) for e in entries]).astype(np.float64) \
            if entries else np.zeros((0, 4))
        score_key = "mask_scores" if metric == "segm" else "scores"
        columns = {
            "image_id": np.repeat(np.asarray([e["img_id"] for e in entries], dtype=np.int64), counts),
            "category_id": self.cat_ids[np.concatenate([e["labels"] for e in entries]).astype(np.int64)]
            if entries else np.zeros(0, np.int64),
            "score": np.concatenate([e.get(score_key, e["scores"]) for e in entries]).astype(np.float64)
            if entries else np.zeros(0),
            "bbox": np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1),
        }
        if metric == "segm":
            columns["segmentation"] = [rle for e in entries for rle in e["masks"]]
        return columns

    def _summaries(self, gathered: list) -> dict[str, float]:
        logger = MMLogger.get_current_instance()
        if sum(count for _, count in gathered) == 0:   # LVISMetric: LVISResults fails on an empty list
            logger.info("The testing results of the whole dataset is empty.")
            return {}
        out = {}
        for metric, evaluator in self.evaluators.items():
            summary = evaluator.merge([partials[metric] for partials, _ in gathered])
            self.per_category[metric] = evaluator.per_category_ap()
            logger.info(f"{metric}: " + ", ".join(f"{k} {v:.3f}" for k, v in summary.items()))
            for key, value in summary.items():
                if key in self.metric_items:
                    out[f"{self.prefix}/{metric}_{key}" if self.prefix else f"{metric}_{key}"] = \
                        float(f"{value:.3f}")
        return out
