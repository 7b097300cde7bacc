"""Configuration checks, before any data is read.

Two phases.  ``check_config`` runs right after Hydra composes the config and imports nothing
heavy (no torch): every name is checked against its registry's listing (``Registry.names``
reads the sources), every closed choice against its values, so a typo fails in about a second
and names the valid values.  Hydra has already refused unknown keys and option files, and the
typed recipes (``stages/recipes.py``, ``stages/methods/``) have refused values of the wrong
type.  ``validate`` adds what needs the libraries (timm's model names, the activations'
options, the device).  Detection has its own checks in ``lt_bench.detection.validate``.
"""
from __future__ import annotations

from numbers import Number
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lt_bench.errors import ConfigError
from lt_bench.errors import check_one_of as one_of
from lt_bench.errors import check_positive_int as positive_int

MODES = ("train", "check_data", "leaderboard")
STAGES = ("all", "1", "2")
DEVICES = ("auto", "cpu", "cuda")
STAGE2_INITS = ("stage1", "reinit")
STAGE2_BN = ("train", "frozen")
SELECT = ("auto", "val", "test", "none")
KINDS = ("classification", "detection")


def check_config(cfg: DictConfig) -> None:
    """The checks that need no heavy import; ConfigError names the first bad value."""
    one_of("mode", cfg.mode, MODES)
    if cfg.mode == "leaderboard":
        return                      # reads records only; the leaderboard checks its own options
    one_of("device", cfg.device, DEVICES)
    one_of("task.kind", cfg.task.get("kind", "classification"), KINDS)
    if cfg.task.get("kind") == "detection":
        one_of("mode for task lvis", cfg.mode, ("train",))
        from lt_bench.detection.validate import check_detection_config
        return check_detection_config(cfg)
    _check_classification(cfg)


def _check_classification(cfg: DictConfig) -> None:
    from lt_bench.registries import ACTIVATIONS, AMP_MODES, DATASETS, IMAGE_DECODERS, TRANSFORMS
    one_of("stage", str(cfg.stage), STAGES)
    DATASETS.check(cfg.task.dataset)
    TRANSFORMS.check(cfg.task.transform)
    if cfg.task.fixed_split:
        if cfg.imbalance is not None:
            raise ConfigError(f"task {cfg.task.name} has a fixed long-tailed split (its split files); "
                              f"remove imbalance={cfg.imbalance}")
    elif cfg.imbalance is None or not isinstance(cfg.imbalance, Number) or cfg.imbalance < 1:
        raise ConfigError(f"imbalance must be a number >= 1 for task {cfg.task.name}, got {cfg.imbalance!r}")
    one_of(f"eval.split for task {cfg.task.name}", cfg.eval.split, cfg.task.eval_splits)
    one_of("eval.select", cfg.eval.select, SELECT)
    if cfg.eval.select == "val" and ("val" not in cfg.task.eval_splits or cfg.eval.split == "val"):
        raise ConfigError(f"eval.select=val chooses the best epoch on the val split and reports it on the test "
                          f"split: task {cfg.task.name} with eval.split={cfg.eval.split} has no such pair "
                          "(eval.select=test|none)")
    _check_eval_and_run(cfg)
    pretrained = cfg.model.get("pretrained")
    if pretrained == "torchvision":
        from lt_bench.models.pretrained import torchvision_weights
        torchvision_weights(cfg.model.name)     # ConfigError unless torchvision has weights for it
    elif pretrained not in (None, "timm") and not Path(pretrained).expanduser().is_file():
        raise ConfigError(f"model.pretrained={pretrained}: file not found (use a weights file, 'timm' "
                          "for timm's weights, 'torchvision' for torchvision's original ImageNet weights, "
                          "or null for a random init)")
    for name in cfg.get("activations", {}):
        ACTIVATIONS.check(name, "activation in activations.<name>")
    _check_stage1(cfg.stage1, str(cfg.stage))
    _check_stage2(cfg.stage2, cfg.task)
    AMP_MODES.check(cfg.train.amp)
    IMAGE_DECODERS.check(cfg.data.get("decoder", "pil"))
    _check_compile(cfg.train)
    if str(cfg.stage) == "2" and not cfg.stage1.checkpoint:
        raise ConfigError("stage=2 retrains the classifier of a stage-1 model: pass stage1.checkpoint=PATH")


def _check_compile(train: DictConfig) -> None:
    if not isinstance(train.get("compile", False), bool):
        raise ConfigError(f"train.compile must be true or false, got {train.compile!r}")
    if train.get("compile"):
        import torch
        backends = torch._dynamo.list_backends(exclude_tags=())
        if train.compile_backend not in backends:
            raise ConfigError(f"train.compile_backend={train.compile_backend!r} is not a torch.compile backend "
                              f"(choose from {', '.join(sorted(backends))})")


def _check_recipe(stage: str, recipe: DictConfig) -> None:
    from lt_bench.registries import SCHEDULES
    SCHEDULES.check(recipe.schedule, f"{stage}.schedule")
    positive_int(f"{stage}.epochs", recipe.epochs)
    positive_int(f"{stage}.batch_size", recipe.batch_size)
    if not _finite(recipe.lr) or recipe.lr <= 0:
        raise ConfigError(f"{stage}.lr must be a positive number, got {recipe.lr!r}")
    if not _finite(recipe.momentum) or not 0 <= recipe.momentum < 1:
        raise ConfigError(f"{stage}.momentum must be in [0, 1), got {recipe.momentum!r}")
    if not _finite(recipe.weight_decay) or recipe.weight_decay < 0:
        raise ConfigError(f"{stage}.weight_decay must be a finite number >= 0, got {recipe.weight_decay!r}")
    if not _finite(recipe.warmup_epochs) or recipe.warmup_epochs < 0:
        raise ConfigError(f"{stage}.warmup_epochs must be >= 0, got {recipe.warmup_epochs!r}")
    if not _finite(recipe.gamma) or recipe.gamma <= 0:
        raise ConfigError(f"{stage}.gamma must be a positive number, got {recipe.gamma!r}")


def _finite(value) -> bool:
    import math
    return isinstance(value, Number) and not isinstance(value, bool) and math.isfinite(value)


def _check_eval_and_run(cfg: DictConfig) -> None:
    """Evaluation settings and run-level numbers that would otherwise give wrong results silently."""
    thresholds = cfg.eval.shot_thresholds
    if (thresholds is None or len(thresholds) != 2 or not all(isinstance(t, int) and not isinstance(t, bool)
                                                              for t in thresholds)
            or not thresholds[0] >= thresholds[1] >= 1):
        raise ConfigError(f"eval.shot_thresholds must be [many_above, few_below], two integers with many_above >= "
                          f"few_below >= 1 (the field's [100, 20]), got {list(thresholds) if thresholds else None}")
    positive_int("eval.ece_bins", cfg.eval.ece_bins)
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {cfg.seed!r}")
    workers = cfg.data.num_workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ConfigError(f"data.num_workers must be an integer >= 0, got {workers!r}")
    for key in ("stage1.checkpoint", "model.pretrained"):
        value = OmegaConf.select(cfg, key)
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{key} must be a path (or null), got {type(value).__name__} {value!r}")


def _foreign_settings(node: DictConfig, settings_cls, choose: str) -> None:
    """A recipe node must hold only its class's settings (``stage1=<loss>``, ``stage2=<method>``)."""
    from dataclasses import fields
    known = {f.name for f in fields(settings_cls)}
    foreign = sorted(set(node) - known)
    if foreign:
        raise ConfigError(f"{choose} has no setting {', '.join(foreign)} (its settings: "
                          f"{', '.join(sorted(known))}); choose another with {choose.split('=')[0]}=<name>")


def _check_stage1(recipe: DictConfig, stage: str) -> None:
    from lt_bench.registries import ACTIVATIONS, STAGE1_LOSSES
    STAGE1_LOSSES.check(recipe.get("loss"), "stage1.loss")
    loss = STAGE1_LOSSES.get(recipe.loss).cls
    _foreign_settings(recipe, loss.Settings, f"stage1={recipe.loss}")
    _check_recipe("stage1", recipe)
    ACTIVATIONS.check(recipe.activation, "stage1.activation")
    loss.check(recipe)
    if loss.one_stage and stage != "1":
        raise ConfigError(f"stage1={recipe.loss} trains its own classifier (not a plain linear layer) and is a "
                          "one-stage baseline: run it with stage=1")


def _check_stage2(recipe: DictConfig, task: DictConfig) -> None:
    """The stage2 node must be a method's own recipe (``stage2=<method>``), with valid names."""
    from lt_bench.registries import ACTIVATIONS, CLASSIFIER_INITS, SAMPLERS, STAGE2_METHODS
    STAGE2_METHODS.check(recipe.get("method"), "stage2.method")
    method = STAGE2_METHODS.get(recipe.method).cls
    _foreign_settings(recipe, method.Settings, f"stage2={recipe.method}")
    _check_recipe("stage2", recipe)
    one_of("stage2.bn", recipe.bn, STAGE2_BN)
    if recipe.cache_features and recipe.bn != "frozen":
        raise ConfigError("stage2.cache_features=true computes the backbone's features once, with its BatchNorm "
                          "frozen: it needs stage2.bn=frozen (stage2.bn=train updates the statistics every batch)")
    if "activation" in recipe:
        ACTIVATIONS.check(recipe.activation, "stage2.activation")
    if "sampler" in recipe:
        SAMPLERS.check(recipe.sampler, "stage2.sampler")
    if "init" in recipe:
        one_of("stage2.init", recipe.init, STAGE2_INITS)
    if "reinit_scheme" in recipe:
        CLASSIFIER_INITS.check(recipe.reinit_scheme, "stage2.reinit_scheme")
    if "loss_scale" in recipe:
        scale = recipe.loss_scale
        if scale != "per_class" and not (isinstance(scale, Number) and not isinstance(scale, bool) and scale > 0):
            raise ConfigError(f"stage2.loss_scale must be 'per_class' or a positive number, got {scale!r}")
    method.check(recipe, task)


def check_batch_sizes(cfg: DictConfig, world_size: int) -> None:
    """Batch sizes are global (over all ranks), so a recipe means the same on any world size."""
    for stage in ("stage1", "stage2"):
        size = cfg[stage].batch_size
        if size % world_size:
            raise ConfigError(f"{stage}.batch_size={size} is the global batch: it must divide evenly "
                              f"over {world_size} ranks")


def validate(cfg: DictConfig) -> None:
    """``check_config``, then the checks that import the libraries (models, activations, device)."""
    check_config(cfg)
    if cfg.mode == "leaderboard":
        return
    if cfg.task.get("kind") == "detection":
        from lt_bench.detection.validate import validate_detection
        return validate_detection(cfg)
    from lt_bench.activations import configured_activation
    from lt_bench.distributed import resolve_device
    from lt_bench.models import build_model, is_known_model
    from lt_bench.registries import AMP_MODES
    if not is_known_model(cfg.model.name):
        build_model(cfg.model.name, 2)          # raises with the list of valid names
    for name in cfg.get("activations", {}):
        configured_activation(cfg, name)
    device = resolve_device(cfg.device)
    if AMP_MODES.get(cfg.train.amp).cls.needs_cuda and device.type != "cuda":
        raise ConfigError(f"train.amp={cfg.train.amp} needs a CUDA device; use train.amp=bf16 or none on CPU")
