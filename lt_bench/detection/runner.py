"""task=lvis: an mmdet config, adjusted by the run's Hydra keys, trained and evaluated with
mmengine's runner; the LVIS metrics become a record in results.json.

The mmdet config of the chosen ``detector`` holds the pipeline (sampler, heads, NMS,
schedule).  The run decides what is specific to it, in two steps kept apart so that a stock
mmdet config can go through the first one alone (the equivalence tests do):

- ``apply_run_settings``: LVIS version and paths, the category names of the annotation file,
  the global batch size and the linearly scaled learning rate, the output folder, the seed,
  and optional knobs for short runs (epochs, image scale, a subset of images);
- ``apply_box_classifier``: the box classifier's loss, activation, scoring and init from
  lt_bench.  Every other parameter keeps mmdet's own init: the head's default ``init_cfg``
  (read from mmdet's class, not copied) runs first, then the classifier init on ``fc_cls``.

Rank 0 reads the annotation files once (structure check, category statistics, the val
subset of a short run) and shares the outcome with the other ranks.
"""
from __future__ import annotations

import json
import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import DictConfig

from lt_bench.activations import activation_options
from lt_bench.detection.annotations import check_lvis_annotations
from lt_bench.detection.categories import (ANNOTATED_TRAIN_IMAGES, CategoryStats, category_stats,
                                           load_category_stats, save_category_stats)
from lt_bench.detection.evaluation import SUMMARY_KEYS
from lt_bench.detection.grad_stats import positive_gradient_hook
from lt_bench.detection.losses.focal import FOCAL_ALPHA, FOCAL_GAMMA
from lt_bench.detection.validate import classifier_scheme, dataset_spec, is_dense, is_lvis, is_stock
from lt_bench.errors import ConfigError, DataError, LtBenchError
from lt_bench.fileio import atomic_write_json
from lt_bench.records import SCHEMA_VERSION, git_revision, upsert_record
from lt_bench.registries import DETECTION_LOSSES
from lt_bench.run_folder import RunFolder, config_file, config_hash, resolve_out_dir

log = logging.getLogger(__name__)
GRAD_STATS_FILE = "grad_stats.json"   # detection.grad_stats=true: the run's positive gradients per category
BASE_BATCH_SIZE = 16          # the paper's (and mmdet's) lr 0.02 is for 16 images per iteration


def annotation_paths(cfg: DictConfig) -> tuple[Path, Path]:
    version = cfg.task.version
    if is_lvis(cfg):
        folder, names = Path(cfg.data.lvis_dir), (f"lvis_{version}_train.json", f"lvis_{version}_val.json")
    else:       # COCO: <root>/annotations/instances_{train,val}2017.json
        folder, names = Path(cfg.data.root) / "annotations", (f"instances_train{version}.json",
                                                              f"instances_val{version}.json")
    train = Path(cfg.data.train_ann or folder.expanduser() / names[0]).expanduser()
    val = Path(cfg.data.val_ann or folder.expanduser() / names[1]).expanduser()
    return train, val


def resolve_scoring(cfg: DictConfig) -> str:
    """The test-time score function: 'softmax' (over the C + 1 logits) or the activation's
    name.  ``auto`` scores as GOL's runs of that activation were scored: the sigmoid baseline
    by a softmax (mmdet 2.x's CrossEntropyLoss(use_sigmoid=True) has no get_activation),
    Gumbel and softmax by themselves."""
    if is_stock(cfg):
        return None             # the config's own classifier scores itself
    scoring = cfg.detection.scoring
    if scoring == "auto":
        with_background = DETECTION_LOSSES.get(cfg.detector.loss).cls.background_logit
        return "softmax" if cfg.activation == "sigmoid" and with_background else cfg.activation
    return "softmax" if scoring == "softmax" else cfg.activation


def global_batch_size(cfg: DictConfig, world_size: int) -> int:
    batch = int(cfg.detection.batch_size)
    if batch < 1 or batch % world_size:
        raise ConfigError(f"detection.batch_size={batch} is the global batch (images per iteration over "
                          f"all GPUs): it must be a positive multiple of the {world_size} processes")
    return batch


# ----------------------------------------------------------------------------- rank 0's reading

def category_stats_from(cfg: DictConfig, train_data: dict | None = None) -> CategoryStats:
    """Category statistics in the training file's label order: from ``detection.frequency_file``
    (a categories list with counts, or an annotation file) when given, else from the training
    annotations (``train_data`` when already parsed)."""
    source, num_images = cfg.detection.frequency_file, cfg.detection.frequency_num_images
    if source is None and train_data is not None:
        return category_stats(train_data, num_images, str(annotation_paths(cfg)[0]))
    path = Path(source or annotation_paths(cfg)[0]).expanduser()
    try:
        return load_category_stats(path, num_images)
    except ConfigError:
        if num_images is None and source is not None and is_lvis(cfg):   # a categories-only list of an official file
            log.info("%s lists categories only: image frequencies over the %d annotated training images "
                     "of LVIS %s", path, ANNOTATED_TRAIN_IMAGES[cfg.task.version], cfg.task.version)
            return load_category_stats(path, ANNOTATED_TRAIN_IMAGES[cfg.task.version])
        raise


def write_val_subset(val_data: dict, count: int, path: Path) -> Path:
    """The first ``count`` images of the val file with their annotations (all categories):
    a short run's evaluation then counts only the images it saw."""
    images = val_data["images"][:count]
    keep = {img["id"] for img in images}
    subset = {**{k: v for k, v in val_data.items() if k not in ("images", "annotations")},
              "images": images, "annotations": [a for a in val_data["annotations"] if a["image_id"] in keep]}
    return atomic_write_json(path, subset)


def prepare_inputs(cfg: DictConfig, out_dir: Path) -> dict:
    """Rank 0's one reading of the annotation files: check them, write the category statistics
    (and the val subset of ``detection.val_images``) into the run folder."""
    train_ann, val_ann = annotation_paths(cfg)
    parsed: dict[Path, dict] = {}

    def read(path: Path) -> dict:
        if path not in parsed:
            if cfg.detection.check_annotations:
                parsed[path] = check_lvis_annotations(path, cfg.task.name)
            else:
                try:
                    parsed[path] = json.loads(path.read_text())
                except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
                    raise DataError(f"{path}: not a readable LVIS annotation file ({err})") from err
        return parsed[path]

    train_data = read(train_ann) if cfg.detection.check_annotations or cfg.detection.frequency_file is None else None
    stats = category_stats_from(cfg, train_data)
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(out_dir)
    prepared = {"categories": str(save_category_stats(stats, folder.lvis_categories)), "val_ann": str(val_ann),
                "eval_images": None}
    if cfg.detection.check_annotations or cfg.detection.val_images is not None:
        val_data = read(val_ann)
        prepared["eval_images"] = len(val_data["images"])
        if cfg.detection.val_images is not None and int(cfg.detection.val_images) < len(val_data["images"]):
            prepared["val_ann"] = str(write_val_subset(val_data, int(cfg.detection.val_images),
                                                       folder.lvis_val_subset))
            prepared["eval_images"] = int(cfg.detection.val_images)
    return prepared


# ----------------------------------------------------------------------------- the mmdet config

def _dataset_node(dataloader) -> dict:
    """The LVIS dataset inside an optional ClassBalancedDataset (repeat-factor) wrapper."""
    dataset = dataloader["dataset"]
    return dataset["dataset"] if dataset.get("type") == "ClassBalancedDataset" else dataset


METRICS = {"lvis": "LVISMetric", "coco": "CocoMetric"}    # detection.evaluator -> mmdet's metric class
DATA_KEYS = ("train_dataloader", "val_dataloader", "test_dataloader", "val_evaluator", "test_evaluator")
RFS_THRESHOLD = 1e-3          # LVIS's repeat-factor sampling threshold (Gupta et al.; mmdet's sample1e-3)
SCHEDULES = {"1x": (12, [8, 11]), "2x": (24, [16, 22])}    # epochs, lr steps (x0.1): mmdet's schedules
ENH_NMS_IOU, PLAIN_NMS_IOU, NORMED_MASK_TEMPERATURE = 0.3, 0.5, 20


def apply_switches(mm, cfg: DictConfig):
    """``detection.sampler``, ``detection.enh`` and ``detection.schedule`` on the mmdet config:
    the ablation switches of GOL's Tables 2 and 5 on one detector (null: the config's own)."""
    det = cfg.detection
    loader = mm.train_dataloader
    if det.sampler not in (None, "random", "rfs"):
        raise ConfigError(f"detection.sampler={det.sampler!r}: expected random, rfs or null (the config's)")
    if det.sampler == "random" and loader["dataset"].get("type") == "ClassBalancedDataset":
        loader["dataset"] = loader["dataset"]["dataset"]
    elif det.sampler == "rfs" and loader["dataset"].get("type") != "ClassBalancedDataset":
        loader["dataset"] = dict(type="ClassBalancedDataset", oversample_thr=RFS_THRESHOLD, dataset=loader["dataset"])
    if det.enh is not None:
        if not isinstance(det.enh, bool):
            raise ConfigError(f"detection.enh={det.enh!r}: expected true, false or null (the config's)")
        if "roi_head" not in mm.model:
            raise ConfigError(f"detection.enh={det.enh} switches a mask head and a second stage's box NMS; "
                              f"detector {cfg.detector.name} has neither (a dense detector)")
        for head in as_list(mm.model["roi_head"].get("mask_head") or []):
            if det.enh:
                head["predictor_cfg"] = dict(type="NormedConv2d", tempearture=NORMED_MASK_TEMPERATURE)
            else:
                head.pop("predictor_cfg", None)     # mmdet's default: a plain Conv2d
        mm.model["test_cfg"]["rcnn"]["nms"] = dict(type="nms", iou_threshold=ENH_NMS_IOU if det.enh else PLAIN_NMS_IOU)
    if det.schedule is not None:
        if det.schedule not in SCHEDULES:
            raise ConfigError(f"detection.schedule={det.schedule!r}: expected {', '.join(SCHEDULES)} or null")
        epochs, steps = SCHEDULES[det.schedule]
        mm.train_cfg["max_epochs"] = epochs
        steppers = [s for s in mm.param_scheduler if s.get("type") == "MultiStepLR"]
        if len(steppers) != 1:
            raise ConfigError(f"detection.schedule={det.schedule} sets one MultiStepLR; the config has {len(steppers)}")
        steppers[0].update(end=epochs, milestones=list(steps))
    return mm


def switches_in(mm) -> dict:
    """What the final config trains with: the record's sampler, enh and schedule."""
    heads = as_list((mm.model.get("roi_head") or {}).get("mask_head") or [])
    normed = bool(heads) and all((h.get("predictor_cfg") or {}).get("type") == "NormedConv2d" for h in heads)
    nms = final_test_cfg(mm).get("nms", {}).get("iou_threshold")
    steppers = [s for s in mm.param_scheduler if s.get("type") == "MultiStepLR"]
    return {"sampler": "rfs" if mm.train_dataloader["dataset"].get("type") == "ClassBalancedDataset" else "random",
            "enh": normed and nms == ENH_NMS_IOU, "normed_mask": normed, "nms_iou": nms,
            "schedule_epochs": int(mm.train_cfg["max_epochs"]),
            "lr_steps": list(steppers[0]["milestones"]) if len(steppers) == 1 else None}


def final_test_cfg(mm) -> dict:
    """The test settings of the detector's last stage: an R-CNN's ``test_cfg.rcnn``, a dense
    detector's ``test_cfg`` itself (score_thr, nms, max_per_img)."""
    test_cfg = mm.model["test_cfg"]
    return test_cfg["rcnn"] if "rcnn" in test_cfg else test_cfg


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


def apply_run_settings(mm, cfg: DictConfig, out_dir: Path, class_names: tuple[str, ...],
                       val_ann: str | Path | None = None, world_size: int = 1):
    """Data, batch size and learning rate, schedule, evaluation, seed and output folder of this
    run, applied to any mmdet LVIS config (``mm``, changed in place and returned)."""
    dataset_type, train_prefix, val_prefix, _ = dataset_spec(cfg)
    train_ann, default_val = annotation_paths(cfg)
    val_ann = str(val_ann or default_val)
    det = cfg.detection
    image_root = str(Path(cfg.data.root).expanduser()) + "/"
    metainfo = dict(classes=tuple(class_names))     # the annotation file's categories, in its order
    for loader, ann, prefix, count in ((mm.train_dataloader, train_ann, train_prefix, det.train_images),
                                       (mm.val_dataloader, val_ann, val_prefix, None),
                                       (mm.test_dataloader, val_ann, val_prefix, None)):
        if loader is None:
            continue
        dataset = _dataset_node(loader)
        dataset.update(type=dataset_type, data_root="", ann_file=str(ann), data_prefix=dict(img=image_root + prefix),
                       metainfo=metainfo)
        if count is not None:
            dataset["indices"] = int(count)
        if det.image_scale is not None:
            _set_image_scale(dataset["pipeline"], tuple(int(v) for v in det.image_scale))
        if det.num_workers is not None:
            loader["num_workers"] = int(det.num_workers)
            loader["persistent_workers"] = int(det.num_workers) > 0
    # the global batch over all processes; mmengine scales the lr linearly from 16 images
    mm.train_dataloader["batch_size"] = global_batch_size(cfg, world_size) // world_size
    mm.auto_scale_lr = dict(enable=True, base_batch_size=BASE_BATCH_SIZE)
    for evaluator in (mm.val_evaluator, mm.test_evaluator):
        evaluator["ann_file"] = val_ann
        if det.evaluator == "fast":
            _use_fast_metric(evaluator)
        elif METRICS[det.evaluator] != evaluator.get("type"):
            raise ConfigError(f"detection.evaluator={det.evaluator} is mmdet's {METRICS[det.evaluator]}, but detector "
                              f"{cfg.detector.name}'s config evaluates with {evaluator.get('type')!r}: a "
                              f"{'COCO' if det.evaluator == 'coco' else 'LVIS'} detector config is needed")

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
    last_test = final_test_cfg(mm)
    for key in ("score_thr", "max_per_img"):
        if det[key] is not None:
            last_test[key] = det[key]
    if det.rpn_proposals is not None:
        if "rpn" not in mm.model["test_cfg"]:
            raise ConfigError(f"detection.rpn_proposals={det.rpn_proposals}: detector {cfg.detector.name} has no "
                              "region proposal network (a dense detector)")
        mm.model["test_cfg"]["rpn"]["max_per_img"] = int(det.rpn_proposals)
    mm.load_from = det.load_from
    mm.work_dir = str(out_dir)
    if det.get("grad_stats"):
        mm.custom_hooks = [*(mm.get("custom_hooks") or []), positive_gradient_hook(str(out_dir / GRAD_STATS_FILE))]
    mm.randomness = dict(seed=int(cfg.seed))
    mm.launcher = "pytorch" if world_size > 1 else "none"
    if world_size > 1 and not torch.cuda.is_available():
        # mmengine's default DDP wrapper passes device_ids=[LOCAL_RANK], which only GPU modules take
        mm.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None)
    return mm


def default_head_init(head: dict) -> list[dict] | None:
    """The ``init_cfg`` mmdet's head class gives itself when none is configured (for a
    Shared2FCBBoxHead: Normal(0.01) on fc_cls, Normal(0.001) on fc_reg, Xavier on the shared
    fcs), read from a tiny instance built under a forked RNG, so nothing is copied from mmdet
    and the run's random stream is untouched."""
    import copy

    from mmdet.registry import MODELS
    probe = copy.deepcopy(dict(head))
    probe.pop("init_cfg", None)     # the class's own default (a RetinaHead's is not None)
    probe.update(num_classes=1, loss_cls=dict(type="CrossEntropyLoss", use_sigmoid=False))
    for key in ("in_channels", "fc_out_channels", "conv_out_channels", "roi_feat_size", "feat_channels"):
        if key in probe:
            probe[key] = 1
    with torch.random.fork_rng(devices=[]):
        init_cfg = MODELS.build(probe).init_cfg
    return copy.deepcopy(init_cfg) if init_cfg else None


def dense_classifier_name(init_cfg) -> str:
    """The classifier conv of a dense head: the layer mmdet's own init gives the focal-loss prior
    (``bias_prob``; RetinaHead: ``retina_cls``), so nothing is hard-coded per head class."""
    found = {o["name"] for entry in as_list(init_cfg or []) for o in as_list(entry.get("override") or [])
             if "bias_prob" in o}
    if len(found) != 1:
        raise ConfigError(f"cannot tell the classifier of this dense head from mmdet's init {init_cfg!r}: "
                          f"expected one override with bias_prob, found {sorted(found)}")
    return found.pop()


def box_classifier_loss(cfg: DictConfig, num_classes: int, frequency_file: str | None = None,
                        lambda_: float | None = None) -> dict:
    """The loss_cls config of the run's box classifier (mmdet knows the class by its name)."""
    cls = DETECTION_LOSSES.get(cfg.detector.loss).cls
    loss = dict(type=cls.__name__, activation=cfg.activation, num_classes=num_classes,
                loss_weight=1.0, activation_options=activation_options(cfg, cfg.activation))
    if cls.background_logit:
        loss["softmax_scores"] = resolve_scoring(cfg) == "softmax"
    if cls.tail_frequencies:
        loss.update(lambda_=float(lambda_), frequency_file=frequency_file)
    elif cls.image_counts:
        loss["frequency_file"] = frequency_file
    return loss


def lambda_of(cfg: DictConfig) -> float | None:
    value = cfg.detection["lambda"]
    value = value if value is not None else dataset_spec(cfg)[3]
    return None if value is None else float(value)     # None: the task has no tail losses (COCO)


def as_list(node) -> list:
    """A head given as one dict (Mask R-CNN) or as a list of them (the stages of a Cascade
    Mask R-CNN or a Hybrid Task Cascade): always the list."""
    return list(node) if isinstance(node, (list, tuple)) else [node]


def apply_box_classifier(mm, cfg: DictConfig, stats: CategoryStats, frequency_file: str | None):
    """The box classifier from lt_bench: loss (and its activation), width, scoring and init, on
    every box head (each stage of a cascade has its own classifier and loss, as in mmdet's
    cascade configs), and the width of every mask head."""
    if is_dense(cfg):
        return _apply_dense_classifier(mm, cfg, stats, frequency_file)
    roi = mm.model["roi_head"]
    if is_stock(cfg):               # the config's loss, predictor and init; only the width is the file's
        for head in as_list(roi["bbox_head"]):
            head["num_classes"] = len(stats.ids)
            if "num_classes" in (head.get("loss_cls") or {}):
                head["loss_cls"]["num_classes"] = len(stats.ids)
        for head in as_list(roi.get("mask_head") or []):
            head["num_classes"] = len(stats.ids)
        return mm
    for head in as_list(roi["bbox_head"]):
        head["num_classes"] = len(stats.ids)
        # assigned, not update()d: mmengine's ConfigDict.update merges, which would keep the
        # stock loss's keys (use_sigmoid, ...) in ours
        head["loss_cls"] = box_classifier_loss(cfg, len(stats.ids), frequency_file, lambda_of(cfg))
        head["init_cfg"] = with_classifier_init(cfg, as_list(default_head_init(head) or []), "fc_cls")
    for head in as_list(roi.get("mask_head") or []):
        head["num_classes"] = len(stats.ids)
    return mm


def _apply_dense_classifier(mm, cfg: DictConfig, stats: CategoryStats, frequency_file: str | None):
    """A dense detector's head (RetinaNet): the run's loss over its activation, C outputs, and
    mmdet's own head init followed by the classifier init on its classifier conv."""
    head = mm.model.get("bbox_head")
    if head is None or "roi_head" in mm.model:
        raise ConfigError(f"detector {cfg.detector.name} is declared dense (detector.kind), but its mmdet config "
                          f"{cfg.detector.mmdet_config} has {'a roi_head' if head is not None else 'no bbox_head'}")
    head["num_classes"] = len(stats.ids)
    if is_stock(cfg):
        return mm
    recipe = head.get("loss_cls") or {}       # the config's focal gamma and alpha stay the detector's recipe
    head["loss_cls"] = {**box_classifier_loss(cfg, len(stats.ids), frequency_file, lambda_of(cfg)), "use_sigmoid": True,
                        "gamma": recipe.get("gamma", FOCAL_GAMMA), "alpha": recipe.get("alpha", FOCAL_ALPHA)}
    own = as_list(default_head_init(head) or [])   # a RetinaHead's default is one dict
    head["init_cfg"] = with_classifier_init(cfg, own, dense_classifier_name(own))
    return mm


def with_classifier_init(cfg: DictConfig, own: list[dict], classifier: str) -> list[dict]:
    """mmdet's own init of a head (its defaults, ``own``), then the run's classifier init on the
    layer named ``classifier`` (``keep``: mmdet's stays)."""
    return own + [dict(type="ActivationClassifierInit", activation=cfg.activation, scheme=classifier_scheme(cfg),
                       activation_options=activation_options(cfg, cfg.activation), override=dict(name=classifier))]


def detector_config(cfg: DictConfig):
    """The detector's mmdet config as its files give it (and its data_config's data)."""
    from mmengine.config import Config
    mm = Config.fromfile(str(config_file(cfg.detector.mmdet_config)))
    if cfg.detector.get("data_config"):
        # a model config whose data is another dataset's (mmdet's HTC: COCO): the data, the
        # evaluators and nothing else from the data config
        data = Config.fromfile(str(config_file(cfg.detector.data_config)))
        for key in DATA_KEYS:
            mm[key] = data[key]
    return mm


def switched(cfg: DictConfig) -> dict:
    """The switches (detection.sampler/enh/schedule) that change the detector's own config, with
    their values: a switched run is another model than the detector's paper row, so its record's
    ``model`` says so (``mask_rcnn_r50[sampler=rfs]``) and the leaderboard never compares it with
    that row."""
    if all(cfg.detection.get(k) is None for k in ("sampler", "enh", "schedule")):
        return {}
    own = switches_in(detector_config(cfg))
    after = switches_in(apply_switches(detector_config(cfg), cfg))
    return {k: after[k] for k in ("sampler", "normed_mask", "nms_iou", "schedule_epochs", "lr_steps")
            if after[k] != own[k]}


def model_name(cfg: DictConfig) -> str:
    """The record's ``model``: the detector, and the switches that changed it."""
    changes = switched(cfg)
    names = {"normed_mask": "normed_mask", "nms_iou": "nms", "schedule_epochs": "epochs", "lr_steps": "steps"}
    return cfg.detector.name + (f"[{','.join(f'{names.get(k, k)}={v}' for k, v in changes.items())}]"
                                if changes else "")


def build_mmdet_config(cfg: DictConfig, out_dir: Path, stats: CategoryStats, frequency_file: str | None = None,
                       val_ann: str | Path | None = None, world_size: int = 1):
    """The detector's mmdet config with this run's settings and box classifier."""
    mm = detector_config(cfg)
    apply_switches(mm, cfg)
    apply_run_settings(mm, cfg, out_dir, stats.names, val_ann, world_size)
    return apply_box_classifier(mm, cfg, stats, frequency_file or stats.source)


# ----------------------------------------------------------------------------- the run

# the record's keys -> mmdet's CocoMetric names (pycocotools' stats, rounded by mmdet to 3 decimals)
COCO_KEYS = {"AP": "mAP", "AP50": "mAP_50", "AP75": "mAP_75", "APs": "mAP_s", "APm": "mAP_m", "APl": "mAP_l"}


def _record(cfg: DictConfig, metrics: dict, seconds: float, world_size: int, run: dict) -> dict:
    lvis = is_lvis(cfg)
    empty = not any(key.startswith(("lvis/", "coco/")) for key in metrics)
    if empty:   # mmdet's LVIS metric returns nothing when no detection passed score_thr
        log.warning("no detection above the score threshold: every AP is 0")

    def pick(kind: str) -> dict:
        """Percentages; None where the metric has no value (-1: no ground truth in that group,
        such as APr on a val subset without rare categories; COCO has no APr/APc/APf)."""
        if empty:
            return {k: 0.0 if lvis or k not in ("APr", "APc", "APf") else None for k in SUMMARY_KEYS}
        names = {k: f"lvis/{kind}_{k}" for k in SUMMARY_KEYS} if lvis else \
            {k: f"coco/{kind}_{COCO_KEYS[k]}" for k in SUMMARY_KEYS if k in COCO_KEYS}
        values = {k: float(metrics[name]) for k, name in names.items() if name in metrics}
        return {k: 100.0 * values[k] if k in values and values[k] >= 0 else None for k in SUMMARY_KEYS}
    ap_type = run.get("ap_type", "segm")
    segm, bbox = pick("segm") if ap_type == "segm" else {}, pick("bbox")
    headline = segm if ap_type == "segm" else bbox
    stock = is_stock(cfg)
    if stock:
        method, activation, loss = str(cfg.detector.method), None, None
    else:
        with_background = DETECTION_LOSSES.get(cfg.detector.loss).cls.background_logit
        method = cfg.activation if with_background else f"{cfg.detector.loss}+{cfg.activation}"
        activation, loss = cfg.activation, cfg.detector.loss
    return {
        "schema": SCHEMA_VERSION, "kind": "detection", "task": cfg.task.name, "dataset": f"{cfg.task.name}_{cfg.task.version}",
        "version": cfg.task.version, "model": model_name(cfg), "detector": cfg.detector.name, "stage": None,
        "method": method,
        "activation": activation, "activation_options": None if stock else activation_options(cfg, activation),
        "loss": loss, "box_classifier": "stock" if stock else "lt_bench", "scoring": resolve_scoring(cfg),
        "classifier_init": None if stock else classifier_scheme(cfg),
        "eval_split": "val",
        # mask AP (the paper's AP; box AP for a box-only detector, ap_type bbox) and box AP, percentages
        **{k: headline.get(k) for k in ("AP", "AP50", "AP75", "APr", "APc", "APf")}, "APbox": bbox.get("AP"),
        "segm": segm, "bbox": bbox, "no_detections": empty,
        **run,
        "seed": int(cfg.seed), "config_hash": config_hash(cfg), "setup_hash": config_hash(cfg, exclude=("seed",)),
        "git_rev": git_revision(), "world_size": world_size, "mmdet_config": cfg.detector.mmdet_config,
        "seconds": round(seconds, 3), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def per_category_record(runner, stats: CategoryStats) -> dict | None:
    """Per-category mask and box AP (percentages; None without ground truth) with each
    category's training image count and frequency group, in ascending category id order, from
    the fast evaluator; None with ``detection.evaluator=lvis`` (mmdet's metric keeps none)."""
    metrics = getattr(getattr(getattr(runner, "test_loop", None), "evaluator", None), "metrics", [])
    found = [m.per_category for m in metrics if getattr(m, "per_category", None)]
    if not found:
        return None
    by_id = {int(i): k for k, i in enumerate(stats.ids.tolist())}
    ids = sorted(next(iter(found[0].values())))
    out = {"category_ids": ids, "names": [stats.names[by_id[i]] if i in by_id else None for i in ids],
           "image_count": [int(stats.image_count[by_id[i]]) if i in by_id else None for i in ids],
           "frequency": [str(stats.frequency[by_id[i]]) if i in by_id else None for i in ids]}
    for kind, key in (("segm", "AP"), ("bbox", "APbox")):
        if kind in found[0]:
            out[key] = [None if (v := found[0][kind][i]) is None else round(100.0 * v, 4) for i in ids]
    return out


def run_detection(cfg: DictConfig) -> dict:
    """Train (unless detection.train=false) and evaluate; returns the record written."""
    try:
        from mmengine.runner import Runner
    except ImportError as err:
        raise ConfigError(f"task=lvis needs the detection extra (mmdet, mmcv, mmengine, lvis): "
                          f"run `make det` ({err})") from err
    from lt_bench import distributed
    import lt_bench.detection.registry  # noqa: F401  (the plugin's losses, init and metric)
    started = time.perf_counter()
    ctx = distributed.setup(cfg.device, float(cfg.distributed.timeout_minutes))
    try:
        out_dir = Path(ctx.broadcast_object(str(resolve_out_dir(cfg))))
        batch = global_batch_size(cfg, ctx.world_size)
        prepared: dict | LtBenchError | None = None
        if ctx.is_main:
            try:
                prepared = prepare_inputs(cfg, out_dir)
            except LtBenchError as err:      # every rank stops with rank 0's message
                prepared = err
        prepared = ctx.broadcast_object(prepared)
        if isinstance(prepared, LtBenchError):
            raise prepared
        stats = load_category_stats(prepared["categories"])
        mm = build_mmdet_config(cfg, out_dir, stats, prepared["categories"], prepared["val_ann"], ctx.world_size)
        base_lr = float(mm.optim_wrapper["optimizer"]["lr"])
        runner = Runner.from_cfg(mm)
        if cfg.detection.train:
            runner.train()
        metrics = runner.test()
        run = {"batch_size": batch, "lr": base_lr * batch / BASE_BATCH_SIZE, "base_lr": base_lr,
               "base_batch_size": BASE_BATCH_SIZE, "num_classes": len(stats.ids),
               "eval_images": prepared["eval_images"], "eval_subset": prepared["val_ann"] != str(annotation_paths(cfg)[1]),
               "train_images": cfg.detection.train_images,
               "epochs": runner.epoch if cfg.detection.train else 0,
               "iterations": runner.iter if cfg.detection.train else 0}
        if not is_stock(cfg) and DETECTION_LOSSES.get(cfg.detector.loss).cls.tail_frequencies:
            run.update({"lambda": lambda_of(cfg), "tail_categories": int(stats.tail(lambda_of(cfg)).sum()),
                        "frequency_images": stats.num_images})
        run.update(switches_in(mm))
        run["ap_type"] = "segm" if "segm" in as_list(mm.test_evaluator.get("metric", "bbox")) else "bbox"
        if is_dense(cfg) and not is_stock(cfg):
            loss_cfg = mm.model["bbox_head"]["loss_cls"]
            alpha = loss_cfg["alpha"]
            run.update(focal_gamma=float(loss_cfg["gamma"]), focal_alpha=None if alpha is None else float(alpha))
        run["per_category"] = per_category_record(runner, stats) if ctx.is_main else None
        record = _record(cfg, metrics, time.perf_counter() - started, ctx.world_size, run)
        if ctx.is_main:
            upsert_record(RunFolder(out_dir).results, record)
            subset = f" ({record['eval_images']} val images only)" if record["eval_subset"] else ""
            print(f"\n{cfg.task.name} {cfg.task.version}, {cfg.detector.name}, {record['method']}{subset} -> "
                  f"{RunFolder(out_dir).results}\n" + "  ".join(f"{k} {record[k]:.1f}" for k in
                                                           ("AP", "APr", "APc", "APf", "APbox")
                                                           if record[k] is not None), flush=True)
        return record
    finally:
        distributed.teardown(ctx)
