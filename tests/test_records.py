"""Records and checkpoints are written atomically and read back with clear errors."""
import json
import os

import pytest
import torch

from lt_bench.checkpoint import load_checkpoint, save_checkpoint
from lt_bench.errors import CheckpointError, DataError
from lt_bench.records import REQUIRED_FIELDS, read_records, upsert_record


def record(stage, method, top1):
    r = {k: None for k in REQUIRED_FIELDS}
    r.update(stage=stage, method=method, top1=top1)
    return r


def test_upsert_replaces_same_stage_and_method(tmp_path):
    path = tmp_path / "results.json"
    upsert_record(path, record(2, "gumbel", 40.0))
    upsert_record(path, record(1, "softmax", 38.0))
    upsert_record(path, record(2, "gumbel", 41.0))
    records = read_records(path)
    assert [(r["stage"], r["method"], r["top1"]) for r in records] == [(1, "softmax", 38.0), (2, "gumbel", 41.0)]
    assert json.loads(path.read_text()) == records
    assert os.listdir(tmp_path) == ["results.json"]          # no temporary file left behind


def test_incomplete_record_is_refused(tmp_path):
    with pytest.raises(ValueError, match="record lacks"):
        upsert_record(tmp_path / "r.json", {"stage": 1})


def test_bad_results_file_is_named(tmp_path):
    path = tmp_path / "results.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match="results.json: not valid JSON"):
        read_records(path)


def test_checkpoint_round_trip_and_errors(tmp_path):
    path = tmp_path / "ckpt" / "stage1.pt"
    save_checkpoint(path, {"model": {"w": torch.arange(3)}, "progress": {"epochs_done": 2}})
    assert load_checkpoint(path)["progress"]["epochs_done"] == 2
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(path)
