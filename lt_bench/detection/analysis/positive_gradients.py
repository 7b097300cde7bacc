"""``python -m lt_bench.detection.analysis.positive_gradients A/grad_stats.json B/grad_stats.json --ann CATS.json
--labels sigmoid gumbel --out grad.png [--json out.json]``: GOL's Figure 7, the mean positive
gradient per category of two (or more) training runs (``PositiveGradientHook`` files).

Categories go along x by training image count, most first (ties: label order), with LVIS's
frequent/common/rare bands shaded; y is the mean |d loss_cls / d z_positive| (``grad_stats.py``
says exactly what), log scale.  Per run: one point per category, the moving geometric mean, and
each band's mean of the category means (dashed).  Categories without a foreground proposal in a
run have no point (nor those whose mean is 0: a log scale has no 0; the count is printed).

``--ann``: the training annotation file, a categories list with ``image_count`` and
``frequency``, or a run's ``lvis_categories.json`` (small, the same numbers).  The classifier's
label order is that file's category order, as mmdet's LVIS datasets number the categories
(``lvis.get_cat_ids()``; for the official files, sorted category ids); when the stats file
names its classes, they must be the file's, in that order.  Outputs are never replaced unless
``--overwrite``.  A bad file or option is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lt_bench.detection.analysis.outputs import check_outputs, run_command, save_png
from lt_bench.errors import ConfigError, DataError

KIND = "lt_bench.positive_gradients"
GROUPS = (("f", "frequent"), ("c", "common"), ("r", "rare"))
BAND_COLOURS = {"f": "#e8eef7", "c": "#f3f3f3", "r": "#fbeee6"}


def read_stats(path: str | Path, stage: str = "all") -> dict:
    """A ``PositiveGradientHook`` file: the arrays of ``stage`` (``all``: stages summed, or an index)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read positive-gradient statistics from {path}: {err}") from err
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise DataError(f"{path}: not a positive-gradient statistics file (kind {KIND!r}, written by "
                        "PositiveGradientHook)")
    source = data
    if stage != "all":
        try:
            index = int(stage)
        except ValueError:
            raise ConfigError(f"--stage must be 'all' or a stage index, not {stage!r}") from None
        stages = data.get("stages") or [data]
        if not 0 <= index < len(stages):
            raise ConfigError(f"--stage {index}: {path} has {len(stages)} stage(s)")
        source = stages[index]
    num_classes = data.get("num_classes")
    arrays = {}
    for key in ("count", "sum"):
        values = source.get(key)
        if not isinstance(values, list) or len(values) != num_classes or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise DataError(f"{path}: '{key}' must be a list of {num_classes} numbers (num_classes)")
        arrays[key] = np.asarray(values, dtype=np.float64)
    if np.any(arrays["count"] < 0) or np.any(arrays["sum"] < 0):
        raise DataError(f"{path}: negative counts or sums")
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(arrays["count"] > 0, arrays["sum"] / np.maximum(arrays["count"], 1), np.nan)
    classes = data.get("classes")
    return {"file": str(path), "loss": data.get("loss"), "activation": data.get("activation"),
            "iterations": data.get("iterations"), "num_classes": num_classes, "classes": classes,
            "count": arrays["count"], "mean": mean}


def read_categories(path: str | Path):
    """Category statistics in label order (image counts and groups are all that is used).  With
    msgspec (the detection extra) only the categories of a full annotation file become Python
    objects: LVIS v1 train's ~1 GB of annotations are parsed, never built."""
    from lt_bench.detection.categories import category_stats
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--ann {path}: no such file")
    try:
        import msgspec
    except ImportError:
        msgspec = None
    try:
        if msgspec is None:
            data = json.loads(path.read_bytes())
        else:
            class _Categories(msgspec.Struct):
                categories: list[dict]
            data = msgspec.json.decode(path.read_bytes(), type=list[dict] | _Categories)
            data = data if isinstance(data, list) else {"categories": data.categories}
    except OSError as err:
        raise DataError(f"cannot read the categories file {path}: {err.strerror or err}") from None
    except (ValueError, UnicodeDecodeError) as err:      # json's and msgspec's decode errors
        raise DataError(f"{path}: not an LVIS annotation file or a list of categories ({err})") from None
    return category_stats(data, num_images=1, source=str(path))    # image frequencies unused: any count


def moving_geometric_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving mean of log10(values) over the finite positive ones, back in linear units."""
    logs = np.where(np.isfinite(values) & (values > 0), np.log10(np.where(values > 0, values, 1.0)), np.nan)
    if window <= 1:
        return 10 ** logs
    ok = ~np.isnan(logs)
    kernel = np.ones(window)
    total = np.convolve(np.where(ok, logs, 0.0), kernel, mode="same")
    n = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, 10 ** (total / np.maximum(n, 1)), np.nan)


def group_runs(groups: np.ndarray) -> list[tuple[str, int, int]]:
    """(group, first, end) of each stretch of one frequency group along the plotted order."""
    runs, start = [], 0
    for i in range(1, len(groups) + 1):
        if i == len(groups) or groups[i] != groups[start]:
            runs.append((str(groups[start]), start, i))
            start = i
    return runs


def analyse(stat_files: list[str], ann: str, labels: list[str] | None = None, stage: str = "all") -> dict:
    """The plotted numbers: categories in plot order, each run's mean per category and band means."""
    if not stat_files:
        raise ConfigError("give at least one positive-gradient statistics file")
    if labels is not None and len(labels) != len(stat_files):
        raise ConfigError(f"--labels: {len(labels)} label(s) for {len(stat_files)} file(s)")
    runs = [read_stats(f, stage) for f in stat_files]
    cats = read_categories(ann)
    for run in runs:
        if run["num_classes"] != len(cats.ids):
            raise DataError(f"{run['file']} has {run['num_classes']} categories, --ann {ann} {len(cats.ids)}")
        if run["classes"] is not None and [str(c) for c in run["classes"]] != list(cats.names):
            first = next(i for i, (a, b) in enumerate(zip(run["classes"], cats.names)) if str(a) != b) \
                if len(run["classes"]) == len(cats.names) else 0
            raise DataError(f"{run['file']}: its classes are not --ann {ann}'s in label order (first difference "
                            f"at label {first})")
    order = np.argsort(-cats.image_count, kind="stable")
    groups = cats.frequency[order]
    result = {"kind": "lt_bench.positive_gradients_plot", "annotations": str(ann), "stage": stage,
              "order": [int(cats.ids[i]) for i in order], "runs": [], "categories": []}
    for k, run in enumerate(runs):
        label = labels[k] if labels else (f"{run['loss']} {run['activation']}" if run["loss"] else Path(run["file"]).parent.name)
        mean = run["mean"][order]
        bands = {}
        for g, _ in GROUPS:
            values = mean[(groups == g) & np.isfinite(mean)]
            bands[g] = float(values.mean()) if values.size else None
        result["runs"].append({"label": label, "file": run["file"], "loss": run["loss"], "activation": run["activation"],
                               "iterations": run["iterations"],
                               "categories_with_positives": int(np.sum(run["count"] > 0)),
                               "zero_means": int(np.sum(run["mean"] == 0)), "band_means": bands})
    for rank, i in enumerate(order):
        result["categories"].append({
            "rank": rank, "label": int(i), "id": int(cats.ids[i]), "name": cats.names[i],
            "image_count": int(cats.image_count[i]), "frequency": str(cats.frequency[i]),
            "count": [int(run["count"][i]) for run in runs],
            "mean": [None if np.isnan(run["mean"][i]) else float(run["mean"][i]) for run in runs]})
    return result


def figure(result: dict, window: int | None = None):
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    cats = result["categories"]
    n = len(cats)
    window = window or (1 if n <= 30 else max(3, (n // 40) | 1))
    groups = np.array([c["frequency"] for c in cats])
    fig = Figure(figsize=(11, 5.4), layout="constrained")
    iterations = sorted({str(r["iterations"]) for r in result["runs"]})
    fig.suptitle(f"Mean positive gradient per category ({'/'.join(iterations)} training iterations)")
    ax = fig.add_subplot()
    names = dict(GROUPS)
    for g, lo, hi in group_runs(groups):
        ax.axvspan(lo - 0.5, hi - 0.5, color=BAND_COLOURS.get(g, "#f6f6f6"), zorder=0, linewidth=0)
        if lo > 0:
            ax.axvline(lo - 0.5, color="0.6", linestyle=":", linewidth=1)
        ax.text((lo + hi - 1) / 2, 1.01, f"{names.get(g, g)}\n{hi - lo} categor{'y' if hi - lo == 1 else 'ies'}",
                transform=ax.get_xaxis_transform(),
                ha="center", va="bottom", fontsize=9)
    x = np.arange(n)
    style = {"markersize": 6, "alpha": 0.8} if n <= 30 else {"markersize": 3, "alpha": 0.35}
    handles = []
    for k, run in enumerate(result["runs"]):
        mean = np.array([np.nan if c["mean"][k] is None or c["mean"][k] <= 0 else c["mean"][k] for c in cats])
        points, = ax.plot(x, mean, linestyle="none", marker="o", markeredgewidth=0, **style)
        colour = points.get_color()
        ax.plot(x, moving_geometric_mean(mean, window), color=colour, linewidth=2)
        for g, lo, hi in group_runs(groups):
            value = run["band_means"].get(g)
            if value is not None and value > 0:
                ax.hlines(value, lo - 0.45, hi - 0.55, colors=colour, linestyles="--", linewidth=1.3)
        handles.append(Line2D([], [], color=colour, marker="o", linewidth=2, label=run["label"]))
    smoothing = f"moving geometric mean over {window} categories" if window > 1 else "per-category values joined"
    handles += [Line2D([], [], color="0.5", marker="o", linestyle="none", alpha=0.6, label="one category"),
                Line2D([], [], color="0.5", linewidth=2, label=smoothing),
                Line2D([], [], color="0.5", linestyle="--", linewidth=1.3, label="band mean of the category means")]
    ax.set_yscale("log")
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xlabel("category rank by training images (0 = most images)")
    ax.set_ylabel("mean |d loss_cls / d z| of a positive logit (log)\nloss_cls: × loss_weight / avg_factor")
    ax.grid(axis="y", which="major", color="0.88", linewidth=0.8)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False, fontsize=9)
    return fig


def report_text(result: dict) -> str:
    lines = []
    for run in result["runs"]:
        bands = ", ".join(f"{name} {run['band_means'][g]:.3g}" if run["band_means"][g] is not None else f"{name} -"
                          for g, name in GROUPS)
        lines.append(f"{run['label']}: {run['categories_with_positives']}/{len(result['categories'])} categories with "
                     f"positives, {run['zero_means']} with mean 0 (not drawn); band means {bands}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lt-bench det-gradients",
        description="plot the mean positive gradient per category (GOL Figure 7) of PositiveGradientHook files")
    parser.add_argument("stats", nargs="+", help="grad_stats.json files, one per run")
    parser.add_argument("--ann", required=True, help="training annotations, a categories list with image_count "
                                                     "and frequency, or a run's lvis_categories.json")
    parser.add_argument("--labels", nargs="+", default=None, help="one legend label per file")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--json", dest="json_out", default=None, help="also write the plotted numbers here")
    parser.add_argument("--stage", default="all", help="cascade detectors: 'all' (stages summed) or a stage index")
    parser.add_argument("--window", type=int, default=None, help="categories in the moving mean (default: C/40)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    outputs = [Path(args.out)] + ([Path(args.json_out)] if args.json_out else [])

    def body() -> None:
        inputs = [*args.stats, args.ann]
        check_outputs(outputs, inputs, args.overwrite)
        if args.window is not None and args.window < 1:
            raise ConfigError(f"--window must be a positive integer, not {args.window}")
        result = analyse(args.stats, args.ann, args.labels, args.stage)
        fig = figure(result, args.window)
        check_outputs(outputs, inputs, args.overwrite)      # not made meanwhile
        print(report_text(result), end="")
        print(f"-> {save_png(fig, args.out)}")
        if args.json_out:
            from lt_bench.fileio import atomic_write_json
            print(f"-> {atomic_write_json(args.json_out, result)}")

    return run_command("lt-bench det-gradients", body)

if __name__ == "__main__":
    sys.exit(main())
