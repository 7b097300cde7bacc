"""Image transforms per task family, all from torchvision (nothing re-implemented)."""
from __future__ import annotations

from typing import Callable

import torch
from torchvision.transforms import v2

from lt_bench.errors import ConfigError
from lt_bench.registries import TRANSFORMS

# LDAM-DRW's CIFAR statistics, the field's usual choice for CIFAR-LT.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# sklearn digits scaled to [0, 1] (pixel / 16), over all 1,797 images.
DIGITS_MEAN = (0.3053,)
DIGITS_STD = (0.3760,)


def _to_normalised_tensor(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]


@TRANSFORMS.register("cifar")
def cifar_transform(train: bool, autoaugment: bool = True) -> Callable:
    """Paper's CIFAR recipe: random crop 32 (pad 4), flip, AutoAugment (CIFAR10 policy)."""
    if not train:
        return v2.Compose(_to_normalised_tensor(CIFAR_MEAN, CIFAR_STD))
    steps = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
    if autoaugment:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10))
    return v2.Compose(steps + _to_normalised_tensor(CIFAR_MEAN, CIFAR_STD))


@TRANSFORMS.register("digits")
def digits_transform(train: bool, autoaugment: bool = False) -> Callable:
    """8x8 digits: a one-pixel random shift when training (digits are not flip-invariant)."""
    if autoaugment:
        raise ConfigError("AutoAugment has no policy for 8x8 digits; set data.autoaugment=false")
    steps = [v2.RandomCrop(8, padding=1)] if train else []
    return v2.Compose(steps + _to_normalised_tensor(DIGITS_MEAN, DIGITS_STD))


@TRANSFORMS.register("imagenet")
def imagenet_transform(train: bool, autoaugment: bool = True, image_size: int = 224, resize: int = 256) -> Callable:
    """ImageNet-LT / Places-LT: RandomResizedCrop, flip, AutoAugment (ImageNet policy) for
    training; resize and center crop for evaluation."""
    if not train:
        steps = [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
        return v2.Compose(steps + _to_normalised_tensor(IMAGENET_MEAN, IMAGENET_STD))
    steps = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    if autoaugment:
        steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
    return v2.Compose(steps + _to_normalised_tensor(IMAGENET_MEAN, IMAGENET_STD))


def build_transform(name: str, train: bool, **options) -> Callable:
    return TRANSFORMS.get(name).cls(train, **options)
