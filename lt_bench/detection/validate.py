"""Checks of a task=lvis config, before mmdet is imported (``check_detection_config``: no torch)
and before any annotation is read (``validate_detection``: the loss and the activation agree)."""
from __future__ import annotations

from omegaconf import DictConfig

from lt_bench.errors import ConfigError
from lt_bench.errors import check_one_of as one_of
from lt_bench.errors import check_positive_int as positive_int
from lt_bench.registries import ACTIVATIONS, CLASSIFIER_INITS, DETECTION_LOSSES
from lt_bench.run_folder import config_file

# (task, version) -> mmdet dataset type, image prefix of train and val (LVIS v1 reads paths from
# coco_url), the EQL/DropLoss frequency threshold lambda of the papers (None: no tail losses)
DATASETS = {
    ("lvis", "v1"): ("LVISV1Dataset", "", "", 0.0011),
    ("lvis", "v0.5"): ("LVISV05Dataset", "train2017/", "val2017/", 0.00177),
    ("coco", "2017"): ("CocoDataset", "train2017/", "val2017/", None),
}
LVIS_VERSIONS = {version: spec for (task, version), spec in DATASETS.items() if task == "lvis"}
# per task: the evaluators it takes (the first is the default) and the mmdet metric each replaces
EVALUATORS = {"lvis": ("fast", "lvis"), "coco": ("coco",)}
SCORINGS = ("auto", "activation", "softmax")


BOX_CLASSIFIERS = ("lt_bench", "stock")
DETECTOR_KINDS = ("two_stage", "dense")


def is_dense(cfg: DictConfig) -> bool:
    """``detector.kind: dense``: a one-stage detector whose classifier is a dense head at the
    model's top (RetinaNet: ``model.bbox_head``), scored per anchor; ``two_stage`` (the default):
    an R-CNN whose box classifier sits in ``model.roi_head``."""
    kind = cfg.detector.get("kind") or "two_stage"
    if kind not in DETECTOR_KINDS:
        raise ConfigError(f"detector.kind={kind!r}: expected one of {', '.join(DETECTOR_KINDS)}")
    return kind == "dense"


def classifier_scheme(cfg: DictConfig) -> str:
    """The classifier init: the detector's own (``detector.classifier_init``, a dense head's
    focal_prior) where it sets one, else ``detection.classifier_init`` (box heads: paper)."""
    own = cfg.detector.get("classifier_init")
    if own is None:
        return cfg.detection.classifier_init
    if cfg.detection.classifier_init != "paper":
        raise ConfigError(f"detector {cfg.detector.name} sets its classifier init (detector.classifier_init={own}); "
                          f"change that instead of detection.classifier_init={cfg.detection.classifier_init}")
    return own


def is_stock(cfg: DictConfig) -> bool:
    """``detector.box_classifier: stock``: the mmdet config's own box classifier (loss, predictor,
    init) is kept, as in mmdet's Seesaw LVIS configs (context rows); ``lt_bench`` (the default)
    puts the run's loss and activation on it."""
    kind = cfg.detector.get("box_classifier") or "lt_bench"
    if kind not in BOX_CLASSIFIERS:
        raise ConfigError(f"detector.box_classifier={kind!r}: expected one of {', '.join(BOX_CLASSIFIERS)}")
    return kind == "stock"


def dataset_spec(cfg: DictConfig) -> tuple:
    """(mmdet dataset type, train prefix, val prefix, lambda) of the task and version."""
    one_of("task.name (a detection task)", cfg.task.name, EVALUATORS)
    one_of(f"task.version (of {cfg.task.name})", str(cfg.task.version),
           [v for (t, v) in DATASETS if t == cfg.task.name])
    return DATASETS[(cfg.task.name, str(cfg.task.version))]


def is_lvis(cfg: DictConfig) -> bool:
    return cfg.task.name == "lvis"


def check_detection_config(cfg: DictConfig) -> None:
    dataset_spec(cfg)
    one_of(f"detection.evaluator (task={cfg.task.name})", cfg.detection.evaluator, EVALUATORS[cfg.task.name])
    ACTIVATIONS.check(cfg.activation)
    CLASSIFIER_INITS.check(cfg.detection.classifier_init, "detection.classifier_init")
    if cfg.get("detector") is not None:
        CLASSIFIER_INITS.check(classifier_scheme(cfg), "detector.classifier_init")
        is_dense(cfg)
    one_of("detection.scoring", cfg.detection.scoring, SCORINGS)
    positive_int("detection.batch_size (images per iteration over all GPUs)", cfg.detection.batch_size)
    if cfg.detection.val_images is not None:
        positive_int("detection.val_images", cfg.detection.val_images)
    if cfg.get("detector") is None:
        raise ConfigError("task=lvis needs a detector (detector=mask_rcnn_r50, gol_r50, ...)")
    if is_stock(cfg):
        if not cfg.detector.get("method"):
            raise ConfigError(f"detector {cfg.detector.name} keeps its config's box classifier (box_classifier: stock): "
                              "it must name the method its records are filed under (detector.method, e.g. seesaw)")
    else:
        DETECTION_LOSSES.check(cfg.detector.loss)
    for key in ("mmdet_config", "data_config"):
        if cfg.detector.get(key) and not config_file(cfg.detector[key]).is_file():
            raise ConfigError(f"detector.{key}={cfg.detector[key]}: no such file under the repository")
    if cfg.imbalance is not None:
        raise ConfigError(f"task lvis has a fixed long-tailed split; remove imbalance={cfg.imbalance}")


def validate_detection(cfg: DictConfig) -> None:
    """What needs the loss classes and the activations (torch, not mmdet)."""
    from lt_bench.activations import configured_activation
    if is_stock(cfg):
        return
    loss = DETECTION_LOSSES.get(cfg.detector.loss).cls
    if loss.dense != is_dense(cfg):
        kind = "a dense head's (RetinaNet: focal)" if loss.dense else "a two-stage box head's"
        raise ConfigError(f"detector.loss={cfg.detector.loss} is {kind} loss; detector {cfg.detector.name} is "
                          f"{'dense' if is_dense(cfg) else 'two-stage'}: "
                          f"{'use detector.loss=focal' if is_dense(cfg) else 'choose a box-head loss'}")
    if not is_lvis(cfg) and (loss.tail_frequencies or loss.image_counts):
        raise ConfigError(f"detector.loss={cfg.detector.loss} weighs categories by LVIS's image frequencies; "
                          f"task={cfg.task.name} has none of its own: use it with task=lvis")
    activation = configured_activation(cfg, cfg.activation)
    if loss.binary_only and not activation.binary:
        raise ConfigError(f"detector {cfg.detector.name} uses {cfg.detector.loss}, which scores each class on its "
                          f"own: it needs a binary activation (sigmoid or gumbel), not {cfg.activation}")
    if cfg.detection.scoring == "softmax" and not loss.background_logit:
        raise ConfigError(f"detection.scoring=softmax needs the C + 1 outputs of activation_ce; detector "
                          f"{cfg.detector.name} uses {cfg.detector.loss} (C outputs, no background logit)")
