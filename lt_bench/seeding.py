"""Seeds derived from (run seed, stage, epoch, rank), so that any epoch can be replayed.

Every epoch reseeds Python, NumPy and torch (and, through torch, the DataLoader workers'
base seed) from its own derived seed: a run resumed at an epoch boundary draws exactly
the augmentations and batch order of the uninterrupted run.
"""
from __future__ import annotations

import random

import numpy as np
import torch


def derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
