"""task=lvis: an mmdet config, adjusted by the run's Hydra keys, trained and evaluated with
mmengine's runner; the LVIS metrics become a record in results.json.

The mmdet config of the chosen ``detector`` holds the pipeline (sampler, heads, NMS,
schedule); the run decides what is specific to it: LVIS version and paths, the box
classifier's activation and loss, the classifier init, the output folder, and optional
knobs for short runs (epochs, image scale, a subset of images).
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig

from lt_bench.config import config_hash
from lt_bench.detection.annotations import check_lvis_annotations
from lt_bench.errors import ConfigError
from lt_bench.records import RESULTS_FILE, SCHEMA_VERSION, git_revision, upsert_record

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
VERSIONS = {
    # dataset type, classes, image prefix of train and val (v1 reads paths from coco_url)
    "v1": ("LVISV1Dataset", 1203, "", "", 0.0011),
    "v0.5": ("LVISV05Dataset", 1230, "train2017/", "val2017/", 0.00177),
}
LOSSES = {"activation_ce": "ActivationCrossEntropyLoss", "eql": "EQLLoss", "drop": "DropLoss"}
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "APr", "APc", "APf")


def annotation_paths(cfg: DictConfig) -> tuple[Path, Path]:
    version = cfg.task.version
    lvis_dir = Path(cfg.data.lvis_dir).expanduser()
    train = Path(cfg.data.train_ann or lvis_dir / f"lvis_{version}_train.json").expanduser()
    val = Path(cfg.data.val_ann or lvis_dir / f"lvis_{version}_val.json").expanduser()
    return train, val


def _dataset_node(dataloader) -> dict:
    """The LVIS dataset inside an optional ClassBalancedDataset (repeat-factor) wrapper."""
    dataset = dataloader["dataset"]
    return dataset["dataset"] if dataset.get("type") == "ClassBalancedDataset" else dataset


def _set_image_scale(pipeline: list, scale: tuple[int, int]) -> None:
    for step in pipeline:
        if step.get("type") == "RandomChoiceResize":
            step["scales"] = [scale]
        elif step.get("type") == "Resize":
            step["scale"] = scale


def _use_fast_metric(evaluator: dict) -> None:
    """mmdet's LVISMetric -> FastLVISMetric (same keys and numbers); its output-only options
    have no counterpart, so a config that sets them must use detection.evaluator=lvis."""
    if evaluator.get("type") != "LVISMetric":
        raise ConfigError(f"detection.evaluator=fast replaces LVISMetric, but the config evaluates with "
                          f"{evaluator.get('type')!r}; use detection.evaluator=lvis")
    for key in ("classwise", "format_only", "outfile_prefix"):
        if evaluator.pop(key, None):
            raise ConfigError(f"the mmdet config sets val/test_evaluator.{key}, which FastLVISMetric does not "
                              "support; use detection.evaluator=lvis")
    for key in ("proposal_nums", "iou_thrs", "file_client_args"):
        evaluator.pop(key, None)
    evaluator["type"] = "FastLVISMetric"


def build_mmdet_config(cfg: DictConfig, out_dir: Path):
    """The detector's mmdet config with this run's settings applied."""
    from mmengine.config import Config
    dataset_type, num_classes, train_prefix, val_prefix, default_lambda = VERSIONS[cfg.task.version]
    train_ann, val_ann = annotation_paths(cfg)
    det = cfg.detection
    mm = Config.fromfile(str(REPO / cfg.detector.mmdet_config))

    # data
    image_root = str(Path(cfg.data.root).expanduser()) + "/"
    for loader, ann, prefix, count in ((mm.train_dataloader, train_ann, train_prefix, det.train_images),
                                       (mm.val_dataloader, val_ann, val_prefix, det.val_images),
                                       (mm.test_dataloader, val_ann, val_prefix, det.val_images)):
        if loader is None:
            continue
        dataset = _dataset_node(loader)
        dataset.update(type=dataset_type, data_root="", ann_file=str(ann), data_prefix=dict(img=image_root + prefix))
        if count is not None:
            dataset["indices"] = int(count)
        if det.image_scale is not None:
            _set_image_scale(dataset["pipeline"], tuple(int(v) for v in det.image_scale))
        if det.num_workers is not None:
            loader["num_workers"] = int(det.num_workers)
            loader["persistent_workers"] = int(det.num_workers) > 0
    if det.batch_size is not None:
        mm.train_dataloader["batch_size"] = int(det.batch_size)
    for evaluator in (mm.val_evaluator, mm.test_evaluator):
        evaluator["ann_file"] = str(val_ann)
        if det.evaluator == "fast":
            _use_fast_metric(evaluator)

    # box classifier: loss, activation and init from lt_bench
    roi = mm.model["roi_head"]
    loss = dict(type=LOSSES[cfg.detector.loss], activation=cfg.activation, num_classes=num_classes,
                loss_weight=1.0)
    if cfg.detector.loss != "activation_ce":
        loss.update(lambda_=float(det["lambda"] if det["lambda"] is not None else default_lambda),
                    frequency_file=str(det.frequency_file or train_ann), num_images=det.frequency_num_images)
    roi["bbox_head"].update(num_classes=num_classes, loss_cls=loss, init_cfg=[
        dict(type="ActivationClassifierInit", activation=cfg.activation, scheme="detection",
             override=dict(name="fc_cls")),
        dict(type="Normal", std=0.001, override=dict(name="fc_reg"))])
    roi["mask_head"]["num_classes"] = num_classes

    # backbone weights, schedule, run folder, seed, launcher
    backbone = mm.model["backbone"]
    if det.backbone_pretrained is None:
        backbone["init_cfg"] = None
    elif det.backbone_pretrained != "torchvision":
        backbone["init_cfg"] = dict(type="Pretrained", checkpoint=str(det.backbone_pretrained))
    if det.max_epochs is not None:
        mm.train_cfg["max_epochs"] = int(det.max_epochs)
    if det.val_interval is None:
        # evaluate once, after training (runner.test); validation during training would repeat
        # the full LVIS evaluation at the last epoch
        mm.val_dataloader = mm.val_cfg = mm.val_evaluator = None
    else:
        mm.train_cfg["val_interval"] = int(det.val_interval)
    rcnn_test = mm.model["test_cfg"]["rcnn"]
    for key in ("score_thr", "max_per_img"):
        if det[key] is not None:
            rcnn_test[key] = det[key]
    if det.rpn_proposals is not None:
        mm.model["test_cfg"]["rpn"]["max_per_img"] = int(det.rpn_proposals)
    mm.load_from = det.load_from
    mm.work_dir = str(out_dir)
    mm.randomness = dict(seed=int(cfg.seed))
    mm.launcher = "pytorch" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "none"
    return mm


def _record(cfg: DictConfig, metrics: dict, seconds: float, world_size: int) -> dict:
    empty = not any(key.startswith("lvis/") for key in metrics)
    if empty:   # mmdet's LVIS metric returns nothing when no detection passed score_thr
        log.warning("no detection above the score threshold: every AP is 0")

    def pick(kind: str) -> dict:
        if empty:
            return {k: 0.0 for k in METRICS}
        return {k: 100.0 * float(metrics[f"lvis/{kind}_{k}"]) for k in METRICS if f"lvis/{kind}_{k}" in metrics}
    segm, bbox = pick("segm"), pick("bbox")
    method = cfg.activation if cfg.detector.loss == "activation_ce" else f"{cfg.detector.loss}+{cfg.activation}"
    return {
        "schema": SCHEMA_VERSION, "kind": "detection", "task": cfg.task.name, "dataset": f"lvis_{cfg.task.version}",
        "version": cfg.task.version, "model": cfg.detector.name, "stage": None, "method": method,
        "activation": cfg.activation, "loss": cfg.detector.loss, "eval_split": "val",
        # mask AP (the paper's AP) and box AP, percentages
        **{k: segm.get(k) for k in ("AP", "AP50", "AP75", "APr", "APc", "APf")}, "APbox": bbox.get("AP"),
        "segm": segm, "bbox": bbox, "no_detections": empty,
        "seed": int(cfg.seed), "config_hash": config_hash(cfg), "setup_hash": config_hash(cfg, exclude=("seed",)),
        "git_rev": git_revision(), "world_size": world_size, "mmdet_config": cfg.detector.mmdet_config,
        "seconds": round(seconds, 3), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_detection(cfg: DictConfig) -> dict:
    """Train (unless detection.train=false) and evaluate; returns the record written."""
    try:
        from mmengine.dist import get_rank, get_world_size
        from mmengine.runner import Runner
    except ImportError as err:
        raise ConfigError(f"task=lvis needs the detection extra (mmdet, mmcv, mmengine, lvis): "
                          f"run `make det` ({err})") from err
    from lt_bench.pipeline import resolve_out_dir
    import time
    started = time.perf_counter()
    out_dir = resolve_out_dir(cfg)
    if cfg.detection.check_annotations and int(os.environ.get("RANK", "0")) == 0:
        for path in dict.fromkeys(annotation_paths(cfg)):   # before mmdet reads them
            check_lvis_annotations(path)
    runner = Runner.from_cfg(build_mmdet_config(cfg, out_dir))
    if cfg.detection.train:
        runner.train()
    metrics = runner.test()
    record = _record(cfg, metrics, time.perf_counter() - started, get_world_size())
    if get_rank() == 0:
        upsert_record(out_dir / RESULTS_FILE, record)
        print(f"\nlvis {cfg.task.version}, {cfg.detector.name}, {record['method']} -> {out_dir / RESULTS_FILE}\n"
              + "  ".join(f"{k} {record[k]:.1f}" for k in ("AP", "APr", "APc", "APf", "APbox")
                          if record[k] is not None), flush=True)
    return record
