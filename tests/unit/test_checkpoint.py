"""Checkpoints are written atomically and read back with clear errors."""
import pytest
import torch

from lt_bench.checkpoint import load_checkpoint, save_checkpoint
from lt_bench.errors import CheckpointError


def test_checkpoint_round_trip_and_errors(tmp_path):
    path = tmp_path / "ckpt" / "stage1.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(3)}, "progress": {"epochs_done": 2}})
    assert load_checkpoint(path)["progress"]["epochs_done"] == 2
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)
