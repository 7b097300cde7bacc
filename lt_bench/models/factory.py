"""Every model by name: the CIFAR ResNets here, anything else from timm.

A model is a feature extractor (``backbone``) plus a linear ``classifier``, so that
stage 2 can freeze one and retrain the other.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import timm
import torch
from torch import Tensor, nn

from lt_bench.errors import CheckpointError, ConfigError
from lt_bench.models.pretrained import SOURCES, load_backbone_weights, load_torchvision_weights, timm_source
from lt_bench.models.resnet_cifar import CifarResNet

LOCAL_BACKBONES: dict[str, Callable[..., nn.Module]] = {
    f"resnet{depth}": partial(CifarResNet, depth=depth) for depth in (8, 20, 32, 44, 56, 110)
}


class LTClassifier(nn.Module):
    """backbone (images -> features [N, D]) followed by a linear classifier (D -> C)."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.pretrained_source: str | None = None   # what build_model loaded into the backbone
        self.classifier = nn.Linear(num_features, num_classes)
        nn.init.kaiming_normal_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.backbone(x))


def is_known_model(name: str) -> bool:
    return name in LOCAL_BACKBONES or timm.is_model(name)


def build_model(name: str, num_classes: int, in_chans: int = 3, pretrained: str | None = None,
                progress: bool = False) -> LTClassifier:
    """``pretrained``: None (random init), a weights file, "timm" (timm's default weights for
    ``name`` from its hub) or "torchvision" (torchvision's original ImageNet weights,
    IMAGENET1K_V1, for timm's ResNet of the same name); the hubs download once into their
    caches.  The returned model's ``pretrained_source`` says what was loaded:
    "file:<path> sha256:<12 hex>", "timm:resnet152.a1h_in1k",
    "torchvision:ResNet152_Weights.IMAGENET1K_V1" or None."""
    source = None
    if name in LOCAL_BACKBONES:
        if pretrained in SOURCES:
            raise ConfigError(f"{name} is one of the local CIFAR models, with no {pretrained} weights: "
                              "model.pretrained must be a weights file or null")
        backbone = LOCAL_BACKBONES[name](in_chans=in_chans)
    elif timm.is_model(name):
        if pretrained == "torchvision" and in_chans != 3:
            raise ConfigError(f"model.pretrained=torchvision: torchvision's weights take 3 input channels, "
                              f"not task.in_chans={in_chans}")
        try:
            backbone = timm.create_model(name, pretrained=pretrained == "timm", num_classes=0, in_chans=in_chans)
        except Exception as err:   # hub errors come in many types
            if pretrained != "timm":
                raise
            raise CheckpointError(f"cannot fetch timm's pretrained weights for {name} ({err}); offline, "
                                  "pass model.pretrained=PATH to a weights file") from err
        if pretrained == "timm":
            source = timm_source(backbone)
        elif pretrained == "torchvision":
            source = load_torchvision_weights(backbone, name, progress=progress)
    else:
        close = timm.list_models(f"*{name}*")[:10]
        raise ConfigError(
            f"unknown model {name!r}; local: {', '.join(sorted(LOCAL_BACKBONES))}; or any timm "
            f"model name{' (close: ' + ', '.join(close) + ')' if close else ''}"
        )
    if pretrained is not None and pretrained not in SOURCES:
        source = load_backbone_weights(backbone, pretrained)
    model = LTClassifier(backbone, backbone.num_features, num_classes)
    model.pretrained_source = source
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def parameter_checksum(module: nn.Module) -> float:
    """Sum of all parameters and floating-point buffers (BatchNorm statistics) in float64,
    weighted by position so that swapped values change it: equal across DDP ranks when
    the replicas agree."""
    total = 0.0
    for tensor in module.state_dict().values():
        if tensor.is_floating_point():
            flat = tensor.detach().double().flatten()
            total += float((flat * torch.arange(1, flat.numel() + 1, dtype=torch.float64, device=flat.device)).sum())
    return total
