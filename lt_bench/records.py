"""results.json: one record per evaluated model (stage 1, stage 2), written atomically.

Every number a leaderboard shows comes from these records; percentages are 0-100.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

from lt_bench.errors import DataError
from lt_bench.fileio import atomic_write_json
from lt_bench.run_folder import RESULTS_FILE  # noqa: F401  (re-exported: where records live)
SCHEMA_VERSION = 1
# ``lt-bench eval``'s records of a run folder's checkpoints, beside (never in) its results.json
EVAL_FILE = "eval.json"
REQUIRED_FIELDS = (
    "task", "imbalance", "model", "stage", "method", "top1", "top5", "many", "medium", "few",
    "ece", "num_train", "shot_classes", "seed", "config_hash",
)
# Detection records (task=lvis): mask AP and its frequency groups, box AP; percentages.
DETECTION_FIELDS = ("task", "version", "model", "method", "AP", "APr", "APc", "APf", "APbox", "seed",
                    "config_hash")


def record_key(record: dict) -> tuple:
    """Records of one run folder are unique by kind, stage and method."""
    return record.get("kind", "classification"), record.get("stage"), record.get("method")


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a file (expected a JSON list of records)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: is not UTF-8 text ({err.reason} at byte {err.start})") from err
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror or err})") from err
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    except RecursionError as err:
        raise DataError(f"{path}: is nested too deeply to be a list of records") from err
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of records, found {type(records).__name__}")
    return records


def non_finite_fields(value: Any, where: str = "") -> list[str]:
    """The dotted names of NaN or infinite numbers anywhere in a record."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [where or "value"]
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in non_finite_fields(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, (list, tuple)):
        return [f for i, v in enumerate(value) for f in non_finite_fields(v, f"{where}[{i}]")]
    return []


def upsert_record(path: str | os.PathLike, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Add ``record`` to the file, replacing an earlier record of the same stage and method
    (a resumed or repeated run in the same folder)."""
    _check_writable_record(path, record)
    records = [r for r in read_records(path) if record_key(r) != record_key(record)]
    records.append(record)
    records.sort(key=lambda r: tuple("" if v is None else str(v) for v in record_key(r)))
    atomic_write_json(path, records)
    return records


def _check_writable_record(path, record: dict[str, Any]) -> None:
    required = DETECTION_FIELDS if record.get("kind") == "detection" else REQUIRED_FIELDS
    missing = [k for k in required if k not in record]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    bad = non_finite_fields(record)
    if bad:
        raise DataError(f"{path}: the record of stage {record.get('stage')} ({record.get('method')}) has non-finite "
                        f"values in {', '.join(bad[:5])}; it is not written (a NaN would break every table "
                        "over this folder)")


def append_record(path: str | os.PathLike, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Add ``record`` after the file's records, which stay exactly as they are (never replaced:
    ``lt-bench eval`` keeps every evaluation it made).  A file that is not a list of records is
    an error, not overwritten."""
    _check_writable_record(path, record)
    records = read_records(path)
    records.append(record)
    atomic_write_json(path, records)
    return records


def git_revision(where: str | os.PathLike | None = None) -> str | None:
    """HEAD of the repository holding this package, '+dirty' when it has local changes."""
    where = Path(where or Path(__file__).resolve().parent)
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                             text=True, timeout=10)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None
