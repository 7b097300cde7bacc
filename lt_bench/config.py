"""Configuration checks that run before any data is read, and the config's identity hash.

Hydra already rejects unknown keys (the composed config is in struct mode) and unknown
config-group options (task=..., model=...).  Values that name things (activations, models,
schedules, ...) are checked here, so that a typo never silently runs another method.
"""
from __future__ import annotations

import hashlib
import json
from numbers import Number
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lt_bench.activations import ACTIVATIONS, CLASSIFIER_INITS, build_activation
from lt_bench.data import DATASETS
from lt_bench.data.samplers import SAMPLERS
from lt_bench.data.transforms import TRANSFORMS
from lt_bench.distributed import resolve_device
from lt_bench.errors import ConfigError
from lt_bench.models import is_known_model
from lt_bench.stages.methods import STAGE2_METHODS

MODES = ("train", "check_data", "leaderboard")
STAGES = ("all", "1", "2")
SCHEDULES = ("multistep", "cosine", "constant")
AMP_MODES = ("none", "bf16", "fp16")
STAGE2_INITS = ("stage1", "reinit")
# Keys that say where and how a run executes, not what it computes: excluded from the hash.
RUNTIME_KEYS = ("out_dir", "resume", "progress", "mode", "stage", "stage1.checkpoint", "device",
                "data.root", "data.splits_dir", "data.download", "data.num_workers", "data.persistent_workers",
                "data.prefetch_factor", "distributed", "check_data", "leaderboard", "plots")


def _one_of(what: str, value, valid) -> None:
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; valid: {', '.join(map(str, valid))}")


def activation_options(cfg: DictConfig, name: str) -> dict:
    options = cfg.get("activations", {}).get(name) or {}
    return OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) else dict(options)


def build_configured_activation(cfg: DictConfig, name: str):
    try:
        return build_activation(name, **activation_options(cfg, name))
    except TypeError as err:
        raise ConfigError(f"activations.{name}: {err}") from err


def check_batch_sizes(cfg: DictConfig, world_size: int) -> None:
    """Batch sizes are global (over all ranks), so a recipe means the same on any world size."""
    for stage in ("stage1", "stage2"):
        size = cfg[stage].batch_size
        if size % world_size:
            raise ConfigError(f"{stage}.batch_size={size} is the global batch: it must divide evenly "
                              f"over {world_size} ranks")


def _check_stage_recipe(stage: str, recipe: DictConfig) -> None:
    _one_of(f"{stage}.schedule", recipe.schedule, SCHEDULES)
    for key in ("epochs", "batch_size"):
        if not isinstance(recipe[key], int) or recipe[key] < 1:
            raise ConfigError(f"{stage}.{key} must be a positive integer, got {recipe[key]!r}")
    if not isinstance(recipe.lr, Number) or recipe.lr <= 0:
        raise ConfigError(f"{stage}.lr must be a positive number, got {recipe.lr!r}")


DETECTION_LOSSES = ("activation_ce", "eql", "drop")
LVIS_VERSIONS = ("v1", "v0.5")
LVIS_EVALUATORS = ("fast", "lvis")


DETECTION_CLASSIFIER_INITS = ("paper", "prior", "mmdet")
DETECTION_SCORINGS = ("auto", "activation", "softmax")


def _validate_detection(cfg: DictConfig) -> None:
    _one_of("task.version", cfg.task.version, LVIS_VERSIONS)
    _one_of("detection.evaluator", cfg.detection.evaluator, LVIS_EVALUATORS)
    _one_of("activation", cfg.activation, sorted(ACTIVATIONS))
    build_configured_activation(cfg, cfg.activation)
    _one_of("detection.classifier_init", cfg.detection.classifier_init, DETECTION_CLASSIFIER_INITS)
    _one_of("detection.scoring", cfg.detection.scoring, DETECTION_SCORINGS)
    batch = cfg.detection.batch_size
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ConfigError(f"detection.batch_size must be a positive integer (images per iteration over "
                          f"all GPUs), got {batch!r}")
    val_images = cfg.detection.val_images
    if val_images is not None and (not isinstance(val_images, int) or isinstance(val_images, bool) or val_images < 1):
        raise ConfigError(f"detection.val_images must be a positive integer or null, got {val_images!r}")
    if cfg.get("detector") is None:
        raise ConfigError("task=lvis needs a detector (detector=mask_rcnn_r50, gol_r50, ...)")
    _one_of("detector.loss", cfg.detector.loss, DETECTION_LOSSES)
    if cfg.detector.loss != "activation_ce" and not build_activation(cfg.activation).binary:
        raise ConfigError(f"detector {cfg.detector.name} uses {cfg.detector.loss}, which drops per-class "
                          f"negative terms: activation must be sigmoid or gumbel, not {cfg.activation}")
    if cfg.detector.loss != "activation_ce" and cfg.detection.scoring == "softmax":
        raise ConfigError(f"detection.scoring=softmax needs the C + 1 outputs of activation_ce; detector "
                          f"{cfg.detector.name} uses {cfg.detector.loss} (C outputs, no background logit)")
    path = Path(__file__).resolve().parent.parent / cfg.detector.mmdet_config
    if not path.is_file():
        raise ConfigError(f"detector.mmdet_config={cfg.detector.mmdet_config}: no such file under the repository")
    if cfg.imbalance is not None:
        raise ConfigError(f"task lvis has a fixed long-tailed split; remove imbalance={cfg.imbalance}")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first bad value and the valid ones."""
    _one_of("mode", cfg.mode, MODES)
    if cfg.mode == "leaderboard":
        return                      # reads records only; the leaderboard checks its own options
    _one_of("task.kind", cfg.task.get("kind", "classification"), ("classification", "detection"))
    if cfg.task.get("kind") == "detection":
        _one_of("mode for task lvis", cfg.mode, ("train",))
        return _validate_detection(cfg)
    _one_of("stage", str(cfg.stage), STAGES)
    _one_of("task.dataset", cfg.task.dataset, sorted(DATASETS))
    _one_of("task.transform", cfg.task.transform, sorted(TRANSFORMS))
    if not is_known_model(cfg.model.name):
        from lt_bench.models import build_model  # raises with the list of valid names
        build_model(cfg.model.name, 2)
    if cfg.task.fixed_split:
        if cfg.imbalance is not None:
            raise ConfigError(f"task {cfg.task.name} has a fixed long-tailed split (its split files); "
                              f"remove imbalance={cfg.imbalance}")
    elif cfg.imbalance is None or not isinstance(cfg.imbalance, Number) or cfg.imbalance < 1:
        raise ConfigError(f"imbalance must be a number >= 1 for task {cfg.task.name}, got {cfg.imbalance!r}")
    _one_of(f"eval.split for task {cfg.task.name}", cfg.eval.split, list(cfg.task.eval_splits))
    pretrained = cfg.model.get("pretrained")
    if pretrained not in (None, "timm") and not Path(pretrained).expanduser().is_file():
        raise ConfigError(f"model.pretrained={pretrained}: file not found (use a weights file, 'timm' "
                          "to download timm's weights, or null for a random init)")
    _one_of("stage1.activation", cfg.stage1.activation, sorted(ACTIVATIONS))
    _one_of("stage2.activation", cfg.stage2.activation, sorted(ACTIVATIONS))
    for name in cfg.get("activations", {}):
        _one_of("activation in activations.<name>", name, sorted(ACTIVATIONS))
        build_configured_activation(cfg, name)
    _check_stage_recipe("stage1", cfg.stage1)
    _check_stage_recipe("stage2", cfg.stage2)
    _one_of("stage2.init", cfg.stage2.init, STAGE2_INITS)
    _one_of("stage2.method", cfg.stage2.method, STAGE2_METHODS)
    _one_of("stage2.sampler", cfg.stage2.sampler, list(SAMPLERS))
    if cfg.stage2.tau is not None and not (isinstance(cfg.stage2.tau, Number) and cfg.stage2.tau >= 0):
        raise ConfigError(f"stage2.tau must be a number >= 0 or null, got {cfg.stage2.tau!r}")
    if (cfg.stage2.method == "tau_norm" and cfg.stage2.tau is None
            and "val" not in cfg.task.get("eval_splits", [])):
        raise ConfigError(f"stage2.method=tau_norm chooses tau on a val split, which task {cfg.task.name} "
                          "has not: give stage2.tau=VALUE")
    _one_of("stage2.reinit_scheme", cfg.stage2.reinit_scheme, [s for s in CLASSIFIER_INITS if s != "keep"])
    scale = cfg.stage2.loss_scale
    if scale != "per_class" and not (isinstance(scale, Number) and scale > 0):
        raise ConfigError(f"stage2.loss_scale must be 'per_class' or a positive number, got {scale!r}")
    _one_of("train.amp", cfg.train.amp, AMP_MODES)
    device = resolve_device(cfg.device)
    if cfg.train.amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs a CUDA device; use train.amp=bf16 or none on CPU")
    if str(cfg.stage) == "2" and not cfg.stage1.checkpoint:
        raise ConfigError("stage=2 retrains the classifier of a stage-1 model: pass stage1.checkpoint=PATH")


def _drop(container: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        container = container.get(p, {})
        if not isinstance(container, dict):
            return
    container.pop(leaf, None)


def config_hash(cfg: DictConfig, exclude: tuple[str, ...] = ()) -> str:
    """sha256 (first 16 hex digits) of the resolved config without its runtime keys: two
    runs with the same hash train the same thing.  ``exclude=("seed",)`` gives the hash
    shared by the seeds of one setup."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    for key in RUNTIME_KEYS + tuple(exclude):
        _drop(container, key)
    blob = json.dumps(container, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
