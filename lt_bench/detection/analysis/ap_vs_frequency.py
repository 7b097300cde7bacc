"""Per-category AP against training frequency (``lt-bench det-ap-vs-frequency``).

Every detection record of the fast evaluator carries ``per_category``: each category's mask
and box AP with its training image count and LVIS frequency group.  This command plots, for
one or more runs, per-category AP against the training image count (log scale), each
category a dot, a line through the mean AP of logarithmic count bins, and LVIS's rare /
common / frequent bands (1-10, 11-100, > 100 training images); ``--json`` writes the binned
means and the per-group means (categories without ground truth in the evaluated images are
left out, as LVIS's AP leaves them out).

    lt-bench det-ap-vs-frequency runs/lvis/sigmoid runs/lvis/gumbel --labels sigmoid gumbel --out ap.png
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from lt_bench.detection.analysis.outputs import check_outputs, run_command, save_png
from lt_bench.errors import ConfigError, DataError
from lt_bench.fileio import atomic_write_json
from lt_bench.records import RESULTS_FILE, read_records

GROUPS = (("r", "rare", 1, 10), ("c", "common", 11, 100), ("f", "frequent", 101, math.inf))
METRIC_KEYS = {"segm": "AP", "bbox": "APbox"}


def load_run(path: str | Path, metric: str = "segm") -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
    """(record, image counts, frequency groups, AP %) of the categories with an AP, from a run
    folder or its results.json (its one detection record with ``per_category``)."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(f"{path}: no {RESULTS_FILE} there")
    found = [r for r in read_records(file) if isinstance(r, dict) and r.get("kind") == "detection"]
    with_ap = [r for r in found if isinstance(r.get("per_category"), dict)]
    if not with_ap:
        why = "no detection record" if not found else \
            "its detection record has no per_category AP (evaluated with detection.evaluator=lvis, or before it was recorded)"
        raise DataError(f"{file}: {why}")
    if len(with_ap) > 1:
        raise DataError(f"{file}: {len(with_ap)} detection records with per_category AP; name one run")
    record, table = with_ap[0], with_ap[0]["per_category"]
    key = METRIC_KEYS[metric]
    if key not in table:
        raise DataError(f"{file}: per_category has no {metric} AP ({key})")
    rows = [(c, f, ap) for c, f, ap in zip(table["image_count"], table["frequency"], table[key])
            if ap is not None and c is not None]
    if not rows:
        raise DataError(f"{file}: no category has both an AP and a training image count")
    counts, groups, aps = zip(*rows)
    return record, np.asarray(counts, float), np.asarray(groups), np.asarray(aps, float)


def binned_means(counts: np.ndarray, aps: np.ndarray, bins_per_decade: int = 4) -> list[dict]:
    """Mean AP over logarithmic bins of the training image count (empty bins left out)."""
    top = max(float(counts.max()), 1.0)
    edges = 10.0 ** np.arange(0.0, math.log10(top) + 1.0 / bins_per_decade + 1e-9, 1.0 / bins_per_decade)
    edges[-1] = max(edges[-1], top + 1)
    index = np.clip(np.searchsorted(edges, np.maximum(counts, 1.0), side="right") - 1, 0, len(edges) - 2)
    out = []
    for b in range(len(edges) - 1):
        inside = index == b
        if inside.any():
            out.append({"from": float(edges[b]), "to": float(edges[b + 1]),
                        "centre": float(math.sqrt(edges[b] * edges[b + 1])),
                        "categories": int(inside.sum()), "mean_AP": float(aps[inside].mean())})
    return out


def group_means(groups: np.ndarray, aps: np.ndarray) -> dict[str, float | None]:
    """Mean per-category AP of each frequency group: APr / APc / APf as LVIS defines them."""
    return {f"AP{g}": (float(aps[groups == g].mean()) if (groups == g).any() else None) for g, *_ in GROUPS}


def plot(runs: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], out: Path, metric: str) -> None:
    import matplotlib
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, 5.2), dpi=110)
    ax = fig.subplots()
    top = max(float(c.max()) for _, c, _, _ in runs)
    for (_, name, low, high), shade in zip(GROUPS, ("#f4d6d6", "#f6ecd2", "#d9ead3")):
        ax.axvspan(low - 0.5 if low > 1 else 0.8, min(high + 0.5, top * 1.5), color=shade, alpha=0.6, lw=0)
        ax.text(math.sqrt(max(low, 1) * min(high, top * 1.5)), 0.985, name, transform=ax.get_xaxis_transform(),
                ha="center", va="top", fontsize=9, color="0.3")
    colours = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, counts, groups, aps) in enumerate(runs):
        colour = colours[i % len(colours)]
        ax.scatter(counts, aps, s=9, alpha=0.35, color=colour, lw=0)
        bins = binned_means(counts, aps)
        means = group_means(groups, aps)
        summary = ", ".join(f"{k} {v:.1f}" for k, v in means.items() if v is not None)
        ax.plot([b["centre"] for b in bins], [b["mean_AP"] for b in bins], "-o", ms=4, lw=2, color=colour,
                label=f"{label} (mean per bin; {summary})")
    ax.set_xscale("log")
    ax.set_xlim(0.8, top * 1.5)
    ax.set_ylim(-2, 102)
    ax.set_xlabel("training images containing the category (log scale)")
    ax.set_ylabel(f"per-category {'mask' if metric == 'segm' else 'box'} AP (%)")
    ax.set_title(f"Per-category {'mask' if metric == 'segm' else 'box'} AP against training frequency")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, framealpha=0.9)
    fig.tight_layout()
    save_png(fig, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lt-bench det-ap-vs-frequency",
                                     description="per-category AP against training image count, one line per run")
    parser.add_argument("runs", nargs="+", help="detection run folders or their results.json")
    parser.add_argument("--labels", nargs="+", default=None, help="one per run (default: the record's method)")
    parser.add_argument("--metric", choices=tuple(METRIC_KEYS), default="segm", help="mask (segm) or box AP")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--json", default=None, help="also write the binned and per-group means here")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    outputs = [Path(p) for p in (args.out, args.json) if p]

    def body() -> None:
        if args.labels is not None and len(args.labels) != len(args.runs):
            raise ConfigError(f"--labels: {len(args.labels)} labels for {len(args.runs)} runs")
        check_outputs(outputs, args.runs, args.overwrite)
        loaded = [load_run(p, args.metric) for p in args.runs]
        labels = args.labels or [str(r.get("method")) for r, *_ in loaded]
        runs = [(label, c, g, a) for label, (_, c, g, a) in zip(labels, loaded)]
        plot(runs, Path(args.out), args.metric)
        if args.json:
            atomic_write_json(args.json, {"metric": args.metric, "runs": [
                {"label": label, "source": str(path), "categories": int(len(a)), **group_means(g, a),
                 "bins": binned_means(c, a)} for (label, c, g, a), path in zip(runs, args.runs)]})
        print("\n".join(f"-> {p}" for p in outputs))

    return run_command("lt-bench det-ap-vs-frequency", body)

if __name__ == "__main__":
    sys.exit(main())
