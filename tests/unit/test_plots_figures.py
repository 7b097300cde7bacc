"""What the figures draw: per-class series readable at 10, 100 and 1,000 classes (the smoothed
line is the moving average its legend names), and the activation curves of the run's own
Gumbel settings and number of classes."""
import json
import re

import numpy as np
import pytest
from omegaconf import OmegaConf

import lt_bench.plots as plots
from lt_bench.plots import (activations_figure, moving_average, per_class_accuracy_figure, plot_per_class_accuracy,
                            smoothing_window, write_run_plots)
from lt_bench.run_folder import RunFolder

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def long_tail_records(num_classes: int, seed: int = 0) -> list[dict]:
    """Two records over ``num_classes`` classes in shuffled label order, one class unseen (None)."""
    rng = np.random.default_rng(seed)
    counts = [max(1, int(500 * 0.01 ** (i / (num_classes - 1)))) for i in range(num_classes)]
    counts = [counts[i] for i in rng.permutation(num_classes)]
    records = []
    for stage, method in ((1, "softmax"), (2, "gumbel")):
        acc = np.clip(100 * np.log1p(counts) / np.log(501) + rng.normal(0, 10, num_classes), 0, 100)
        per_class = [round(float(a), 3) for a in acc]
        per_class[int(np.argmin(counts))] = None
        records.append({"task": "synthetic", "imbalance": 100, "model": "resnet32", "stage": stage,
                        "method": method, "top1": float(np.nanmean(acc)), "per_class_top1": per_class,
                        "train_counts": counts})
    return records


def independent_moving_average(values, window):
    half = window // 2
    out = []
    for i in range(len(values)):
        part = np.asarray(values[max(0, i - half):i + half + 1], dtype=float)
        out.append(np.nan if np.all(np.isnan(part)) else np.nanmean(part))
    return np.array(out)


def legend_window(fig) -> int:
    texts = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    found = [int(m.group(1)) for t in texts if (m := re.fullmatch(r"moving average over (\d+) classes", t))]
    assert len(found) == 1, texts
    return found[0]


@pytest.mark.parametrize("num_classes", [10, 100, 1000])
def test_smoothed_line_is_the_moving_average_the_legend_names(num_classes, tmp_path):
    records = long_tail_records(num_classes)
    fig = per_class_accuracy_figure(records)
    window = legend_window(fig)
    assert window == smoothing_window(num_classes) and window % 2 == 1
    order = np.argsort(-np.asarray(records[0]["train_counts"]), kind="stable")
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    for r in records:
        label = f"stage {r['stage']} {r['method']}, top-1 {r['top1']:.1f}%"
        acc = np.array([np.nan if v is None else v for v in r["per_class_top1"]], dtype=float)[order]
        smoothed = lines[f"smoothed:{label}"]
        np.testing.assert_array_equal(smoothed.get_xdata(), np.arange(num_classes))
        np.testing.assert_allclose(smoothed.get_ydata(), independent_moving_average(acc, window), rtol=1e-12)
        points = lines[f"per_class:{label}"].get_ydata()          # every class drawn, in frequency order
        np.testing.assert_array_equal(np.asarray(points, dtype=float), acc)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any(t.startswith("many\n") for t in texts) and any(t.startswith("few\n") for t in texts)
    path = plot_per_class_accuracy(records, tmp_path / f"per_class_{num_classes}.png")
    assert path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE


def test_smoothing_window_grows_with_the_classes():
    windows = [smoothing_window(c) for c in (10, 100, 1000)]
    assert windows == sorted(windows) and len(set(windows)) == 3
    assert smoothing_window(2) == 1


def test_moving_average_cuts_the_window_at_the_ends_and_skips_nan():
    values = [0.0, 10.0, np.nan, 30.0, 40.0]
    np.testing.assert_allclose(moving_average(values, 3), [5.0, 5.0, 20.0, 35.0, 35.0])
    assert np.isnan(moving_average([np.nan, np.nan], 1)).all()


def test_activations_figure_names_the_run_settings():
    fig = activations_figure(num_classes=100, clamp=None)
    title = fig._suptitle.get_text()
    assert "C = 100" in title and "no clamp" in title and "[-4" not in title
    assert "other 99 logits" in fig.axes[0].get_title()
    assert not any("without clamp" in t.get_text() for t in fig.axes[1].get_legend().get_texts())
    clamped = activations_figure(num_classes=10, clamp=(-3.0, 8.0), temperature=2.0)._suptitle.get_text()
    assert "clamp [-3, 8]" in clamped and "T = 2" in clamped and "C = 10" in clamped


@pytest.fixture
def captured(monkeypatch):
    """The figures write_run_plots saves, by file name."""
    figures = {}
    save = plots._save

    def keep(fig, path):
        figures[str(path).rsplit("/", 1)[-1]] = fig
        return save(fig, path)
    monkeypatch.setattr(plots, "_save", keep)
    return figures


def test_run_plots_read_the_run_config(tmp_path, captured):
    """A run folder's config.yaml decides the activation figure: clamp=null, 100 classes."""
    records = long_tail_records(100)
    (tmp_path / "results.json").write_text(json.dumps(records))
    OmegaConf.save(OmegaConf.create({"task": {"num_classes": 100},
                                     "activations": {"gumbel": {"clamp": None, "temperature": 1.0}}}),
                   RunFolder(tmp_path).config)
    write_run_plots(tmp_path)
    title = captured["activations.png"]._suptitle.get_text()
    assert "C = 100" in title and "no clamp" in title
    assert "moving average over 11 classes" in [t.get_text() for t in
                                                captured["per_class_accuracy.png"].axes[0].get_legend().get_texts()]


def test_pipeline_passes_its_own_activation_settings(make_cfg, tmp_path, captured):
    from lt_bench.pipeline import _write_plots
    cfg = make_cfg("activations.gumbel.clamp=null", "activations.gumbel.temperature=0.5")
    folder = RunFolder(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps(long_tail_records(10)))   # no config.yaml here
    paths = _write_plots(folder, cfg)
    assert [p.name for p in paths] == ["per_class_accuracy.png", "activations.png"]   # no checkpoints
    title = captured["activations.png"]._suptitle.get_text()
    assert f"C = {cfg.task.num_classes}" in title and "no clamp" in title and "T = 0.5" in title
    assert "this run" in " ".join(t.get_text() for t in captured["activations.png"].axes[0].get_legend().get_texts())
