"""Figures of a classification run: per-class accuracy, classifier norms, activation curves.

The long-tail story of GOL is told by three pictures: accuracy falls from head to tail
classes, softmax gives head classes larger classifier norms (the paper's Figure 1(ii)), and
the Gumbel loss pushes positive logits harder than Sigmoid or Softmax (Figure 3).  Classes
are always ordered by training images, most frequent first, so that head and tail sit at the
same place in every figure.  Figures are drawn on the Agg canvas (no pyplot, no global
state) and written atomically.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
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


def activation_curves(z: Tensor, num_classes: int = 10, clamp: tuple[float, float] | None = (-4.0, 10.0),
                      names: Sequence[str] = ACTIVATION_NAMES) -> dict[str, dict[str, np.ndarray]]:
    """Score and loss gradient of each activation as the logit ``z`` of one class varies.

    Each sample is the logit row [z, 0, ..., 0] of ``num_classes`` classes (softmax needs the
    others; binary activations ignore them).  ``grad_pos`` is d loss / dz when that class is
    the label, ``grad_neg`` when another class is, both by autograd through ``act.loss``.
    """
    if num_classes < 2:
        raise ValueError(f"activation_curves needs num_classes >= 2, got {num_classes}")
    z = torch.as_tensor(z, dtype=torch.float32).reshape(-1, 1)
    others = torch.zeros(len(z), num_classes - 1)
    curves = {}
    for name in names:
        act = build_activation(name, clamp=clamp) if name == "gumbel" else build_activation(name)
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


def _frequency_axes(sorted_counts: np.ndarray, ylabel: str, title: str,
                    thresholds: Sequence[int] = DEFAULT_THRESHOLDS):
    """Figure and axes over classes in frequency order, training counts as grey bars on a log
    twin axis, and the many/medium/few boundaries (the run's ``eval.shot_thresholds``)."""
    fig = Figure(figsize=(11, 5), layout="constrained")
    fig.suptitle(title)
    ax = fig.add_subplot()
    x = np.arange(len(sorted_counts))
    twin = ax.twinx()
    twin.bar(x, np.maximum(sorted_counts, 1), width=1.0, color="0.85", label="training images")
    twin.set_yscale("log")
    twin.set_ylabel("training images (log)")
    ax.set_zorder(twin.get_zorder() + 1)
    ax.patch.set_visible(False)
    groups = shot_groups(list(sorted_counts), *thresholds)
    edges = [0, len(groups["many"]), len(sorted_counts) - len(groups["few"]), len(sorted_counts)]
    ax.set_title(describe(*thresholds), fontsize=8, loc="right", pad=14)
    for (lo, hi), name in zip(zip(edges, edges[1:]), SHOT_GROUPS):
        if 0 < lo < len(sorted_counts):
            ax.axvline(lo - 0.5, color="0.4", linestyle="--", linewidth=1)
        if hi > lo:
            ax.text((lo + hi - 1) / 2, 1.01, name, transform=ax.get_xaxis_transform(),
                    ha="center", va="bottom")
    ax.set_xlim(-0.5, len(sorted_counts) - 0.5)
    ax.set_xlabel("class, by training images (most frequent first)")
    ax.set_ylabel(ylabel)
    return fig, ax


def _legend(ax) -> None:
    """One legend for the series and the training-count bars of the twin axis."""
    handles = [h for a in ax.figure.axes for h in a.get_legend_handles_labels()[0]]
    # below the axes: inside, it would hide the tail classes' points, which are the point
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(len(handles), 4),
              frameon=False, fontsize=9)


def _smooth(values: np.ndarray) -> np.ndarray:
    """Moving average ignoring NaN: hundreds of noisy per-class points become a readable line."""
    window = max(1, len(values) // 25)
    valid = ~np.isnan(values)
    kernel = np.ones(window)
    total = np.convolve(np.where(valid, values, 0.0), kernel, mode="same")
    count = np.convolve(valid.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def plot_per_class_accuracy(records: Sequence[dict], path: str | os.PathLike) -> Path:
    """Per-class top-1 of each record against training frequency (classes in frequency order)."""
    if not records:
        raise DataError(f"{path}: no records to plot")
    counts = records[0].get("train_counts")
    for r in records:
        acc = r.get("per_class_top1")
        if counts is None or r.get("train_counts") != counts or acc is None or len(acc) != len(counts):
            raise DataError(f"record stage {r.get('stage')} {r.get('method')}: per_class_top1 and train_counts "
                            f"must be lists of one length, train_counts the same in every record")
    order = frequency_order(counts)
    fig, ax = _frequency_axes(np.asarray(counts)[order], "per-class top-1 accuracy (%)",
                              f"Per-class accuracy — {_run_title(records)}",
                              records[0].get("shot_thresholds") or DEFAULT_THRESHOLDS)
    x, many = np.arange(len(counts)), len(counts) > 100
    for r in records:
        acc = np.array([np.nan if v is None else v for v in r["per_class_top1"]], dtype=float)[order]
        top1 = f" (top-1 {r['top1']:.1f})" if isinstance(r.get("top1"), (int, float)) else ""
        line, = ax.plot(x, acc, marker=None if many else "o", markersize=4, linewidth=0.6 if many else 1.5,
                        alpha=0.35 if many else 1.0, label=f"stage {r.get('stage')} {r.get('method')}{top1}")
        if many:
            ax.plot(x, _smooth(acc), color=line.get_color(), linewidth=2)
    ax.set_ylim(-2, 102)
    _legend(ax)
    return _save(fig, path)


def plot_weight_norms(classifiers: Mapping[str, Tensor], train_counts: Sequence[int], path: str | os.PathLike,
                      title: str = "", thresholds: Sequence[int] = DEFAULT_THRESHOLDS) -> Path:
    """L2 norm of each class's classifier row in frequency order, one series per classifier."""
    if not classifiers:
        raise DataError(f"{path}: no classifier weights to plot")
    sorted_counts = np.asarray(train_counts)[frequency_order(train_counts)]
    fig, ax = _frequency_axes(sorted_counts, "classifier weight L2 norm",
                              "Classifier weight norms" + (f" — {title}" if title else ""), thresholds)
    for label, weight in classifiers.items():
        _, norms = class_norms(weight, train_counts)
        ax.plot(np.arange(len(norms)), norms, marker="o" if len(norms) <= 100 else None, markersize=4,
                label=label)
    _legend(ax)
    return _save(fig, path)


def plot_activations(path: str | os.PathLike, num_classes: int = 10,
                     clamp: tuple[float, float] | None = (-4.0, 10.0)) -> Path:
    """The paper's Figure 3: scores p(z) and loss gradients dL/dz of Sigmoid, Softmax, Gumbel."""
    z = torch.linspace(-6.0, 10.0, 801)
    curves = activation_curves(z, num_classes, clamp)
    fig = Figure(figsize=(12, 5), layout="constrained")
    left, right = fig.subplots(1, 2)
    for name, c in curves.items():
        line, = left.plot(z, c["score"], label=name)
        right.plot(z, c["grad_pos"], color=line.get_color(), label=f"{name}, positive target")
        right.plot(z, c["grad_neg"], color=line.get_color(), linestyle="--", label=f"{name}, negative target")
    if clamp is not None:
        free = activation_curves(z, num_classes, None, names=("gumbel",))["gumbel"]
        right.plot(z, free["grad_pos"], color="0.3", linestyle=":", label="gumbel without clamp, positive")
        for lo, hi in ((-6.0, clamp[0]), (clamp[1], 10.0)):
            if hi > lo:
                right.axvspan(lo, hi, color="0.9", zorder=0)
        right.text(0.01, 0.98, f"shaded: outside gumbel's clamp {list(clamp)},\nits gradient is 0 there "
                   "(and at the bounds)", transform=right.transAxes, fontsize=8, va="top")
    left.set(xlabel="logit z", ylabel="score p(z)",
             title=f"Scores (softmax: other {num_classes - 1} logits = 0)")
    right.set_yscale("symlog", linthresh=1.0)
    right.set_ylim(top=20.0)   # room for the note above the curves
    right.axhline(0, color="0.5", linewidth=0.8)
    right.set(xlabel="logit z", ylabel="dL/dz (symlog)", title="Loss gradient by autograd")
    left.legend()
    right.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"Activations and their gradients (C = {num_classes})")
    return _save(fig, path)


def write_run_plots(run_dir: str | os.PathLike) -> list[Path]:
    """Write per_class_accuracy.png, weight_norms.png and activations.png into a run folder.

    Returns the paths written.  A missing or unreadable checkpoint only skips its series
    (and weight_norms.png when neither stage has one) with a warning, since a stage-2-only
    run may hold no stage-1 checkpoint.  Detection records are ignored.
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
    written.append(plot_activations(folder.plot("activations")))
    return written
