"""The run figures are real PNGs, and the numbers behind them are the ones we expect."""
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from lt_bench.checkpoint import save_checkpoint
from lt_bench.errors import DataError
from lt_bench.plots import activation_curves, class_norms, plot_per_class_accuracy, write_run_plots

COUNTS = [500, 300, 150, 101, 100, 60, 20, 19, 10, 5]   # 4 many, 3 medium, 3 few
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def record(stage, method, per_class):
    return {"task": "digits_lt", "imbalance": 100, "model": "resnet8", "stage": stage, "method": method,
            "top1": float(np.nanmean([np.nan if v is None else v for v in per_class])),
            "many": 90.0, "medium": 60.0, "few": 20.0, "per_class_top1": per_class, "train_counts": COUNTS}


@pytest.fixture
def run_dir(tmp_path):
    per_class = [98.0, 95.0, 90.0, 85.0, 70.0, 60.0, 40.0, None, 10.0, 0.0]
    records = [record(1, "softmax", per_class),
               record(2, "gumbel", [v if v is None else min(100.0, v + 10) for v in per_class]),
               {"kind": "detection", "task": "lvis", "method": "gumbel", "AP": 20.0}]
    (tmp_path / "results.json").write_text(json.dumps(records))
    gen = torch.Generator().manual_seed(0)
    for stage in (1, 2):
        save_checkpoint(tmp_path / "checkpoints" / f"stage{stage}.pt",
                        {"model": {"classifier.weight": torch.randn(10, 16, generator=gen),
                                   "classifier.bias": torch.zeros(10)}})
    return tmp_path


def assert_real_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 10_000, (path, len(data))
    with Image.open(path) as img:
        assert img.width > 300 and img.height > 300, img.size
        extrema = img.convert("L").getextrema()
        assert extrema[0] < extrema[1], f"{path.name} is a single colour"


def test_run_plots_are_written(run_dir):
    paths = write_run_plots(run_dir)
    assert [p.name for p in paths] == ["per_class_accuracy.png", "weight_norms.png", "activations.png"]
    for path in paths:
        assert path.parent == run_dir
        assert_real_png(path)
    assert not list(run_dir.glob(".*.tmp"))                  # atomic writes leave nothing behind


def test_missing_checkpoints_skip_weight_norms(run_dir, caplog):
    (run_dir / "checkpoints" / "stage2.pt").unlink()
    assert "weight_norms.png" in [p.name for p in write_run_plots(run_dir)]   # stage 1 alone
    (run_dir / "checkpoints" / "stage1.pt").unlink()
    (run_dir / "weight_norms.png").unlink()
    with caplog.at_level(logging.WARNING, logger="lt_bench.plots"):
        paths = write_run_plots(run_dir)
    assert [p.name for p in paths] == ["per_class_accuracy.png", "activations.png"]
    assert not (run_dir / "weight_norms.png").exists()
    assert "weight_norms.png not written" in caplog.text


def test_missing_results_is_named(tmp_path):
    with pytest.raises(DataError, match="results.json: not found"):
        write_run_plots(tmp_path)


def test_mismatched_per_class_is_named(tmp_path):
    bad = record(1, "softmax", [50.0] * 9)
    with pytest.raises(DataError, match="record stage 1 softmax"):
        plot_per_class_accuracy([bad], tmp_path / "p.png")


def test_class_norms_in_frequency_order():
    counts = [5, 500, 20, 20, 100]
    weight = torch.randn(5, 8)
    sorted_counts, norms = class_norms(weight, counts)
    order = [1, 4, 2, 3, 0]                                  # ties keep class-index order
    assert sorted_counts.tolist() == [500, 100, 20, 20, 5]
    expected = torch.stack([torch.linalg.norm(weight[i]) for i in order]).numpy()
    np.testing.assert_allclose(norms, expected, rtol=1e-6)
    with pytest.raises(DataError, match=r"shape \(5, 8\) does not fit 4 classes"):
        class_norms(weight, counts[:4])


def test_activation_curves_come_from_the_activation_module():
    z = torch.tensor([-5.0, 0.0, 2.0])
    curves = activation_curves(z, num_classes=10)
    gumbel, sigmoid, softmax = curves["gumbel"], curves["sigmoid"], curves["softmax"]
    assert gumbel["grad_pos"][1] == pytest.approx(-1.0)      # -exp(-0)
    assert gumbel["grad_pos"][0] == 0.0                      # clamped at -4: no gradient
    assert gumbel["score"][1] == pytest.approx(np.exp(-1.0))
    assert gumbel["grad_neg"][1] == pytest.approx(1 / np.expm1(1.0), rel=1e-5)
    assert sigmoid["grad_pos"][2] == pytest.approx(torch.sigmoid(torch.tensor(2.0)).item() - 1, rel=1e-5)
    assert softmax["score"][1] == pytest.approx(0.1)         # z = 0 among 10 zero logits
    assert softmax["grad_neg"][1] == pytest.approx(0.1)
    unclamped = activation_curves(z, num_classes=10, clamp=None, names=("gumbel",))["gumbel"]
    assert unclamped["grad_pos"][0] == pytest.approx(-np.exp(5.0), rel=1e-5)
