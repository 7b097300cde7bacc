"""Detection losses on the shared activation module: values, weights, gradients (torch only)."""
import csv
import json
import math

import pytest
import torch
import torch.nn.functional as F

from lt_bench.detection.categories import load_category_stats, save_category_stats
from lt_bench.detection.losses import ActivationCrossEntropyLoss, DropLoss, EQLLoss
from lt_bench.errors import ConfigError

from tests.helpers.lvis import SHARED_LVIS, needs_shared


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


def authors_droploss(logits, labels, freq, lambda_):
    """DropLoss as the GOL authors' code computes it (sigmoid), restated: the drop weight of each
    (proposal, class) from one uniform draw per element, torch.rand_like on [N, C]."""
    n, c = logits.shape
    target = torch.zeros(n, c + 1)
    target[torch.arange(n), labels] = 1
    target = target[:, :c]
    tail = (torch.tensor(freq) < lambda_).float().view(1, c).expand(n, c)
    fg = (labels != c).float().view(n, 1).expand(n, c)
    ratio = torch.mean((torch.tensor(freq)[labels[labels != c]] < lambda_).float())   # NaN without foreground
    random = torch.rand_like(1 - fg) * (1 - fg)
    random = torch.where(random > ratio, torch.ones_like(random), torch.zeros_like(random))
    drop_w = 1 - (random + fg) * tail * (1 - target)
    return torch.sum(F.binary_cross_entropy_with_logits(logits, target, reduction="none") * drop_w) / n


@pytest.mark.parametrize("labels", [
    [0, 1, 1, 3, 4, 4, 4, 4],          # foreground tail share 1/4
    [0, 2, 2, 4, 4, 4, 4, 4, 4, 4],    # 1: every background tail negative is kept
    [1, 3, 4, 4, 4, 4],                # 0: every background tail negative is dropped
    [4, 4, 4, 4, 4],                   # no foreground: the authors' NaN ratio keeps every negative
])
def test_droploss_matches_the_authors_loss_draw_for_draw(labels):
    loss = DropLoss("sigmoid", num_classes=4, image_frequency=FREQ)
    labels = torch.tensor(labels)
    logits = torch.randn(len(labels), 4) * 2
    torch.manual_seed(11)
    ours = loss(logits, labels)
    torch.manual_seed(11)
    theirs = authors_droploss(logits, labels, FREQ, 0.0011)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_droploss_drops_each_background_tail_negative_by_its_own_draw():
    loss = DropLoss("gumbel", num_classes=4, image_frequency=FREQ)
    labels = torch.tensor([0, 1, 1, 3] + [4] * 12)          # ratio 1/4
    foreground = labels < 4
    torch.manual_seed(5)
    dropped = loss.dropped_negatives(foreground, labels)
    torch.manual_seed(5)
    draw = torch.rand(len(labels), 4)
    tail = torch.tensor([True, False, True, False])
    expected = (foreground[:, None] | (draw > 0.25)) & tail[None, :]
    assert torch.equal(dropped, expected)
    background = dropped[4:][:, [0, 2]]
    assert (background[:, 0] != background[:, 1]).any()    # one proposal keeps one tail negative, drops another
    logits = torch.randn(len(labels), 4)                     # the same pattern through the loss
    targets = F.one_hot(labels, 5)[:, :4].float()
    kept = ~(expected & (targets == 0))
    torch.manual_seed(5)
    value = loss(logits, labels)
    assert value.item() == pytest.approx((loss.activation.elementwise_loss(logits, targets) * kept).sum(1).mean().item(),
                                         rel=1e-6)


def test_droploss_keep_rate_is_the_ratio_per_element_on_a_large_batch():
    loss = DropLoss("sigmoid", num_classes=4, image_frequency=FREQ)
    labels = torch.cat([torch.tensor([0, 2, 1, 3, 1]), torch.full((20000,), 4)])   # ratio 2/5
    logits = torch.zeros(len(labels), 4, requires_grad=True)
    torch.manual_seed(0)
    loss(logits, labels).backward()
    kept = logits.grad[5:][:, [0, 2]] != 0
    assert kept.float().mean().item() == pytest.approx(0.4, abs=0.01)
    # independent draws: both tail negatives of a proposal kept about 0.4^2 of the time, not 0.4
    assert (kept[:, 0] & kept[:, 1]).float().mean().item() == pytest.approx(0.16, abs=0.01)
    assert torch.all(logits.grad[5:, 1] != 0)        # non-tail negatives always kept


def test_droploss_without_foreground_keeps_every_negative():
    loss = DropLoss("gumbel", num_classes=4, image_frequency=FREQ)
    logits, labels = torch.randn(6, 4), torch.full((6,), 4)
    full = EQLLoss("gumbel", num_classes=4, image_frequency=[0.5] * 4)   # no tail class: nothing dropped
    assert loss(logits, labels).item() == pytest.approx(full(logits, labels).item(), rel=1e-6)


def test_tail_losses_need_a_binary_activation_and_frequencies():
    with pytest.raises(ConfigError, match="needs a binary activation"):
        DropLoss("softmax", num_classes=4, image_frequency=FREQ)
    with pytest.raises(ConfigError, match="needs frequency_file"):
        EQLLoss("gumbel", num_classes=4)
    with pytest.raises(ConfigError, match="4 category frequencies for num_classes=5"):
        EQLLoss("gumbel", num_classes=5, image_frequency=FREQ)


@needs_shared
def test_lvis_v1_frequencies_over_annotated_images_give_the_authors_815_tail_categories():
    """The authors' frequency: image_count / 99,388 (LVIS v1 train images with annotations)."""
    stats = load_category_stats(SHARED_LVIS / "lvis_v1_categories_with_counts.json", num_images=99_388)
    assert len(stats.ids) == 1203 and stats.group_counts() == {"r": 337, "c": 461, "f": 405}
    with open(SHARED_LVIS / "lvis_v1_categories_with_counts.csv") as f:
        rows = list(csv.DictReader(f))
    tail = {r["name"] for r in rows if int(r["image_count"]) / 99_388 < 0.0011}
    assert len(tail) == 815 and "celery" not in tail and "oar" not in tail
    assert {r["name"] for r in rows if int(r["image_count"]) / 100_170 < 0.0011} - tail == {"celery", "oar"}
    loss = DropLoss("gumbel", num_classes=1203, frequency_file=str(SHARED_LVIS / "lvis_v1_categories_with_counts.json"),
                    num_images=99_388)
    assert int(loss.tail.sum()) == 815
    assert {stats.names[i] for i in torch.nonzero(loss.tail).flatten().tolist()} == tail
    with pytest.raises(ConfigError, match="give the number of training images with annotations"):
        load_category_stats(SHARED_LVIS / "lvis_v1_categories_with_counts.json")


def test_annotation_file_frequencies_count_only_images_with_annotations(tmp_path):
    data = {"images": [{"id": i} for i in range(1, 6)],           # images 4 and 5 hold no annotation
            "annotations": [{"id": 1, "image_id": 1, "category_id": 7}, {"id": 2, "image_id": 2, "category_id": 3},
                            {"id": 3, "image_id": 3, "category_id": 7}],
            "categories": [{"id": 7, "name": "b", "image_count": 2, "frequency": "r"},
                           {"id": 3, "name": "a", "image_count": 1, "frequency": "r"}]}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(data))
    stats = load_category_stats(path)
    assert stats.num_images == 3
    assert list(stats.ids) == [7, 3] and stats.names == ("b", "a")   # the json's order: mmdet's labels
    assert stats.image_frequency.tolist() == pytest.approx([2 / 3, 1 / 3])
    summary = save_category_stats(stats, tmp_path / "summary.json")
    again = load_category_stats(summary)
    assert list(again.ids) == [7, 3] and again.num_images == 3 and again.names == ("b", "a")


@needs_shared
def test_categories_from_a_full_annotation_file():
    stats = load_category_stats(SHARED_LVIS / "lvis_v0.5_val_100.json")
    data = json.loads((SHARED_LVIS / "lvis_v0.5_val_100.json").read_text())
    assert len(stats.ids) == 1230 and stats.num_images == 93     # of its 100 images, 93 hold annotations
    assert len(data["images"]) == 100 and len({a["image_id"] for a in data["annotations"]}) == 93
    assert list(stats.ids) == [c["id"] for c in data["categories"]]


def test_activation_options_reach_the_detection_losses():
    logits, labels = torch.randn(4, 3) * 3, torch.tensor([0, 1, 2, 2])
    options = {"clamp": None, "temperature": 2.0}
    loss = ActivationCrossEntropyLoss("gumbel", num_classes=2, activation_options=options)
    z = logits / 2.0
    p = torch.exp(-torch.exp(-z))
    target = F.one_hot(labels, 3).float()
    expected = -(target * torch.log(p) + (1 - target) * torch.log1p(-p)).sum(1).mean()
    assert loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(loss.get_activation(logits), p)
    eql = EQLLoss("gumbel", num_classes=4, image_frequency=FREQ, activation_options={"clamp": [-1.0, 1.0]})
    big = torch.full((1, 4), 5.0, requires_grad=True)
    eql(big, torch.tensor([4])).backward()
    assert torch.all(big.grad == 0)          # clamped at 1: the clamp reached the loss


def test_softmax_scoring_of_a_binary_activation():
    logits = torch.randn(5, 4)
    sigmoid = ActivationCrossEntropyLoss("sigmoid", num_classes=3)
    softmax_scored = ActivationCrossEntropyLoss("sigmoid", num_classes=3, softmax_scores=True)
    torch.testing.assert_close(sigmoid.get_activation(logits), torch.sigmoid(logits))
    torch.testing.assert_close(softmax_scored.get_activation(logits), torch.softmax(logits, dim=1))
    assert softmax_scored(logits, torch.tensor([0, 1, 2, 3, 3])).item() == pytest.approx(
        sigmoid(logits, torch.tensor([0, 1, 2, 3, 3])).item())      # the training loss is the same
