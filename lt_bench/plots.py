"""Figures of a classification run: per-class accuracy, classifier norms, activation curves.

The long-tail story of GOL is told by three pictures: accuracy falls from head to tail
classes, softmax gives head classes larger classifier norms (the paper's Figure 1(ii)), and
the Gumbel loss pushes positive logits harder than Sigmoid or Softmax (Figure 3).  Classes
are always ordered by training images, most frequent first, so that head and tail sit at the
same place in every figure, with the many/medium/few bands shaded.

Per-class series are drawn the same way at 10, 100 or 1,000 classes: one faint point per
class, a centred moving average over ``smoothing_window(C)`` classes (3 at 10 classes, 11 at
100, 31 at 1,000; the legend says how many) and, per band, a dashed line at the mean of its
classes.  The smoothed line carries the ``gid`` ``smoothed:<series>`` and the points
``per_class:<series>``, so tests and notebooks can read back exactly what was drawn.

Figures are drawn on the Agg canvas (no pyplot, no global state) and written atomically.
"""
from __future__ import annotations

import io
import logging
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import Tensor

from lt_bench.activations import build_activation
from lt_bench.checkpoint import load_checkpoint
from lt_bench.errors import CheckpointError, DataError
from lt_bench.run_folder import RunFolder
from lt_bench.shots import DEFAULT_THRESHOLDS, SHOT_GROUPS, describe, shot_groups
from lt_bench.fileio import atomic_write
from lt_bench.records import read_records

log = logging.getLogger(__name__)
CLASSIFIER_KEY = "classifier.weight"
ACTIVATION_NAMES = ("sigmoid", "softmax", "gumbel")
DEFAULT_GUMBEL = {"clamp": (-4.0, 10.0), "temperature": 1.0, "gradient": "exact"}
BAND_COLOURS = {"many": "#e3edf7", "medium": "#fbf0dc", "few": "#f8e1e1"}   # faint blue, sand, rose
STYLE_GREY = "0.35"
COUNT_GREY = "0.87"
FEW_CLASSES = 30            # up to this many classes, each class gets its own tick (its label id)


def frequency_order(train_counts: Sequence[int]) -> np.ndarray:
    """Class indices by training images, most frequent first (ties keep index order)."""
    return np.argsort(-np.asarray(train_counts), kind="stable")


def class_norms(weight: Tensor, train_counts: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(training counts, L2 norms of the classifier rows), both in frequency order."""
    if weight.ndim != 2 or weight.shape[0] != len(train_counts):
        raise DataError(f"classifier weight of shape {tuple(weight.shape)} does not fit "
                        f"{len(train_counts)} classes of train_counts")
    order = frequency_order(train_counts)
    norms = torch.linalg.norm(weight.detach().float().cpu(), dim=1).numpy()
    return np.asarray(train_counts)[order], norms[order]


def smoothing_window(num_classes: int) -> int:
    """Classes in the moving average of a per-class curve: the odd number at or just below
    sqrt(C) (3 at 10 classes, 11 at 100, 31 at 1,000), so the line stays about as smooth
    whatever the number of classes, and centred."""
    return 2 * int(math.sqrt(max(num_classes, 1)) // 2) + 1


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Centred moving average over ``window`` (odd) neighbouring entries, ignoring NaN; the
    window is cut at both ends (the first class averages itself and the ``window // 2`` after
    it).  An entry with no valid neighbour is NaN."""
    values = np.asarray(values, dtype=float)
    n, half = len(values), window // 2
    valid = ~np.isnan(values)
    total = np.concatenate([[0.0], np.cumsum(np.where(valid, values, 0.0))])
    count = np.concatenate([[0], np.cumsum(valid)])
    lo = np.clip(np.arange(n) - half, 0, n)
    hi = np.clip(np.arange(n) + half + 1, 0, n)
    sums, counts = total[hi] - total[lo], count[hi] - count[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def activation_curves(z: Tensor, num_classes: int = 10, clamp: tuple[float, float] | None = (-4.0, 10.0),
                      names: Sequence[str] = ACTIVATION_NAMES, temperature: float = 1.0,
                      gradient: str = "exact") -> dict[str, dict[str, np.ndarray]]:
    """Score and loss gradient of each activation as the logit ``z`` of one class varies.

    Each sample is the logit row [z, 0, ..., 0] of ``num_classes`` classes (softmax needs the
    others; binary activations ignore them).  ``grad_pos`` is d loss / dz when that class is
    the label, ``grad_neg`` when another class is, both by autograd through ``act.loss``.
    Gumbel is built with ``clamp``, ``temperature`` and ``gradient`` (``activations.gumbel``).
    """
    if num_classes < 2:
        raise ValueError(f"activation_curves needs num_classes >= 2, got {num_classes}")
    z = torch.as_tensor(z, dtype=torch.float32).reshape(-1, 1)
    others = torch.zeros(len(z), num_classes - 1)
    curves = {}
    for name in names:
        act = (build_activation(name, clamp=clamp, temperature=temperature, gradient=gradient)
               if name == "gumbel" else build_activation(name))
        with torch.no_grad():
            out = {"score": act.probs(torch.cat([z, others], dim=1))[:, 0].numpy()}
        for key, label in (("grad_pos", 0), ("grad_neg", 1)):
            leaf = z.clone().requires_grad_()
            loss = act.loss(torch.cat([leaf, others], dim=1), torch.full((len(z),), label)) * len(z)
            out[key] = torch.autograd.grad(loss, leaf)[0][:, 0].numpy()   # (batch mean * N: per row)
        curves[name] = out
    return curves


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def _run_title(records: Sequence[dict]) -> str:
    """'task, imbalance N, model' of the records (values joined by '/' where they differ)."""
    parts = []
    for key, fmt in (("task", "{}"), ("imbalance", "imbalance {}"), ("model", "{}")):
        values = sorted({str(r[key]) for r in records if r.get(key) is not None})
        if values:
            parts.append(fmt.format("/".join(values)))
    return ", ".join(parts)


def _bands(sorted_counts: Sequence[int], thresholds: Sequence[int]) -> list[tuple[str, int, int]]:
    """(group, first, end) positions of the many/medium/few bands along frequency order."""
    groups = shot_groups(list(sorted_counts), *thresholds)
    n = len(sorted_counts)
    edges = [0, len(groups["many"]), n - len(groups["few"]), n]
    return [(name, lo, hi) for (lo, hi), name in zip(zip(edges, edges[1:]), SHOT_GROUPS) if hi > lo]


def _frequency_axes(sorted_counts: np.ndarray, ylabel: str, title: str,
                    thresholds: Sequence[int] = DEFAULT_THRESHOLDS, class_ids: Sequence[int] | None = None):
    """Figure and axes over classes in frequency order: the many/medium/few bands shaded (the
    run's ``eval.shot_thresholds``), training counts as grey bars on a log twin axis; with few
    classes, each tick names its class (label id)."""
    n = len(sorted_counts)
    fig = Figure(figsize=(11, 5.6), layout="constrained")
    fig.suptitle(title)
    ax = fig.add_subplot()
    x = np.arange(n)
    twin = ax.twinx()
    for name, lo, hi in _bands(sorted_counts, thresholds):
        twin.axvspan(lo - 0.5, hi - 0.5, color=BAND_COLOURS[name], zorder=0, linewidth=0)
        if lo > 0:
            ax.axvline(lo - 0.5, color="0.55", linestyle=":", linewidth=1)
        ax.text((lo + hi - 1) / 2, 1.01, f"{name}\n{hi - lo} class{'es' if hi - lo != 1 else ''}",
                transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=9)
    counts = np.maximum(sorted_counts, 1)
    if n <= FEW_CLASSES:
        twin.bar(x, counts, width=0.8, color=COUNT_GREY, zorder=1)
    else:            # hundreds of bars: one light step outline reads better
        twin.fill_between(x, counts, step="mid", color=COUNT_GREY, linewidth=0, zorder=1)
        twin.step(x, counts, where="mid", color="0.7", linewidth=0.8, zorder=1)
    twin.set_yscale("log")
    twin.set_ylabel("training images (log)", color="0.45")
    twin.tick_params(axis="y", colors="0.45")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.set_xlim(-0.5, n - 0.5)
    bands = describe(*thresholds).replace("-", "–")
    if class_ids is not None and n <= FEW_CLASSES:
        ax.set_xticks(x, [str(c) for c in class_ids])
        ax.set_xlabel(f"class (label id), most training images first   ·   {bands}")
    else:
        ax.set_xlabel(f"class rank by training images (0 = most frequent)   ·   {bands}")
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", color="0.9", linewidth=0.8)
    return fig, ax


def _point_style(n: int) -> dict:
    """Per-class points: clear at 10 classes, a faint cloud at 1,000."""
    if n <= FEW_CLASSES:
        return {"markersize": 7, "alpha": 0.75}
    if n <= 300:
        return {"markersize": 4, "alpha": 0.4}
    return {"markersize": 2.5, "alpha": 0.25}


def _per_class_series(ax, values: np.ndarray, bands, label: str, window: int, offset: float = 0.0,
                      colour=None) -> str:
    """One series along frequency order: faint points, the moving average, band means. Its colour."""
    n = len(values)
    x = np.arange(n)
    points, = ax.plot(x + offset, values, linestyle="none", marker="o", color=colour, markeredgewidth=0,
                      **_point_style(n), gid=f"per_class:{label}")
    colour = points.get_color()
    ax.plot(x, moving_average(values, window), color=colour, linewidth=2.2, gid=f"smoothed:{label}",
            solid_capstyle="round")
    for name, lo, hi in bands:
        band = values[lo:hi]
        if np.any(~np.isnan(band)):
            ax.hlines(float(np.nanmean(band)), lo - 0.45, hi - 0.55, colors=colour, linestyles="--",
                      linewidth=1.4, gid=f"band_mean:{label}:{name}")
    return colour


def _series_legend(ax, series: Sequence[tuple[str, str]], window: int, what: str) -> None:
    """Below the axes (inside, it would hide the tail classes, which are the point): one entry
    per series, then what each mark means, in grey."""
    handles = [Line2D([], [], color=c, marker="o", linewidth=2.2, label=label) for label, c in series]
    smoothing = f"moving average over {window} classes" if window > 1 else "per-class values joined"
    handles += [
        Line2D([], [], color=STYLE_GREY, marker="o", linestyle="none", alpha=0.6, label=f"{what} of one class"),
        Line2D([], [], color=STYLE_GREY, linewidth=2.2, label=smoothing),
        Line2D([], [], color=STYLE_GREY, linestyle="--", linewidth=1.4, label="mean of the band's classes"),
        Patch(color=COUNT_GREY, label="training images (right axis, log)"),
    ]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False,
              fontsize=9)


def _check_per_class(records: Sequence[dict], path) -> list:
    if not records:
        raise DataError(f"{path}: no records to plot")
    counts = records[0].get("train_counts")
    for r in records:
        acc = r.get("per_class_top1")
        if counts is None or r.get("train_counts") != counts or acc is None or len(acc) != len(counts):
            raise DataError(f"record stage {r.get('stage')} {r.get('method')}: per_class_top1 and train_counts "
                            f"must be lists of one length, train_counts the same in every record")
    return counts


def per_class_accuracy_figure(records: Sequence[dict], window: int | None = None) -> Figure:
    """The figure of ``plot_per_class_accuracy`` (``window``: classes in the moving average,
    default ``smoothing_window(C)``)."""
    counts = _check_per_class(records, "per-class accuracy")
    order = frequency_order(counts)
    sorted_counts = np.asarray(counts)[order]
    thresholds = records[0].get("shot_thresholds") or DEFAULT_THRESHOLDS
    fig, ax = _frequency_axes(sorted_counts, "per-class top-1 accuracy (%)",
                              f"Per-class accuracy — {_run_title(records)}", thresholds, class_ids=order)
    window = window or smoothing_window(len(counts))
    bands = _bands(sorted_counts, thresholds)
    spread = 0.18 if len(counts) <= FEW_CLASSES else 0.0      # side by side, not on top of each other
    series = []
    for i, r in enumerate(records):
        acc = np.array([np.nan if v is None else v for v in r["per_class_top1"]], dtype=float)[order]
        top1 = f", top-1 {r['top1']:.1f}%" if isinstance(r.get("top1"), (int, float)) else ""
        label = f"stage {r.get('stage')} {r.get('method')}{top1}"
        series.append((label, _per_class_series(ax, acc, bands, label, window,
                                                offset=(i - (len(records) - 1) / 2) * spread)))
    ax.set_ylim(-2, 102)
    _series_legend(ax, series, window, "top-1")
    return fig


def plot_per_class_accuracy(records: Sequence[dict], path: str | os.PathLike) -> Path:
    """Per-class top-1 of each record against training frequency (classes in frequency order)."""
    _check_per_class(records, path)
    return _save(per_class_accuracy_figure(records), path)


def plot_weight_norms(classifiers: Mapping[str, Tensor], train_counts: Sequence[int], path: str | os.PathLike,
                      title: str = "", thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> Path:
    """L2 norm of each class's classifier row in frequency order, one series per classifier."""
    if not classifiers:
        raise DataError(f"{path}: no classifier weights to plot")
    order = frequency_order(train_counts)
    sorted_counts = np.asarray(train_counts)[order]
    fig, ax = _frequency_axes(sorted_counts, "classifier weight L2 norm",
                              "Classifier weight norms" + (f" — {title}" if title else ""), thresholds,
                              class_ids=order)
    window, bands = smoothing_window(len(train_counts)), _bands(sorted_counts, thresholds)
    series = []
    for label, weight in classifiers.items():
        _, norms = class_norms(weight, train_counts)
        series.append((label, _per_class_series(ax, norms.astype(float), bands, label, window)))
    ax.set_ylim(bottom=0)
    _series_legend(ax, series, window, "norm")
    return _save(fig, path)


def _clamp_text(clamp) -> str:
    return "no clamp" if clamp is None else f"clamp [{clamp[0]:g}, {clamp[1]:g}]"


def activations_figure(num_classes: int = 10, clamp: tuple[float, float] | None = (-4.0, 10.0),
                       temperature: float = 1.0, gradient: str = "exact", highlight: Sequence[str] = ()) -> Figure:
    """The figure of ``plot_activations``; ``highlight``: the activations the run trained with
    (drawn thicker, marked 'this run')."""
    clamp = None if clamp is None else (float(clamp[0]), float(clamp[1]))
    z_lo, z_hi = -6.0, 10.0
    if clamp is not None:
        z_lo, z_hi = min(z_lo, clamp[0] - 2.0), max(z_hi, clamp[1] + 2.0)
    z = torch.linspace(z_lo, z_hi, 801)
    curves = activation_curves(z, num_classes, clamp, temperature=temperature, gradient=gradient)
    gumbel = f"gumbel ({_clamp_text(clamp)}, T = {temperature:g}{', authors gradient' if gradient == 'authors' else ''})"
    fig = Figure(figsize=(12, 5.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    for name, c in curves.items():
        shown = (gumbel if name == "gumbel" else name) + (" — this run" if name in highlight else "")
        width = 2.6 if name in highlight else 1.6
        line, = left.plot(z, c["score"], label=shown, linewidth=width)
        right.plot(z, c["grad_pos"], color=line.get_color(), linewidth=width, label=f"{name}, positive target")
        right.plot(z, c["grad_neg"], color=line.get_color(), linewidth=width, linestyle="--",
                   label=f"{name}, negative target")
    if clamp is not None:
        free = activation_curves(z, num_classes, None, names=("gumbel",), temperature=temperature,
                                 gradient=gradient)["gumbel"]
        right.plot(z, free["grad_pos"], color="0.3", linestyle=":", label="gumbel without clamp, positive")
        for lo, hi in ((z_lo, clamp[0]), (clamp[1], z_hi)):
            if hi > lo:
                right.axvspan(lo, hi, color="0.9", zorder=0)
        note = f"shaded: outside gumbel's {_clamp_text(clamp)},\nits gradient is 0 there (and at the bounds)"
    else:
        note = "gumbel without clamp (activations.gumbel.clamp=null):\nits gradient is never cut"
    right.text(0.01, 0.98, note, transform=right.transAxes, fontsize=8, va="top")
    left.set(xlabel="logit z", ylabel="score p(z)",
             title=f"Scores (softmax: the other {num_classes - 1} logits at 0)")
    left.grid(color="0.92")
    right.set_yscale("symlog", linthresh=1.0)
    right.set_ylim(top=20.0)   # room for the note above the curves
    right.axhline(0, color="0.5", linewidth=0.8)
    right.set(xlabel="logit z", ylabel="dL/dz (symlog)", title="Loss gradient by autograd")
    left.legend(fontsize=9)
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Activations and their gradients — C = {num_classes} classes; {gumbel}")
    return fig


def plot_activations(path: str | os.PathLike, num_classes: int = 10,
                     clamp: tuple[float, float] | None = (-4.0, 10.0), temperature: float = 1.0,
                     gradient: str = "exact", highlight: Sequence[str] = ()) -> Path:
    """The paper's Figure 3 with the run's settings: scores p(z) and loss gradients dL/dz of
    Sigmoid, Softmax and Gumbel (the run's clamp, temperature, gradient) among C classes."""
    return _save(activations_figure(num_classes, clamp, temperature, gradient, highlight), path)


def _run_settings(folder: RunFolder, records: Sequence[dict]) -> tuple[int | None, dict]:
    """(number of classes, Gumbel options) of the run, from its config.yaml, else its records."""
    num_classes, gumbel = None, {}
    if folder.config.is_file():
        try:
            from omegaconf import OmegaConf
            cfg = OmegaConf.to_container(OmegaConf.load(folder.config), resolve=False)
            num_classes = (cfg.get("task") or {}).get("num_classes")
            gumbel = dict(((cfg.get("activations") or {}).get("gumbel")) or {})
        except Exception as err:   # noqa: BLE001 - a damaged config only costs the run's settings
            log.warning("activations plot: cannot read %s (%s); default settings", folder.config, err)
    if num_classes is None and records:
        num_classes = len(records[0]["train_counts"])
    return num_classes, gumbel


def write_run_plots(run_dir: str | os.PathLike, num_classes: int | None = None,
                    gumbel: Mapping | None = None) -> list[Path]:
    """Write per_class_accuracy.png, weight_norms.png and activations.png into a run folder.

    Returns the paths written.  A missing or unreadable checkpoint only skips its series
    (and weight_norms.png when neither stage has one) with a warning, since a stage-2-only
    run may hold no stage-1 checkpoint.  Detection records are ignored.  The activation
    figure uses ``num_classes`` and the Gumbel options ``gumbel`` (``activations.gumbel``:
    clamp, temperature, gradient) when given, else the run's config.yaml.
    """
    folder = RunFolder(run_dir)
    results = folder.results
    if not results.is_file():
        raise DataError(f"{results}: not found, nothing to plot")
    records = [r for r in read_records(results) if r.get("kind", "classification") == "classification"
               and r.get("per_class_top1") is not None and r.get("train_counts") is not None]
    records.sort(key=lambda r: (r.get("stage") or 0, str(r.get("method"))))
    written = []
    if records:
        written.append(plot_per_class_accuracy(records, folder.plot("per_class_accuracy")))
        classifiers = {}
        for stage in (1, 2):
            ckpt = folder.checkpoint(stage)
            methods = ", ".join(str(r["method"]) for r in records if r.get("stage") == stage) or "?"
            try:
                classifiers[f"stage {stage} ({methods})"] = load_checkpoint(ckpt)["model"][CLASSIFIER_KEY]
            except (CheckpointError, KeyError, TypeError) as err:
                log.warning("weight norms: no stage-%d classifier weights in %s (%s)", stage, ckpt, err)
        if classifiers:
            written.append(plot_weight_norms(classifiers, records[0]["train_counts"], folder.plot("weight_norms"),
                                             _run_title(records),
                                             records[0].get("shot_thresholds") or DEFAULT_THRESHOLDS))
        else:
            log.warning("weight norms: no usable checkpoint in %s, weight_norms.png not written", folder.checkpoints)
    else:
        log.warning("%s: no classification record with per-class accuracy, per-class plots skipped", results)
    found_classes, found_gumbel = _run_settings(folder, records) if num_classes is None or gumbel is None else (None, {})
    options = {**DEFAULT_GUMBEL, **(found_gumbel if gumbel is None else dict(gumbel))}
    used = [name for name in ACTIVATION_NAMES if any(str(r.get("method")) == name for r in records)]
    written.append(plot_activations(folder.plot("activations"), int(num_classes or found_classes or 10),
                                    clamp=options["clamp"], temperature=float(options["temperature"]),
                                    gradient=str(options["gradient"]), highlight=used))
    return written
