"""``lt-bench det-weight-norms CKPT_A [CKPT_B ...] --ann CATEGORIES --out norms.png``: the L2 norm
of each category's row of a detector's box classifier (``fc_cls.weight``), categories ordered by
training images, most first: the GOL paper's Figure 1 (ii), where a Softmax detector gives the
frequent categories far larger norms than the rare ones.

Rows and categories.  Row i of ``fc_cls.weight`` scores mmdet's label i.  mmdet 3.3's LVIS
datasets (``LVISV05Dataset`` and ``LVISV1Dataset.load_data_list``) number the labels
``{cat_id: i for i, cat_id in enumerate(self.lvis.get_cat_ids())}``, and lvis-api's
``get_cat_ids()`` is ``list(self.cats)``: the category order of the training annotation file,
which in the official LVIS v0.5 and v1 files is ascending id.  So row i belongs to the i-th
smallest category id, however the categories file given here lists them; a checkpoint that
names its classes (``meta.dataset_meta.classes``, mmdet 2.x: ``meta.CLASSES``) is checked against that order.
With C + 1 rows the last one is mmdet's background logit (label C) and is dropped.

Loading safely: ``lt_bench.detection.safe_checkpoint.load_checkpoint`` (torch's ``weights_only``
unpickler with a fixed allowlist; any other global is refused, naming the file and the global).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lt_bench.detection.analysis.outputs import check_outputs, run_command, save_png
from lt_bench.detection.safe_checkpoint import STAND_INS, Unread, _allowlist, load_checkpoint  # noqa: F401
from lt_bench.errors import ConfigError, DataError

KIND = "lt_bench.det_weight_norms"
DEFAULT_SUFFIX = "fc_cls.weight"
FREQUENCY_WORDS = {"f": "frequent", "c": "common", "r": "rare"}
BAND_COLOURS = {"f": "#e3edf7", "c": "#fbf0dc", "r": "#f8e1e1"}   # faint blue, sand, rose (as lt_bench.plots)
MAX_RENAMED = 3      # class names that may differ in spelling only (mmdet fixed 'speaker_(stero_equipment)')


def classifier_weight(state: Mapping[str, Any], key: str | None, source: str) -> tuple[str, np.ndarray]:
    """(key, 2-D float64 array) of the box classifier: ``key``, or the one key ending in
    ``fc_cls.weight`` (a cascade has one per stage: then ``key`` must choose)."""
    import torch
    candidates = [k for k in state if isinstance(k, str) and k.endswith(DEFAULT_SUFFIX)]
    if key is None:
        if len(candidates) != 1:
            listed = ", ".join(candidates) if candidates else "none; 2-D weights: " + ", ".join(
                k for k, v in state.items() if torch.is_tensor(v) and v.ndim == 2)
            raise ConfigError(f"{source}: {len(candidates)} keys end in {DEFAULT_SUFFIX} ({listed}); choose the "
                              "classifier with --key")
        key = candidates[0]
    elif key not in state:
        raise ConfigError(f"{source} has no {key!r}; keys ending in {DEFAULT_SUFFIX}: "
                          f"{', '.join(candidates) or 'none'}")
    weight = state[key]
    if not torch.is_tensor(weight) or weight.ndim != 2:
        raise DataError(f"{source}: {key} is not a 2-D weight matrix "
                        f"({tuple(weight.shape) if torch.is_tensor(weight) else type(weight).__name__})")
    return key, weight.detach().to(torch.float64).numpy()


# ---------------------------------------------------------------------------------------------
# Categories


@dataclass(frozen=True)
class Categories:
    """LVIS categories in ascending id order (= the classifier rows, see the module doc)."""

    ids: np.ndarray
    names: tuple[str, ...]
    frequency: np.ndarray            # 'r' / 'c' / 'f'
    image_count: np.ndarray          # training images holding the category
    source: str

    def rank_order(self) -> np.ndarray:
        """Positions by image count, most first (ties: ascending id)."""
        return np.argsort(-self.image_count, kind="stable")


def read_categories(path: str | os.PathLike) -> Categories:
    """The categories of an LVIS annotation file, a categories list with counts (such as
    ``lvis_v1_categories_with_counts.json``) or ``lt_bench``'s category summary.  Only the
    ``categories`` are decoded: the ~1 GB of a training file's annotations are skipped unbuilt."""
    import msgspec

    class CategoriesFile(msgspec.Struct):
        categories: list[dict[str, Any]]
    try:
        data = msgspec.json.decode(Path(path).read_bytes(), type=list[dict[str, Any]] | CategoriesFile)
    except OSError as err:
        raise DataError(f"cannot read the categories file {path}: {err.strerror or err}") from None
    except (msgspec.DecodeError, msgspec.ValidationError) as err:
        raise DataError(f"{path}: not an LVIS annotation file or a list of categories ({err})") from None
    cats = data if isinstance(data, list) else data.categories
    bad = [c.get("id", f"#{i}") for i, c in enumerate(cats)
           if not (isinstance(c.get("id"), int) and isinstance(c.get("image_count"), (int, float))
                   and c.get("frequency") in FREQUENCY_WORDS)]
    if bad or not cats:
        raise DataError(f"{path}: " + (f"categories without an integer id, an image_count and a frequency r/c/f "
                                        f"(ids {bad[:5]})" if bad else "no categories"))
    cats = sorted(cats, key=lambda c: c["id"])
    ids = np.array([c["id"] for c in cats], dtype=np.int64)
    if np.any(ids[1:] == ids[:-1]):
        raise DataError(f"{path}: category id {int(ids[1:][ids[1:] == ids[:-1]][0])} is listed twice")
    return Categories(ids=ids, names=tuple(str(c.get("name", c["id"])) for c in cats),
                      frequency=np.array([c["frequency"] for c in cats]),
                      image_count=np.array([c["image_count"] for c in cats], dtype=np.float64), source=str(path))


def _check_classes(meta: Mapping[str, Any] | None, cats: Categories, source: str) -> None:
    """DataError when the checkpoint names its classes and they are not ``cats`` in row order
    (up to ``MAX_RENAMED`` spelling differences)."""
    dataset_meta = meta.get("dataset_meta") if meta else None      # mmengine; mmdet 2.x: meta['CLASSES']
    classes = dataset_meta.get("classes") if isinstance(dataset_meta, Mapping) else (meta or {}).get("CLASSES")
    if not isinstance(classes, (list, tuple)) or len(classes) != len(cats.names):
        return
    differ = [i for i, (a, b) in enumerate(zip(classes, cats.names)) if a != b]
    if len(differ) > MAX_RENAMED:
        i = differ[0]
        raise DataError(f"{source}: its classes (in its meta) are not the categories of {cats.source} "
                        f"in ascending id order: label {i} is {classes[i]!r} there, {cats.names[i]!r} here "
                        f"({len(differ)} labels differ)")


# ---------------------------------------------------------------------------------------------
# The analysis


def weight_norms(checkpoints: Sequence[str | os.PathLike], ann: str | os.PathLike,
                 labels: Sequence[str] | None = None, key: str | None = None) -> dict[str, Any]:
    """The report (what ``--json`` writes): per checkpoint its key, shape and whether a background
    row was dropped; per category, most training images first, its id, name, frequency group,
    image count and the L2 norm of its classifier row in each checkpoint."""
    labels = list(labels) if labels is not None else default_labels(checkpoints)
    if len(labels) != len(checkpoints) or len(set(labels)) != len(labels):
        raise ConfigError(f"--labels needs {len(checkpoints)} distinct labels, one per checkpoint, got {labels}")
    cats = read_categories(ann)
    order = cats.rank_order()
    runs, norms = [], {}
    for label, path in zip(labels, checkpoints):
        state, meta = load_checkpoint(path)
        name, weight = classifier_weight(state, key, str(path))
        rows, num = weight.shape[0], len(cats.ids)
        if rows not in (num, num + 1):
            raise DataError(f"{path}: {name} has {rows} rows, which fit neither the {num} categories of {ann} "
                            f"nor {num} + 1 (mmdet's background row last)")
        _check_classes(meta, cats, str(path))
        norms[label] = np.linalg.norm(weight[:num], axis=1)[order]
        runs.append({"label": label, "checkpoint": str(path), "key": name, "shape": list(weight.shape),
                     "background_row_dropped": rows == num + 1})
    freq = cats.frequency[order]
    return {"kind": KIND, "categories_file": str(ann),
            "row_order": "row i = the i-th smallest category id (mmdet's LVIS label order)",
            "category_order": "training images (image_count), most first; ties by id",
            "checkpoints": runs,
            "group_mean_norm": {label: {g: float(v[freq == g].mean()) for g in FREQUENCY_WORDS if (freq == g).any()}
                                for label, v in norms.items()},
            "categories": [{"rank": r, "id": int(cats.ids[i]), "name": cats.names[i], "frequency": str(freq[r]),
                            "image_count": int(cats.image_count[i]) if float(cats.image_count[i]).is_integer()
                            else float(cats.image_count[i]),
                            "norm": {label: float(v[r]) for label, v in norms.items()}}
                           for r, i in enumerate(order)]}


def default_labels(checkpoints: Sequence[str | os.PathLike]) -> list[str]:
    """File names without suffix; with the folder too where two names coincide."""
    stems = [Path(p).stem for p in checkpoints]
    if len(set(stems)) == len(stems):
        return stems
    return [f"{Path(p).parent.name}/{Path(p).stem}" for p in checkpoints]


def smoothing_window(n: int) -> int:
    """Odd number at or just below sqrt(n): 3 at 10 categories, 31 at 1,000."""
    return 2 * int(np.sqrt(max(n, 1)) // 2) + 1


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average, the window cut at both ends."""
    total = np.concatenate([[0.0], np.cumsum(values)])
    idx = np.arange(len(values))
    lo, hi = np.clip(idx - window // 2, 0, len(values)), np.clip(idx + window // 2 + 1, 0, len(values))
    return (total[hi] - total[lo]) / (hi - lo)


def frequency_runs(freq: np.ndarray) -> list[tuple[str, int, int]]:
    """(group, first, end) of each run of one frequency group along the rank order."""
    edges = np.flatnonzero(freq[1:] != freq[:-1]) + 1
    starts, ends = np.r_[0, edges], np.r_[edges, len(freq)]
    return [(str(freq[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def shade_frequency_bands(ax, freq: np.ndarray) -> None:
    """Shade the rare/common/frequent runs; name each group (with its size) over its widest run."""
    runs = frequency_runs(freq)
    for group, lo, hi in runs:
        ax.axvspan(lo - 0.5, hi - 0.5, color=BAND_COLOURS[group], zorder=0, linewidth=0)
    for group in FREQUENCY_WORDS:
        mine = [r for r in runs if r[0] == group]
        if mine:
            _, lo, hi = max(mine, key=lambda r: r[2] - r[1])
            count = int((freq == group).sum())
            ax.text((lo + hi - 1) / 2, 1.01, f"{FREQUENCY_WORDS[group]}\n{count} categor{'ies' if count != 1 else 'y'}",
                    transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=9)


def plot_norms(report: Mapping[str, Any], out: str | os.PathLike) -> Path:
    """Norm against frequency rank, one colour per checkpoint (points: per category; line: moving
    average; dashed: group mean), the r/c/f groups shaded, training images in grey on a log axis."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    cats = report["categories"]
    n = len(cats)
    x = np.arange(n)
    freq = np.array([c["frequency"] for c in cats])
    counts = np.array([c["image_count"] for c in cats], dtype=float)
    fig = Figure(figsize=(11, 5.8), layout="constrained")
    fig.suptitle("Box classifier weight norm per category (L2 norm of its fc_cls row), most training images first")
    ax = fig.add_subplot()
    twin = ax.twinx()
    shade_frequency_bands(twin, freq)
    twin.step(x, np.maximum(counts, 1), where="mid", color="0.6", linewidth=1, zorder=1)
    twin.set_yscale("log")
    twin.set_ylabel("training images (log" + (", 0 drawn as 1)" if (counts < 1).any() else ")"), color="0.45")
    twin.tick_params(axis="y", colors="0.45")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    window = smoothing_window(n)
    handles = []
    for run in report["checkpoints"]:
        values = np.array([c["norm"][run["label"]] for c in cats])
        raw, = ax.plot(x, values, linestyle="none", marker="o", markersize=2 if n > 300 else 4, markeredgewidth=0,
                       alpha=0.35 if n > 300 else 0.7)
        colour = raw.get_color()
        ax.plot(x, moving_average(values, window), color=colour, linewidth=2.2)
        for group, lo, hi in frequency_runs(freq):
            ax.hlines(report["group_mean_norm"][run["label"]][group], lo - 0.5, hi - 0.5, colors=colour,
                      linestyles="--", linewidth=1)
        dropped = ", background row dropped" if run["background_row_dropped"] else ""
        handles.append(Line2D([], [], color=colour, linewidth=2.2,
                              label=f"{run['label']} ({run['key']} {run['shape'][0]}×{run['shape'][1]}{dropped})"))
    handles += [Line2D([], [], color="0.4", linestyle="none", marker="o", markersize=4, label="per category"),
                Line2D([], [], color="0.4", linewidth=2.2, label=f"moving average over {window} categories"),
                Line2D([], [], color="0.4", linestyle="--", linewidth=1, label="mean of the frequency group")]
    handles.append(Line2D([], [], color="0.6", linewidth=1, label="training images (right axis)"))
    ax.legend(handles=handles, loc="lower left", fontsize=8.5, framealpha=0.9)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_ylim(bottom=0)
    source = Path(report["categories_file"]).name
    ax.set_xlabel(f"category rank by training images (0 = most; {n} categories of {source})")
    ax.set_ylabel("classifier weight norm ‖w_c‖₂")
    ax.grid(axis="y", color="0.9", linewidth=0.8)
    return save_png(fig, out)


# ---------------------------------------------------------------------------------------------
# Shared by the analysis commands


def main(argv: list[str] | None = None) -> int:
    """``lt-bench det-weight-norms CKPT_A [CKPT_B ...] --ann CATEGORIES --out norms.png
    [--json norms.json] [--labels A B ...] [--key KEY] [--overwrite]``."""
    parser = argparse.ArgumentParser(
        prog="lt-bench det-weight-norms",
        description="plot the L2 norm of each category's box classifier row (fc_cls.weight) of one or more "
                    "mmdet/mmengine checkpoints, categories ordered by training images (GOL, Figure 1 (ii))")
    parser.add_argument("checkpoints", nargs="+", help="checkpoints (a dict with 'state_dict', or a bare state dict)")
    parser.add_argument("--ann", required=True, help="the training annotations (e.g. lvis_v1_train.json) or a "
                        "categories list with image_count and frequency (lvis_v1_categories_with_counts.json)")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    parser.add_argument("--labels", nargs="+", default=None, help="one label per checkpoint (default: file names)")
    parser.add_argument("--key", default=None, help="the classifier weight in the state dict (default: the one "
                        "key ending in fc_cls.weight, e.g. roi_head.bbox_head.fc_cls.weight; a cascade needs "
                        "roi_head.bbox_head.<stage>.fc_cls.weight)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    outputs = [Path(args.out)] + ([Path(args.json)] if args.json else [])

    def body() -> None:
        if Path(args.out).suffix.lower() != ".png":
            raise ConfigError(f"--out {args.out}: name a .png file")
        inputs = [*args.checkpoints, args.ann]
        check_outputs(outputs, inputs, args.overwrite)
        report = weight_norms(args.checkpoints, args.ann, args.labels, args.key)
        for run in report["checkpoints"]:
            groups = report["group_mean_norm"][run["label"]]
            means = ", ".join(f"{FREQUENCY_WORDS[g]} {v:.4g}" for g, v in groups.items())
            dropped = "; the last row (mmdet's background) dropped" if run["background_row_dropped"] else ""
            print(f"{run['label']}: {run['key']} {tuple(run['shape'])} from {run['checkpoint']}{dropped}; "
                  f"mean norm {means}")
        check_outputs(outputs, inputs, args.overwrite)      # not made meanwhile
        print(f"-> {plot_norms(report, args.out)}")
        if args.json:
            from lt_bench.fileio import atomic_write_json
            print(f"-> {atomic_write_json(args.json, report)}")

    return run_command("lt-bench det-weight-norms", body)


if __name__ == "__main__":
    sys.exit(main())
