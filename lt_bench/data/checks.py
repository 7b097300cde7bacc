"""`check-data`: the split files and the image root checked before hours of training.

For each split file of the task: line count, sha256 against the official file, classes,
images per class (max/min), many/medium/few classes (training split); then every listed
image (or a random sample) must exist and decode.  Each problem names the file and line.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lt_bench.data.split_file import (Problem, SplitEntry, load_manifest, parse_split_file, scan_images,
                                      sha256_file)
from lt_bench.data.split_lt import split_file_path
from lt_bench.shots import DEFAULT_THRESHOLDS, SHOT_GROUPS, shot_groups, thresholds_of

COMPARED = ("lines", "classes", "max_per_class", "min_per_class")


@dataclass
class SplitReport:
    split: str
    path: Path
    entries: list[SplitEntry] = field(default_factory=list)
    stats: dict = field(default_factory=dict)
    official: str = "not in manifest"     # "yes" | "no" | "not in manifest"
    problems: list[Problem] = field(default_factory=list)


def split_statistics(entries: list[SplitEntry], *, training: bool, many_above: int = DEFAULT_THRESHOLDS[0],
                     few_below: int = DEFAULT_THRESHOLDS[1]) -> dict:
    per_class = Counter(e.label for e in entries)
    stats = {"lines": len(entries), "classes": len(per_class),
             "max_per_class": max(per_class.values(), default=0), "min_per_class": min(per_class.values(), default=0)}
    if training and per_class:
        counts = [per_class.get(c, 0) for c in range(max(per_class) + 1)]
        groups = shot_groups(counts, many_above, few_below)
        stats["shots"] = {g: len(groups[g]) for g in SHOT_GROUPS}
    return stats


def check_split_file(split: str, path: Path, num_classes: int, manifest: dict[str, dict],
                     thresholds: tuple[int, int] = DEFAULT_THRESHOLDS) -> SplitReport:
    report = SplitReport(split, path)
    report.entries, report.problems = parse_split_file(path, num_classes)
    if not path.is_file():
        return report
    report.stats = split_statistics(report.entries, training=split == "train", many_above=thresholds[0],
                                    few_below=thresholds[1])
    report.stats["sha256"] = sha256_file(path)
    known = manifest.get(path.name)
    if known is None:
        return report
    report.official = "yes" if report.stats["sha256"] == known["sha256"] else "no"
    if report.official == "no":
        differs = [f"{k} {report.stats[k]} (official {known[k]})" for k in COMPARED if report.stats[k] != known[k]]
        report.problems.append(Problem(str(path), None, "sha256 differs from the official file"
                                       + (f": {', '.join(differs)}" if differs else "")))
    if report.stats["classes"] != num_classes:
        report.problems.append(Problem(str(path), None, f"{report.stats['classes']} classes, the task has {num_classes}"))
    return report


def check_task_data(cfg, *, sample: int | None = None, images: bool = True, workers: int | None = None,
                    show_progress: bool = True) -> tuple[list[SplitReport], int]:
    """Reports for every split file of the task, with image problems added; and the number
    of images checked."""
    manifest = load_manifest()
    root = Path(cfg.data.root).expanduser()
    reports = [check_split_file(split, split_file_path(cfg, split), int(cfg.task.num_classes), manifest,
                                thresholds_of(cfg))
               for split in cfg.task.split_files]
    checked = 0
    if images:
        if not root.is_dir():
            reports[0].problems.append(Problem(str(root), None, "image root (data.root) does not exist"))
            return reports, 0
        for report in reports:
            entries = report.entries
            if sample is not None and sample < len(entries):
                entries = random.Random(0).sample(entries, sample)
            report.problems += scan_images(root, report.path, entries, workers=workers, show_progress=show_progress)
            checked += len(entries)
    return reports, checked


def format_reports(reports: list[SplitReport], checked: int | None, root: str) -> str:
    """``checked``: images decoded, None when images were not checked."""
    lines = []
    for r in reports:
        if not r.stats:
            lines.append(f"{r.split:<5} {r.path}: missing")
            continue
        s = r.stats
        shots = f"  many/medium/few {s['shots']['many']}/{s['shots']['medium']}/{s['shots']['few']}" if "shots" in s else ""
        lines.append(f"{r.split:<5} {r.path.name}: {s['lines']:,} lines, {s['classes']} classes, "
                     f"{s['max_per_class']}..{s['min_per_class']} per class{shots}, sha256 {s['sha256'][:12]}... "
                     f"official: {r.official}")
    lines.append(f"images under {root}: " + ("not checked" if checked is None else f"{checked:,} checked"))
    problems = [p for r in reports for p in r.problems]
    lines.append(f"{len(problems)} problem(s)" + (":" if problems else ""))
    lines += [f"  {p}" for p in problems]
    return "\n".join(lines)


def run_check_data(cfg) -> int:
    """Print the report; 0 when everything is right, 1 otherwise."""
    if not cfg.task.get("split_files"):
        print(f"check_data checks split files; task {cfg.task.name} has none (its data is checked when loaded)")
        return 0
    options = cfg.get("check_data", {})
    reports, checked = check_task_data(cfg, sample=options.get("sample"), images=bool(options.get("images", True)),
                                       workers=options.get("workers"), show_progress=bool(cfg.progress))
    print(f"check_data: task {cfg.task.name}, split files in {cfg.data.splits_dir}")
    print(format_reports(reports, checked if options.get("images", True) else None, cfg.data.root))
    return 1 if any(r.problems for r in reports) else 0
