"""Training samplers: uniform over images (DDP-sharded), or re-weighted by class frequency.

Class-balanced and square-root sampling draw with replacement, image i with probability
proportional to n_{y_i}^-q (q = 1: every class equally often; q = 1/2: classes in
proportion to the square root of their size).  torch's WeightedRandomSampler draws; each
rank draws its own share from a generator seeded by (seed, epoch, rank), so epochs are
replayable and ranks do not draw the same images.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DistributedSampler, Sampler, WeightedRandomSampler

from lt_bench.registries import SAMPLERS
from lt_bench.seeding import derive_seed


def sampling_weights(targets: list[int], power: float) -> torch.Tensor:
    """Per-image weight n_{y_i}^-power (the class of image i has n_{y_i} images)."""
    labels = np.asarray(targets)
    counts = np.bincount(labels)
    return torch.as_tensor(counts[labels].astype(np.float64) ** -power)


class EpochWeightedSampler(WeightedRandomSampler):
    """WeightedRandomSampler with DistributedSampler's set_epoch / rank interface."""

    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int, rank: int):
        super().__init__(weights, num_samples, replacement=True, generator=torch.Generator())
        self.seed, self.rank = seed, rank
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.generator.manual_seed(derive_seed(self.seed, epoch, self.rank))


class TrainingSampler:
    """A registered way of drawing the training images of an epoch."""

    def build(self, targets: list[int], *, world_size: int, rank: int, seed: int) -> Sampler:
        raise NotImplementedError


@SAMPLERS.register("random")
class Uniform(TrainingSampler):
    """Every image once per epoch, shuffled, sharded over the ranks (DistributedSampler)."""

    def build(self, targets, *, world_size, rank, seed):
        return DistributedSampler(range(len(targets)), num_replicas=world_size, rank=rank, shuffle=True, seed=seed)


class _ClassWeighted(TrainingSampler):
    power: float

    def build(self, targets, *, world_size, rank, seed):
        per_rank = -(-len(targets) // world_size)   # as many draws per epoch as DistributedSampler gives
        return EpochWeightedSampler(sampling_weights(targets, self.power), per_rank, seed, rank)


@SAMPLERS.register("class_balanced")
class ClassBalanced(_ClassWeighted):
    """Every class equally often (q = 1)."""

    power = 1.0


@SAMPLERS.register("sqrt")
class SquareRoot(_ClassWeighted):
    """Classes in proportion to the square root of their size (q = 1/2)."""

    power = 0.5


def build_sampler(name: str, targets: list[int], *, world_size: int, rank: int, seed: int) -> Sampler:
    return SAMPLERS.build(name).build(targets, world_size=world_size, rank=rank, seed=seed)
