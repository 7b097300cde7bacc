"""Detection losses on the shared activation module: values, weights, gradients (torch only)."""
import csv
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lt_bench.detection.categories import load_category_stats
from lt_bench.detection.losses import ActivationCrossEntropyLoss, DropLoss, EQLLoss
from lt_bench.errors import ConfigError

SHARED_LVIS = Path(__file__).resolve().parents[2] / "shared" / "data" / "lvis"
needs_shared = pytest.mark.skipif(not SHARED_LVIS.is_dir(), reason="../shared/data/lvis not present")


def gumbel_bce(z: float, y: float) -> float:
    """Closed form, clamp [-4, 10]: -y log p - (1 - y) log(1 - p), p = exp(-exp(-z))."""
    z = min(max(z, -4.0), 10.0)
    p = math.exp(-math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_activation_ce_gumbel_matches_closed_form():
    loss = ActivationCrossEntropyLoss("gumbel", num_classes=2)
    logits = torch.tensor([[0.5, -1.0, 2.0], [3.0, 0.0, -2.0]])   # 2 classes + background
    labels = torch.tensor([0, 2])                                   # a foreground and a background proposal
    expected = sum(gumbel_bce(logits[i, j].item(), float(labels[i] == j)) for i in range(2) for j in range(3)) / 2
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    assert loss.get_cls_channels(2) == 3
    torch.testing.assert_close(loss.get_activation(logits), torch.exp(-torch.exp(-logits)))


def test_activation_ce_weights_avg_factor_and_softmax():
    logits, labels = torch.randn(6, 5), torch.tensor([0, 1, 4, 4, 2, 3])
    weight = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    softmax = ActivationCrossEntropyLoss("softmax", num_classes=4)
    expected = (F.cross_entropy(logits, labels, reduction="none") * weight).sum() / 5
    assert softmax(logits, labels, weight, avg_factor=5).item() == pytest.approx(expected.item(), rel=1e-6)
    sigmoid = ActivationCrossEntropyLoss("sigmoid", num_classes=4, loss_weight=2.0)
    per_row = F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, 5).float(), reduction="none").sum(1)
    assert sigmoid(logits, labels).item() == pytest.approx(2 * per_row.mean().item(), rel=1e-6)
    assert sigmoid(logits, labels, reduction_override="none").shape == (6,)


def test_accuracy_counts_foreground_only():
    loss = ActivationCrossEntropyLoss("gumbel", num_classes=3)
    logits = torch.tensor([[5.0, 0, 0, 9.0], [0, 5.0, 0, 0], [0, 0, 0, 9.0], [5.0, 0, 0, 0]])
    labels = torch.tensor([0, 2, 3, 0])          # row 2 is background, row 1 is wrong
    assert loss.get_accuracy(logits, labels)["acc_classes"].item() == pytest.approx(200 / 3)


FREQ = [0.0005, 0.01, 0.0002, 0.5]               # tail (< 0.0011): classes 0 and 2


def manual_tail_loss(logits, labels, drop_rows_bg):
    """Sum over kept terms / rows, written with loops: foreground rows drop tail negatives;
    background rows listed in drop_rows_bg drop them too."""
    n, c = logits.shape
    total = 0.0
    for i in range(n):
        fg = labels[i] < c
        for j in range(c):
            y = float(fg and labels[i] == j)
            tail_negative = FREQ[j] < 0.0011 and y == 0
            if tail_negative and (fg or i in drop_rows_bg):
                continue
            total += gumbel_bce(logits[i, j].item(), y)
    return total / n


def test_eql_drops_tail_negatives_of_foreground_proposals_only():
    loss = EQLLoss("gumbel", num_classes=4, image_frequency=FREQ)
    logits = torch.randn(5, 4) * 2
    labels = torch.tensor([1, 0, 4, 3, 4])       # 4 = background
    assert loss(logits, labels).item() == pytest.approx(manual_tail_loss(logits, labels, set()), rel=1e-6)
    assert loss.get_cls_channels(4) == 4 and loss.get_activation(logits).shape == (5, 5)
    assert torch.all(loss.get_activation(logits)[:, -1] == 0)


def test_eql_dropped_terms_get_no_gradient():
    loss = EQLLoss("sigmoid", num_classes=4, image_frequency=FREQ)
    logits = torch.randn(2, 4, requires_grad=True)
    loss(logits, torch.tensor([1, 4])).backward()
    assert logits.grad[0, 0] == 0 and logits.grad[0, 2] == 0            # foreground row, tail classes
    assert logits.grad[0, 1] != 0 and torch.all(logits.grad[1] != 0)    # positive; background row


def test_droploss_background_rows_follow_the_tail_ratio():
    loss = DropLoss("gumbel", num_classes=4, image_frequency=FREQ)
    logits = torch.randn(8, 4)
    labels = torch.tensor([0, 1, 1, 3, 4, 4, 4, 4])   # foreground tail share: 1/4
    torch.manual_seed(3)
    value = loss(logits, labels)
    torch.manual_seed(3)
    kept = torch.rand(8) <= 0.25                     # the same draw, made by hand
    dropped_bg = {i for i in range(4, 8) if not kept[i]}
    assert value.item() == pytest.approx(manual_tail_loss(logits, labels, dropped_bg), rel=1e-6)


def test_droploss_keep_rate_is_the_ratio_on_a_large_batch():
    loss = DropLoss("sigmoid", num_classes=4, image_frequency=FREQ)
    labels = torch.cat([torch.tensor([0, 2, 1, 3, 1]), torch.full((20000,), 4)])   # ratio 2/5
    logits = torch.zeros(len(labels), 4, requires_grad=True)
    loss(logits, labels).backward()
    kept = (logits.grad[5:, 0] != 0).float().mean().item()
    assert kept == pytest.approx(0.4, abs=0.015)
    assert torch.all(logits.grad[5:, 1] != 0)        # non-tail negatives always kept


def test_tail_losses_need_a_binary_activation_and_frequencies():
    with pytest.raises(ConfigError, match="needs a binary activation"):
        DropLoss("softmax", num_classes=4, image_frequency=FREQ)
    with pytest.raises(ConfigError, match="needs frequency_file"):
        EQLLoss("gumbel", num_classes=4)
    with pytest.raises(ConfigError, match="4 category frequencies for num_classes=5"):
        EQLLoss("gumbel", num_classes=5, image_frequency=FREQ)


@needs_shared
def test_lvis_v1_category_statistics_and_tail_set():
    stats = load_category_stats(SHARED_LVIS / "lvis_v1_categories_with_counts.json", num_images=100_170)
    assert len(stats.ids) == 1203 and stats.group_counts() == {"r": 337, "c": 461, "f": 405}
    with open(SHARED_LVIS / "lvis_v1_categories_with_counts.csv") as f:
        counts = {int(r["id"]): int(r["image_count"]) for r in csv.DictReader(f)}
    expected_tail = sum(1 for n in counts.values() if n / 100_170 < 0.0011)
    loss = DropLoss("gumbel", num_classes=1203, frequency_file=str(SHARED_LVIS / "lvis_v1_categories_with_counts.json"),
                    num_images=100_170)
    assert int(loss.tail.sum()) == expected_tail
    with pytest.raises(ConfigError, match="give the number of training images"):
        load_category_stats(SHARED_LVIS / "lvis_v1_categories_with_counts.json")


@needs_shared
def test_categories_from_a_full_annotation_file():
    stats = load_category_stats(SHARED_LVIS / "lvis_v0.5_val_100.json")
    assert len(stats.ids) == 1230 and stats.num_images == 100
    assert list(stats.ids) == sorted(stats.ids)
