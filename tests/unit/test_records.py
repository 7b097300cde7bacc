"""Records are written atomically and read back with clear errors."""
import json
import os

import pytest

from lt_bench.errors import DataError
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


def test_a_record_with_nan_is_not_written(tmp_path):
    """Issue 15: a NaN or infinity never reaches results.json (every table over it would break)."""
    import math

    from lt_bench.errors import DataError
    from lt_bench.records import REQUIRED_FIELDS, upsert_record
    record = {k: 0 for k in REQUIRED_FIELDS} | {"stage": 1, "method": "softmax", "ece": math.nan,
                                                "calibration_by_shot": {"few": {"nll": math.inf}}}
    with pytest.raises(DataError, match=r"non-finite values in ece, calibration_by_shot.few.nll"):
        upsert_record(tmp_path / "results.json", record)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b"\xff\xfe[\x00]"), "is not UTF-8 text"),
    (lambda p: p.mkdir(), "is a folder, not a file"),
    (lambda p: p.write_text("[" * 100000 + "]" * 100000), "is nested too deeply to be a list of records"),
], ids=["not-utf8", "folder", "deep-nesting"])
def test_unreadable_results_file_is_a_named_data_error(tmp_path, make, message):
    """Hostile input: a results.json that is not UTF-8, is a folder or nests without end is a
    DataError naming the file and the fault, never a UnicodeDecodeError/IsADirectoryError/RecursionError."""
    path = tmp_path / "run" / "results.json"
    path.parent.mkdir()
    make(path)
    with pytest.raises(DataError) as info:
        read_records(path)
    assert str(info.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize("make,message", [
    (lambda p: p.write_bytes(b"\xff\xfe[\x00]"), "is not UTF-8 text"),
    (lambda p: p.mkdir(), "is a folder, not a file"),
    (lambda p: p.write_text("[" * 100000 + "]" * 100000), "is nested too deeply"),
], ids=["not-utf8", "folder", "deep-nesting"])
def test_leaderboard_cli_names_an_unreadable_results_file(tmp_path, make, message):
    """The leaderboard CLI over such a folder: one line on stderr, exit 2, no traceback."""
    import subprocess
    import sys
    path = tmp_path / "runs" / "a" / "results.json"
    path.parent.mkdir(parents=True)
    make(path)
    done = subprocess.run([sys.executable, "-m", "lt_bench.cli", "leaderboard", str(tmp_path / "runs")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith(f"DataError: {path}: {message}") and "Traceback" not in done.stderr


def test_append_record_keeps_every_earlier_record(tmp_path):
    """lt-bench eval's records: appended, never replacing one (even of the same stage and
    method); a file that is not a list of records is an error and stays as it was."""
    from lt_bench.records import append_record
    path = tmp_path / "eval.json"
    append_record(path, record(2, "gumbel", 40.0))
    append_record(path, record(2, "gumbel", 40.0))
    append_record(path, record(1, "softmax", 38.0))
    assert [(r["stage"], r["method"], r["top1"]) for r in read_records(path)] == \
        [(2, "gumbel", 40.0), (2, "gumbel", 40.0), (1, "softmax", 38.0)]
    assert os.listdir(tmp_path) == ["eval.json"]
    with pytest.raises(ValueError, match="record lacks"):
        append_record(path, {"stage": 1})
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(DataError, match="expected a JSON list of records"):
        append_record(bad, record(1, "softmax", 38.0))
    assert bad.read_text() == '{"not": "a list"}'
