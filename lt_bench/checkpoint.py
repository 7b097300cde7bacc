"""Checkpoints: written atomically, read back with their metadata checked."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from lt_bench.errors import CheckpointError
from lt_bench.failpoints import failpoint
from lt_bench.fileio import atomic_write


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], label: str = "") -> Path:
    """Write ``state`` atomically; ``label`` names the save for the ``checkpoint.write``
    failpoint (``checkpoint.write:stage1:2``: the save after stage 1's second epoch)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()

    def write(f) -> None:
        f.write(data[: len(data) // 2])
        failpoint(f"checkpoint.write:{label}")   # a crash half-way: the previous checkpoint survives
        f.write(data[len(data) // 2:])
    return atomic_write(path, write)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        # Our checkpoints hold tensors, numbers, strings and lists only.
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err


def load_for_resume(path: str | os.PathLike, config_hash: str | None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """A checkpoint to continue from: refused unless the same configuration wrote it."""
    ckpt = load_checkpoint(path, map_location)
    if ckpt.get("config_hash") != config_hash:
        raise CheckpointError(
            f"{path} was written by a run with config hash {ckpt.get('config_hash')}, this run's is "
            f"{config_hash}: resume needs the same configuration (see config.yaml beside it; evaluation "
            "settings, eval.* and data.eval_batch_size, may differ)")
    return ckpt


def check_resumable(checkpoints: list, config_hash: str | None) -> None:
    """Every checkpoint a resumed run would continue from was written by this configuration
    (CheckpointError otherwise), checked before the run writes anything."""
    for path in checkpoints:
        load_for_resume(path, config_hash)
