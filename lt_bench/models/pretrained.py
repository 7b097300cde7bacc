"""Pretrained backbone weights: from a local file, or from timm's hub when online.

A file may be a plain state dict, a checkpoint holding one under ``state_dict`` or
``model`` (ours, torchvision's, timm's), with ``module.`` / ``backbone.`` prefixes.
Classifier weights are dropped (the classifier is the task's); any other mismatch is an
error, never a silent partial random initialisation.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from lt_bench.errors import CheckpointError

PREFIXES = ("module.", "backbone.", "model.")
HEADS = ("fc.", "classifier.", "head.", "last_linear.")


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


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> None:
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"pretrained weights not found: {path} (model.pretrained)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"cannot read pretrained weights {path}: {err}") from err
    state = {_strip(k): v for k, v in _state_dict(raw).items() if torch.is_tensor(v)}
    state = {k: v for k, v in state.items() if not k.startswith(HEADS)}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit the backbone: {len(missing)} missing key(s) {missing[:5]}, "
            f"{len(unexpected)} unexpected key(s) {unexpected[:5]}"
        )
