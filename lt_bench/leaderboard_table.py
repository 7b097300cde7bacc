"""The leaderboard's tables: every run's results.json gathered into one table per kind, beside
the paper.

Rows are methods, columns are (task, imbalance or LVIS version, model).  Seeds of one
configuration (same ``setup_hash``) are averaged; two configurations never share a cell,
so an extra one gets its own row.  Records written by other tools, without ``setup_hash``, are
grouped by task, imbalance, model, stage and method alone (a warning says which files), in a
row of their own (``[no setup_hash]``) where lt_bench's records of that cell hold the plain row.  The paper's numbers (``reference_results.json``) are
reference rows, and each of our cells shows ours minus the paper's.  Rendering is in
``leaderboard_render``, the commands in ``leaderboard``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from lt_bench.errors import ConfigError, DataError
from lt_bench.records import RESULTS_FILE, read_records
from lt_bench.shots import SHOT_GROUPS

log = logging.getLogger(__name__)
REFERENCE_FILE = Path(__file__).resolve().parent / "reference_results.json"
KINDS = ("classification", "detection")
METRICS = {"classification": ("top1", "top5", *SHOT_GROUPS, "ece"),
           "detection": ("AP", "APr", "APc", "APf", "APbox")}
DEFAULT_METRICS = {"classification": ("top1",), "detection": METRICS["detection"]}
# the field that tells the columns of one task and model apart
SETTING = {"classification": "imbalance", "detection": "version"}
REQUIRED = {"classification": ("task", "imbalance", "model", "stage", "method"),
            "detection": ("task", "version", "model", "method")}
# the group of records without setup_hash (written by other tools)
NO_SETUP = "(no setup_hash)"


@dataclass(frozen=True)
class Column:
    kind: str
    task: str
    setting: float | str | None      # imbalance (classification) or LVIS version (detection)
    model: str

    @property
    def label(self) -> str:
        if self.setting is None:
            return f"{self.task} {self.model}"
        if self.kind == "classification":
            return f"{self.task} ib={self.setting:g} {self.model}"
        return f"{self.task} {self.setting} {self.model}"

    def sort_key(self) -> tuple:
        number = isinstance(self.setting, float)
        return self.task, self.setting is not None, self.setting if number else 0.0, str(self.setting), self.model


@dataclass(frozen=True)
class Row:
    stage: int | None
    method: str
    setup: str | None = None          # set on a row holding an extra configuration
    reference: bool = False           # the paper's numbers
    protocol: str | None = None       # how it was measured, when not the plain way (see ``protocol``)

    @property
    def label(self) -> str:
        method = self.method + (f" [{self.protocol}]" if self.protocol else "")
        if self.reference:
            return f"{method} (paper{', stage 1' if self.stage == 1 else ''})"
        label = method if self.stage is None else f"{method} (stage {self.stage})"
        if self.setup == NO_SETUP:
            return label + " [no setup_hash]"
        return label + (f" [cfg {self.setup[:6]}]" if self.setup else "")

    def sort_key(self) -> tuple:
        return (self.reference, -1 if self.stage is None else self.stage, self.method, self.protocol or "",
                self.setup is not None, self.setup or "")


# which epoch a classification number is of: the last, or the best one chosen on a split
LAST_EPOCH = "last"
BEST_ON = {"test": "best@test", "val": "best@val"}


def protocol(record: dict) -> str | None:
    """What makes a number comparable only with numbers measured the same way; a record (or
    paper entry) is compared with the paper only on an equal protocol.  Classification: the
    epoch reported (``last``; ``best@test``, the best test accuracy over epochs, as the GOL
    authors' scripts report; ``best@val``, the test accuracy of the epoch best on val).
    A Gumbel run with lt_bench's closed-form gradient (``activations.gumbel.gradient=exact``) is
    not the authors' loss: it is marked, and compared with no paper row.
    Detection: scores other than the activation's own (GOL's sigmoid rows were scored by a
    softmax over the C + 1 logits), and evaluation on a subset of the val images."""
    if record.get("kind") != "detection":
        parts = [record.get("protocol") or LAST_EPOCH]
        if record.get("gumbel_gradient") == "exact":     # not the authors' loss (their BCE on probabilities)
            parts.append("exact gradient")
        return ", ".join(parts)
    parts = []
    scoring, activation = record.get("scoring"), record.get("activation") or record.get("method")
    if scoring and scoring != activation:
        parts.append(f"{scoring} scores")
    if record.get("eval_subset"):
        parts.append(f"val subset of {record.get('eval_images')} images")
    return ", ".join(parts) or None


@dataclass
class Cell:
    mean: float | None = None
    std: float | None = None          # sample std; None for a single run
    n: int | None = None              # seeds with a value; None on reference rows
    paper: float | None = None
    delta: float | None = None        # mean - paper
    setup_hash: str | None = None
    sources: list[str] = field(default_factory=list)


@dataclass
class Table:
    kind: str
    metrics: tuple[str, ...]
    columns: list[Column]
    rows: list[Row]
    cells: dict[tuple[Row, Column, str], Cell]
    notes: list[str] = field(default_factory=list)    # lines printed under the table

    def cell(self, row: Row, column: Column, metric: str) -> Cell:
        return self.cells.get((row, column, metric)) or Cell()


def collect_records(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """The records of every results.json under ``paths`` (folders searched recursively, or
    the files themselves), each with a ``source`` key naming its file."""
    files: list[Path] = []
    seen: set[Path] = set()           # a file named twice (runs/ and runs/a) is read once
    for path in map(Path, paths):
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        found = sorted(path.rglob(RESULTS_FILE)) if path.is_dir() else [path]
        if not found:
            raise DataError(f"{path}: no {RESULTS_FILE} in this folder or below")
        for file in found:
            if file.resolve() not in seen:
                seen.add(file.resolve())
                files.append(file)
    records = []
    for file in files:
        for record in read_records(file):
            if not isinstance(record, dict):
                raise DataError(f"{file}: a record is a {type(record).__name__}, not an object")
            records.append({**record, "source": str(file)})
    return records


def load_references(path: str | os.PathLike = REFERENCE_FILE) -> list[dict[str, Any]]:
    """The paper's numbers: entries shaped like our records, with ``kind`` always given."""
    try:
        entries = json.loads(Path(path).read_text())["entries"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a reference file with an 'entries' list ({err})") from err
    seen = set()
    for i, entry in enumerate(entries):
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if kind not in KINDS:
            raise DataError(f"{path}: entry {i} has kind {kind!r}, expected one of {', '.join(KINDS)}")
        entry.setdefault("stage", None)
        key = (_column(entry, kind, f"{path}: entry {i}"), entry["stage"], entry["method"], protocol(entry))
        if key in seen:
            raise DataError(f"{path}: entry {i} repeats {key}")
        seen.add(key)
        for metric in METRICS[kind]:
            _number(entry, metric, f"{path}: entry {i}")
    return entries


def _number(record: dict, metric: str, where: str) -> float | None:
    value = record.get(metric)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: {metric} is {value!r}, not a finite number")
    return float(value)


def _column(record: dict, kind: str, where: str) -> Column:
    missing = [k for k in REQUIRED[kind] if k not in record]
    if missing:
        raise DataError(f"{where}: a {kind} record lacks {', '.join(missing)}")
    setting = record[SETTING[kind]]
    if kind == "classification" and setting is not None:
        if isinstance(setting, bool) or not isinstance(setting, (int, float)):
            raise DataError(f"{where}: imbalance is {setting!r}, not a number")
        setting = float(setting)
    return Column(kind, str(record["task"]), setting, str(record["model"]))


EPOCHS = ("auto", "last", "best", "both")


def epoch_views(record: dict, epoch: str = "auto") -> list[dict]:
    """A classification record read at the epoch the leaderboard reports (``epoch``): ``last``;
    ``best``, the epoch the run picked (``eval.select``: best_*) where it recorded one;
    ``auto``, the best where recorded, else the last; ``both``, two rows.  Each view carries
    its protocol, so that it is compared with the paper only on the paper's."""
    last = {**record, "protocol": LAST_EPOCH}
    if record.get("best_top1") is None or record.get("best_select") not in BEST_ON or epoch == "last":
        return [] if epoch == "best" else [last]
    best = {**record, "top5": None, "ece": None, **{m: record.get(f"best_{m}") for m in ("top1", *SHOT_GROUPS)},
            "protocol": BEST_ON[record["best_select"]]}
    return [last, best] if epoch == "both" else [best]


def _kind(record: dict) -> str:
    kind = record.get("kind") or "classification"
    if kind not in KINDS:
        raise DataError(f"{record['source']}: record kind {kind!r}, expected one of {', '.join(KINDS)}")
    return kind


def split_metrics(metrics: Sequence[str] | str | None) -> dict[str, tuple[str, ...]]:
    """The metrics of each kind: those named (e.g. top1,many or AP,APr), else the defaults."""
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    metrics = tuple(metrics or ())
    known = {m for kind in KINDS for m in METRICS[kind]}
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ConfigError(f"unknown leaderboard metric {', '.join(map(repr, unknown))}; "
                          f"valid: {', '.join(m for kind in KINDS for m in METRICS[kind])}")
    return {kind: tuple(m for m in metrics if m in METRICS[kind]) or DEFAULT_METRICS[kind] for kind in KINDS}


def _aggregate(records: list[dict], metric: str, setup: str) -> Cell:
    """Mean and sample std over seeds.  Records of one seed are one draw run again (e.g. the
    stage 1 that each stage-2 variant of a sweep trains for itself): they are averaged into
    one value first, so n counts seeds and the std is not shrunk by the copies."""
    per_seed: dict[object, list[float]] = defaultdict(list)
    for i, r in enumerate(records):
        if (v := _number(r, metric, r["source"])) is not None:
            per_seed[r.get("seed", f"record {i}")].append(v)
    values = [statistics.fmean(v) for v in per_seed.values()]
    return Cell(mean=statistics.fmean(values) if values else None,
                std=statistics.stdev(values) if len(values) > 1 else None,
                n=len(values), setup_hash=None if setup == NO_SETUP else setup,
                sources=[r["source"] for r in records])


def _build_table(kind: str, records: list[dict], references: list[dict], metrics: tuple[str, ...]) -> Table:
    groups: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    unhashed: dict[str, int] = defaultdict(int)
    for record in records:
        column = _column(record, kind, record["source"])
        setup = record.get("setup_hash")
        if not setup:
            unhashed[record["source"]] += 1
        groups[(record.get("stage"), str(record["method"]), protocol(record), column)][
            str(setup) if setup else NO_SETUP].append(record)
    if unhashed:
        files = sorted(unhashed)
        log.warning("%d %s record(s) without setup_hash (written by another tool?) in %s: grouped by task, %s, "
                    "model, stage and method only, so runs of different configurations may be averaged together",
                    sum(unhashed.values()), kind, ", ".join(files[:3]) + (f" and {len(files) - 3} more files"
                                                                          if len(files) > 3 else ""), SETTING[kind])
    cells: dict[tuple[Row, Column, str], Cell] = {}
    for (stage, method, measured, column), setups in groups.items():
        # the first configuration run keeps the plain row; later ones, and records without
        # setup_hash beside lt_bench's, get rows of their own
        ordered = sorted(setups, key=lambda h: (h == NO_SETUP, min(str(r.get("created") or "") for r in setups[h]), h))
        for i, setup in enumerate(ordered):
            row = Row(stage, method, None if i == 0 else setup, protocol=measured)
            for metric in metrics:
                cells[(row, column, metric)] = _aggregate(setups[setup], metric, setup)
    columns = sorted({c for (_, c, _) in cells}, key=Column.sort_key)
    ours = {r for (r, _, _) in cells}
    for entry in (e for e in references if e["kind"] == kind):
        ref_column = _column(entry, kind, "reference entry")
        for column in columns:
            if (column.task, column.model) != (ref_column.task, ref_column.model) or \
                    ref_column.setting not in (None, column.setting):
                continue
            for metric in metrics:
                if (paper := entry.get(metric)) is None:
                    continue
                measured = protocol(entry)
                cells[(Row(entry["stage"], entry["method"], reference=True, protocol=measured), column, metric)] = \
                    Cell(mean=float(paper), paper=float(paper))
                for row in (r for r in ours
                            if (r.stage, r.method, r.protocol) == (entry["stage"], entry["method"], measured)):
                    cell = cells.setdefault((row, column, metric), Cell())
                    cell.paper = float(paper)
                    cell.delta = None if cell.mean is None else cell.mean - cell.paper
    rows = sorted({r for (r, _, _) in cells}, key=Row.sort_key)
    table = Table(kind, metrics, columns, rows, cells)
    box_only = sorted({str(r.get("model")) for r in records if r.get("ap_type") == "bbox"})
    if box_only:
        table.notes.append(f"{', '.join(box_only)}: a box-only detector; its AP, APr, APc, APf are box AP")
    return table


MIN_SETUP_PREFIX = 6      # as many hex digits as a row label shows ([cfg 8d2bb6])


def parse_same_setup(pairs: Iterable[str] | None) -> dict[str, str]:
    """``["8d2bb6=ff5dc1", ...]`` -> ``{"8d2bb6": "ff5dc1"}``: each an OLD=NEW pair of setup_hash
    prefixes (at least 6 hex digits, as the rows' ``[cfg ...]`` labels show them)."""
    merged: dict[str, str] = {}
    for pair in pairs or ():
        old, sep, new = str(pair).partition("=")
        old, new = old.strip().lower(), new.strip().lower()
        for part in (old, new):
            if not sep or len(part) < MIN_SETUP_PREFIX or any(ch not in "0123456789abcdef" for ch in part):
                raise ConfigError(f"same-setup {pair!r}: expected OLD=NEW, two setup_hash prefixes of at least "
                                  f"{MIN_SETUP_PREFIX} hex digits (e.g. 8d2bb6=ff5dc1, as in the rows' [cfg ...])")
        if old == new or old in merged:
            raise ConfigError(f"same-setup {pair!r}: {old} is "
                              + ("merged into itself" if old == new else "named twice"))
        merged[old] = new
    return merged


def merge_setups(records: list[dict], same_setup: dict[str, str]) -> dict[str, list[str]]:
    """Count the records of setup OLD as setup NEW, for each OLD=NEW the user vouches for (the
    same experiment hashed differently, e.g. run before the config gained a key whose default
    keeps the old behaviour).  Each prefix must name exactly one setup_hash among the records;
    a merged record keeps its own hash as ``merged_setup_hash``.  Returns, per kind, one note
    per merge, printed under that kind's table so a reader sees that its rows hold merged runs."""
    hashes = sorted({str(r["setup_hash"]) for r in records if r.get("setup_hash")})

    def one(prefix: str, role: str) -> str:
        found = [h for h in hashes if h.startswith(prefix)]
        if len(found) != 1:
            raise ConfigError(f"same-setup: the {role} setup {prefix!r} matches "
                              + (f"{len(found)} setup_hash values ({', '.join(h[:10] for h in found)}): give more "
                                 "digits" if found else "no record's setup_hash"))
        return found[0]

    notes: dict[str, list[str]] = defaultdict(list)
    for old, new in same_setup.items():
        source, target = one(old, "merged"), one(new, "target")
        moved = [r for r in records if r.get("setup_hash") == source]
        for record in moved:
            record["merged_setup_hash"], record["setup_hash"] = source, target
        log.warning("%d record(s) of setup %s counted as setup %s (same-setup)", len(moved), source[:10], target[:10])
        for kind in KINDS:
            if count := sum(_kind(r) == kind for r in moved):
                notes[kind].append(f"setup {source[:6]} counted as setup {target[:6]} ({count} record(s); "
                                   f"--same-setup {old}={new}: the user vouches they are one experiment)")
    return notes


def build_leaderboard(paths: Iterable[str | os.PathLike], metrics: Sequence[str] | str | None = None,
                      references: list[dict] | None = None, epoch: str = "auto",
                      same_setup: dict[str, str] | None = None) -> list[Table]:
    """One table per kind found in ``paths`` (classification first); ``epoch``: which epoch of a
    classification run is reported (``epoch_views``); ``same_setup``: setups counted as one
    (``merge_setups``)."""
    if epoch not in EPOCHS:
        raise ConfigError(f"unknown leaderboard epoch {epoch!r}; valid: {', '.join(EPOCHS)}")
    paths = list(paths)
    records = collect_records(paths)
    if not records:
        raise DataError(f"no records in {', '.join(map(str, paths))} (every results.json is empty)")
    notes = merge_setups(records, same_setup) if same_setup else {}
    references = load_references() if references is None else references
    per_kind = split_metrics(metrics)
    by_kind: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for record in records:
        kind = _kind(record)
        by_kind[kind].extend(epoch_views(record, epoch) if kind == "classification" else [record])
    tables = [_build_table(kind, recs, references, per_kind[kind]) for kind, recs in by_kind.items() if recs]
    for table in tables:
        table.notes.extend(notes.get(table.kind, []))
    return tables
