"""Pretrained backbone weights: from a local file, from torchvision, or from timm's hub.

A file may be a plain state dict, a checkpoint holding one under ``state_dict`` or
``model`` (ours, torchvision's, timm's), with ``module.`` / ``backbone.`` prefixes.
``torchvision`` loads torchvision's original ImageNet weights (``IMAGENET1K_V1``, the
checkpoint of the torchvision era that the long-tailed papers started from) into timm's
ResNet of the same name, whose parameter names equal torchvision's.  Classifier weights
are dropped (the classifier is the task's); any other mismatch is an error, never a
silent partial random initialisation.

Each loader returns a short description of what it loaded (``source_*``), recorded as the
model's ``pretrained_source``.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from lt_bench.errors import CheckpointError, ConfigError
from lt_bench.fileio import file_digest

PREFIXES = ("module.", "backbone.", "model.")
HEADS = ("fc.", "classifier.", "head.", "last_linear.")
SOURCES = ("timm", "torchvision")       # besides null (random init) and a weights file
TORCHVISION_WEIGHTS = "IMAGENET1K_V1"   # torchvision's original ImageNet weights, not DEFAULT (V2 recipes)


def _state_dict(obj) -> dict:
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def _strip(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def _load(backbone: nn.Module, raw, what: str) -> None:
    """Load a state dict (prefixes stripped, classifier dropped) into ``backbone``; every
    backbone key must be filled and every checkpoint key used."""
    raw = _state_dict(raw)
    if not isinstance(raw, dict) or not any(torch.is_tensor(v) for v in raw.values()):
        held = f"a {type(raw).__name__}" if not isinstance(raw, dict) else "a dict without tensors"
        raise CheckpointError(f"{what} holds {held}, not a state dict (parameter names -> tensors, "
                              "optionally under 'state_dict' or 'model')")
    state = {_strip(str(k)): v for k, v in raw.items() if torch.is_tensor(v)}
    state = {k: v for k, v in state.items() if not k.startswith(HEADS)}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as err:     # shape mismatches raise even when strict=False
        raise CheckpointError(f"{what} does not fit the backbone: {err}") from err
    if missing or unexpected:
        raise CheckpointError(
            f"{what} does not fit the backbone: {len(missing)} missing key(s) {missing[:5]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:5]}"
        )


def file_sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> str:
    """Load a weights file; returns ``"file:<absolute path> sha256:<first 12 hex>"``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"pretrained weights not found: {path} (model.pretrained)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read pretrained weights {path}: {err}") from err
    _load(backbone, raw, str(path))
    return f"file:{path.resolve()} sha256:{file_sha256(path)[:12]}"


def torchvision_weights(name: str):
    """torchvision's original ImageNet weights (``IMAGENET1K_V1``) for timm's model ``name``;
    ConfigError unless ``name`` is one of timm's ResNets that torchvision has weights for."""
    import timm
    import torchvision.models

    def unsupported(why: str) -> ConfigError:
        return ConfigError(f"model.pretrained=torchvision: {why}; torchvision's weights fit timm's "
                           "resnet18/34/50/101/152, resnext* and wide_resnet* of the same name. Valid sources: "
                           "null (random init), PATH to a weights file, 'timm' (timm's hub) or 'torchvision'")

    if not timm.is_model(name) or timm.models.model_entrypoint(name).__module__ != "timm.models.resnet":
        raise unsupported(f"{name} is not one of timm's ResNets")
    try:
        enum = torchvision.models.get_model_weights(name)
    except ValueError:
        raise unsupported(f"torchvision has no weights for {name}") from None
    weights = getattr(enum, TORCHVISION_WEIGHTS, None)
    if weights is None:
        raise unsupported(f"torchvision has no {TORCHVISION_WEIGHTS} weights for {name}")
    return weights


def load_torchvision_weights(backbone: nn.Module, name: str, progress: bool = False) -> str:
    """Load torchvision's ``IMAGENET1K_V1`` weights for ``name`` (downloaded once into torch
    hub's cache) into timm's backbone; returns ``"torchvision:<Enum>.<weights>"``."""
    weights = torchvision_weights(name)
    label = f"{type(weights).__name__}.{weights.name}"
    try:
        raw = weights.get_state_dict(progress=progress, map_location="cpu", weights_only=True)
    except Exception as err:   # URLError, HTTPError, OSError, ... (offline)
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise CheckpointError(
            f"cannot fetch torchvision's {label} for {name} ({type(err).__name__}: {err}); download "
            f"{weights.url} elsewhere and pass model.pretrained=PATH to it (or put it at {cache})") from err
    _load(backbone, raw, f"torchvision's {label}")
    return f"torchvision:{label}"


def timm_source(backbone: nn.Module) -> str:
    """``"timm:<architecture>.<tag>"`` of the weights timm loaded, e.g. timm:resnet152.a1h_in1k."""
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    arch, tag = cfg.get("architecture"), cfg.get("tag")
    return f"timm:{arch}.{tag}" if arch and tag else f"timm:{arch or type(backbone).__name__}"
