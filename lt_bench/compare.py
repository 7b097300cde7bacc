"""``lt-bench compare RUN_A RUN_B [...]``: what differs between runs, side by side.

Two tables: the configuration keys whose values differ (each run's ``config.yaml`` flattened to
dotted keys; the runtime keys that the config hash leaves out, such as ``out_dir`` and
``device``, are listed by name only, or shown marked ``(runtime)`` with ``--all-keys``), and the
metrics of each record (stage and method; top1, many, medium, few, ece, or a detection record's
AP, APr, APc, APf, APbox) with Δ against the first run.  The ``cfg`` row of each record is the
first 6 digits of its ``setup_hash``: the leaderboard's ``[cfg 3fa2c1]`` label, so a row of the
leaderboard can be traced to its run and explained by the config table.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lt_bench.errors import DataError, LtBenchError
from lt_bench.leaderboard_render import csv_cell, md_escape
from lt_bench.records import RESULTS_FILE, read_records
from lt_bench.run_folder import RUNTIME_KEYS, RunFolder

METRICS = {"classification": ("top1", "many", "medium", "few", "ece"),
           "detection": ("AP", "APr", "APc", "APf", "APbox")}
FORMATS = ("md", "csv", "json")
ABSENT = "(absent)"
MISSING = "-"
SETUP = "cfg"            # the metric-table row naming each record's setup_hash[:6]


@dataclass
class Run:
    path: Path
    label: str
    config: dict[str, Any] | None      # flattened config.yaml; None without one
    records: list[dict]


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"a.b": 1, "c": [1, 2]}`` (lists are values)."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node} if prefix else {}


def value_text(value: Any) -> str:
    """A config value as YAML writes it: null, true, 0.0001, [40, 50], text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def is_runtime(key: str) -> bool:
    """Keys that say where and how a run executes (``run_folder.RUNTIME_KEYS``), not what it computes."""
    return any(key == k or key.startswith(k + ".") for k in RUNTIME_KEYS)


def load_run(path: str | os.PathLike, label: str) -> Run:
    """A run folder (config.yaml and/or results.json), or a results.json file (its folder's config)."""
    import yaml
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such run folder or file")
    folder = RunFolder(path if path.is_dir() else path.parent)
    results = folder.results if path.is_dir() else path
    if not folder.config.is_file() and not results.is_file():
        raise DataError(f"{path}: neither config.yaml nor {RESULTS_FILE} here: name run folders (a multirun's "
                        "jobs are its subfolders)")
    config = None
    if folder.config.is_file():
        try:
            loaded = yaml.safe_load(folder.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
            raise DataError(f"{folder.config}: not a readable YAML config ({err})") from err
        if not isinstance(loaded, dict):
            raise DataError(f"{folder.config}: not a mapping of config keys")
        config = flatten(loaded)
    records = [r for r in read_records(results) if isinstance(r, dict)]
    return Run(path, label, config, records)


def run_labels(paths: Sequence[str | os.PathLike]) -> list[str]:
    """Short, distinct names: each path relative to the folder all of them share."""
    resolved = [Path(p).resolve() for p in paths]
    try:
        common = Path(os.path.commonpath(resolved))
    except ValueError:
        common = None
    labels = []
    for original, path in zip(paths, resolved):
        rel = path.relative_to(common) if common is not None and path != common else None
        labels.append(str(rel) if rel is not None and str(rel) != "." else str(original))
    if len(set(labels)) < len(labels):              # the same run twice: number them
        labels = [f"{label} ({i + 1})" for i, label in enumerate(labels)]
    return labels


def config_differences(runs: list[Run], all_keys: bool = False) -> tuple[list[dict], list[str]]:
    """The keys whose values differ between the runs that have a config: rows ``{"key",
    "runtime", "values": [text per run]}``, sorted by key; and the differing runtime keys
    left out (``all_keys`` keeps them, marked)."""
    with_config = [r for r in runs if r.config is not None]
    keys = sorted({k for r in with_config for k in r.config})
    rows, hidden = [], []
    for key in keys:
        texts = [None if r.config is None else value_text(r.config[key]) if key in r.config else ABSENT
                 for r in runs]
        if len({t for t in texts if t is not None}) < 2:
            continue
        if is_runtime(key) and not all_keys:
            hidden.append(key)
            continue
        rows.append({"key": key, "runtime": is_runtime(key), "values": [MISSING if t is None else t for t in texts]})
    return rows, hidden


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def metric_differences(runs: list[Run]) -> list[dict]:
    """One row per (record, metric) found in any run, stage then method: ``{"kind", "stage",
    "method", "metric", "values": [number or text or None per run], "delta": [vs the first
    run]}``; a ``cfg`` row per record holds its setup_hash[:6]."""
    keys = []
    for run in runs:
        for record in run.records:
            key = (record.get("kind") or "classification", record.get("stage"), str(record.get("method")))
            if key not in keys:
                keys.append(key)
    keys.sort(key=lambda k: (k[0] != "classification", k[0], -1 if k[1] is None else k[1], k[2]))
    rows = []
    for kind, stage, method in keys:
        found = [next((r for r in run.records if (r.get("kind") or "classification", r.get("stage"),
                                                  str(r.get("method"))) == (kind, stage, method)), None)
                 for run in runs]
        setups = [None if r is None or not r.get("setup_hash") else str(r["setup_hash"])[:6] for r in found]
        rows.append({"kind": kind, "stage": stage, "method": method, "metric": SETUP, "values": setups,
                     "delta": [None] * len(runs)})
        for metric in METRICS.get(kind, METRICS["classification"]):
            values = [None if r is None else _number(r.get(metric)) for r in found]
            first = values[0]
            delta = [None if i == 0 or v is None or first is None else v - first for i, v in enumerate(values)]
            rows.append({"kind": kind, "stage": stage, "method": method, "metric": metric, "values": values,
                         "delta": delta})
    return rows


def _cell(value: Any, delta: float | None) -> str:
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    return f"{value:.2f}" + ("" if delta is None else f" Δ {delta:+.2f}")


def render_md(runs: list[Run], config_rows: list[dict], hidden: list[str], metric_rows: list[dict]) -> str:
    heads = [md_escape(r.label) for r in runs]
    lines = ["### runs", ""] + [f"- {md_escape(r.label)}: {md_escape(str(r.path))}" for r in runs]
    lines += ["", "### config differences", ""]
    no_config = [r.label for r in runs if r.config is None]
    if no_config:
        lines += [f"no config.yaml in {md_escape(', '.join(no_config))} ({MISSING} in its column)", ""]
    if config_rows:
        lines += ["| key | " + " | ".join(heads) + " |", "| --- |" + " --- |" * len(runs)]
        for row in config_rows:
            key = row["key"] + (" (runtime)" if row["runtime"] else "")
            lines.append("| " + " | ".join(md_escape(t) for t in [key, *row["values"]]) + " |")
    else:
        lines.append("no differences in the configuration" + (" (besides runtime keys)" if hidden else ""))
    if hidden:
        lines += ["", f"runtime keys that differ (not part of the config hash; --all-keys shows them): "
                      f"{md_escape(', '.join(hidden))}"]
    lines += ["", f"### metrics (Δ vs {md_escape(runs[0].label)})", ""]
    if metric_rows:
        lines += ["| stage | method | metric | " + " | ".join(heads) + " |",
                  "| --- | --- | --- |" + " ---: |" * len(runs)]
        for row in metric_rows:
            stage = MISSING if row["stage"] is None else str(row["stage"])
            texts = [_cell(v, d) for v, d in zip(row["values"], row["delta"])]
            lines.append("| " + " | ".join(md_escape(t) for t in [stage, row["method"], row["metric"], *texts]) + " |")
    else:
        lines.append(f"no records ({RESULTS_FILE}) in these runs")
    return "\n".join(lines) + "\n"


def _rounded(value):
    return round(value, 2) if isinstance(value, float) else value


def render_json(runs, config_rows, hidden, metric_rows) -> str:
    labels = [r.label for r in runs]
    return json.dumps({
        "runs": [{"label": r.label, "path": str(r.path), "config": r.config is not None} for r in runs],
        "config": [{"key": row["key"], "runtime": row["runtime"], "values": dict(zip(labels, row["values"]))}
                   for row in config_rows],
        "runtime_keys_hidden": hidden,
        "metrics": [{"kind": row["kind"], "stage": row["stage"], "method": row["method"], "metric": row["metric"],
                     "values": {k: _rounded(v) for k, v in zip(labels, row["values"])},
                     "delta": {k: _rounded(d) for k, d in zip(labels, row["delta"])}} for row in metric_rows],
    }, indent=1) + "\n"


CSV_FIELDS = ("section", "key", "kind", "stage", "method", "metric", "run", "value", "delta")


def render_csv(runs, config_rows, hidden, metric_rows) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in config_rows:
        for run, value in zip(runs, row["values"]):
            writer.writerow({k: csv_cell(v) for k, v in {"section": "config", "key": row["key"], "run": run.label,
                                                         "value": value}.items()})
    for row in metric_rows:
        for run, value, delta in zip(runs, row["values"], row["delta"]):
            cells = {"section": "metrics", "kind": row["kind"], "stage": row["stage"], "method": row["method"],
                     "metric": row["metric"], "run": run.label,
                     "value": f"{value:.2f}" if isinstance(value, float) else value,
                     "delta": None if delta is None else f"{delta:.2f}"}
            writer.writerow({k: csv_cell(v) for k, v in cells.items()})
    return buffer.getvalue()


RENDERERS = {"md": render_md, "csv": render_csv, "json": render_json}


def compare_text(paths: Sequence[str | os.PathLike], fmt: str = "md", all_keys: bool = False) -> str:
    from lt_bench.errors import ConfigError
    if fmt not in RENDERERS:
        raise ConfigError(f"unknown compare format {fmt!r}; valid: {', '.join(FORMATS)}")
    if len(paths) < 2:
        raise ConfigError("compare needs at least two runs")
    runs = [load_run(p, label) for p, label in zip(paths, run_labels(paths))]
    config_rows, hidden = config_differences(runs, all_keys)
    return RENDERERS[fmt](runs, config_rows, hidden, metric_differences(runs))


def main(argv: list[str] | None = None) -> int:
    """``lt-bench compare RUN_A RUN_B [...] [--format md|csv|json] [--all-keys]``."""
    parser = argparse.ArgumentParser(
        prog="lt-bench compare",
        description="config and metric differences between run folders, side by side (Δ vs the first run)")
    parser.add_argument("runs", nargs="+", help="run folders (config.yaml, results.json); the first is the baseline")
    parser.add_argument("--format", default="md", choices=FORMATS)
    parser.add_argument("--all-keys", action="store_true",
                        help="also show the runtime keys that differ (out_dir, device, ...), marked (runtime)")
    args = parser.parse_args(argv)
    try:
        print(compare_text(args.runs, args.format, args.all_keys), end="")
    except LtBenchError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
