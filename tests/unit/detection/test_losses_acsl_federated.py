"""ACSL and the federated loss (GOL's Table 6, "Gumbel with other losses"): values against
hand-computed expectations, kept terms, gradients, the federated class draw (torch only; the
mmdet head test at the end needs the detection extra)."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lt_bench.detection.losses import ACSLLoss, FederatedLoss
from lt_bench.errors import ConfigError
from lt_bench.registries import DETECTION_LOSSES

from tests.helpers.lvis import SHARED_LVIS, lvis_overrides, needs_shared


def bce(p, y):
    """Elementwise -y log p - (1 - y) log(1 - p), numpy float64."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def gumbel(z):
    return np.exp(-np.exp(-np.asarray(z, dtype=np.float64)))


def one_hot(labels, c):
    """[N, C] targets; label c (background) is an all-zero row."""
    return np.eye(c + 1)[labels][:, :c]


# ----------------------------------------------------------------------------- ACSL

# 3 proposals x 4 classes; label 4 = background.  xi = 0.7: sigmoid(z) >= 0.7 <=> z >= log(7/3) = 0.847
SIG_LOGITS = [[2.0, -1.0, 0.5, 1.5],      # label 1; p = .881 .269 .622 .818
              [-2.0, 1.2, 3.0, -0.5],     # label 3; p = .119 .769 .953 .378
              [0.3, -3.0, 2.5, 0.0]]      # background; p = .574 .047 .924 .500
SIG_LABELS = [1, 3, 4]
SIG_KEPT = [[1, 1, 0, 1],                 # positive 1 (p .269 < xi: kept anyway); class 2 (.622) dropped
            [0, 1, 1, 1],                 # class 0 (.119) dropped; positive 3 (.378) kept
            [1, 1, 1, 1]]                 # background: every negative, even p = .047

# Gumbel: exp(-exp(-z)) >= 0.7 <=> z >= -log(-log 0.7) = 1.031 (inside the loss's [-4, 10] clamp)
GUM_LOGITS = [[0.5, 1.5, -1.0, 2.0],      # label 0; p = .545 .800 .066 .873
              [1.2, 0.8, -0.5, 0.9],      # label 2; p = .740 .638 .192 .666
              [3.0, -2.0, 0.0, 1.0]]      # background
GUM_LABELS = [0, 2, 4]
GUM_KEPT = [[1, 1, 0, 1],
            [1, 0, 1, 0],
            [1, 1, 1, 1]]


def test_acsl_sigmoid_keeps_confident_negatives_by_hand():
    loss = ACSLLoss("sigmoid", num_classes=4)
    assert loss.score_thr == 0.7
    logits, labels = torch.tensor(SIG_LOGITS), torch.tensor(SIG_LABELS)
    terms = bce(sigmoid(SIG_LOGITS), one_hot(SIG_LABELS, 4)) * np.array(SIG_KEPT)
    assert loss(logits, labels).item() == pytest.approx(terms.sum() / 3, rel=1e-6)
    assert loss(logits, labels, reduction_override="none").numpy() == pytest.approx(terms.sum(1), rel=1e-6)
    assert loss.get_cls_channels(4) == 4
    scores = loss.get_activation(logits)
    assert scores.shape == (3, 5) and torch.all(scores[:, -1] == 0)
    torch.testing.assert_close(scores[:, :4], torch.sigmoid(logits))


def test_acsl_gumbel_thresholds_the_gumbel_probability_by_hand():
    loss = ACSLLoss("gumbel", num_classes=4)
    logits, labels = torch.tensor(GUM_LOGITS), torch.tensor(GUM_LABELS)
    terms = bce(gumbel(GUM_LOGITS), one_hot(GUM_LABELS, 4)) * np.array(GUM_KEPT)
    assert loss(logits, labels).item() == pytest.approx(terms.sum() / 3, rel=1e-5)
    # with sigmoid's probability the same logits keep other negatives (sigmoid(0.9) = .711 >= xi)
    assert sigmoid(0.9) >= 0.7 > gumbel(0.9)


def test_acsl_gumbel_uses_the_activations_own_probability():
    """Temperature 2: p = exp(-exp(-z / 2)); z = 1.5 gives .624 < xi (kept at T = 1: .800)."""
    loss = ACSLLoss("gumbel", num_classes=4, activation_options={"temperature": 2.0})
    logits = torch.tensor([[0.0, 1.5, 2.5, -1.0]], requires_grad=True)   # label 0; p_T2 = .368 .624 .751 .197
    loss(logits, torch.tensor([0])).backward()
    assert gumbel(2.5 / 2) >= 0.7 > gumbel(1.5 / 2)
    assert logits.grad[0, 1] == 0 and logits.grad[0, 3] == 0
    assert logits.grad[0, 0] != 0 and logits.grad[0, 2] != 0


def test_acsl_dropped_terms_get_zero_gradient_and_kept_ones_plain_bce_gradient():
    loss = ACSLLoss("sigmoid", num_classes=4)
    logits = torch.tensor(SIG_LOGITS, requires_grad=True)
    loss(logits, torch.tensor(SIG_LABELS)).backward()
    kept = np.array(SIG_KEPT)
    # no gradient through the (detached) weights: a kept term's gradient is BCE's, (p - y) / N
    expected = (sigmoid(SIG_LOGITS) - one_hot(SIG_LABELS, 4)) * kept / 3
    assert logits.grad.numpy() == pytest.approx(expected, abs=1e-7)
    assert np.all((logits.grad.numpy() == 0) == (kept == 0))
    assert torch.all(logits.grad[2] != 0)          # the background proposal: every negative pushed down


def test_acsl_gumbel_gradient_pattern():
    loss = ACSLLoss("gumbel", num_classes=4)
    logits = torch.tensor(GUM_LOGITS, requires_grad=True)
    loss(logits, torch.tensor(GUM_LABELS)).backward()
    assert np.all((logits.grad.numpy() == 0) == (np.array(GUM_KEPT) == 0))


def test_acsl_background_proposals_keep_every_negative_even_unconfident_ones():
    loss = ACSLLoss("gumbel", num_classes=4)
    logits = torch.full((5, 4), -0.5, requires_grad=True)   # p = exp(-e^0.5) = .192, below xi
    labels = torch.full((5,), 4)
    value = loss(logits, labels)
    expected = bce(gumbel(-0.5), 0.0) * 4          # 4 negatives per proposal, all kept
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()
    assert torch.all(logits.grad > 0)
    fg = loss(logits.detach()[:1], torch.tensor([1])).item()  # a foreground row: its positive term only
    assert fg == pytest.approx(bce(gumbel(-0.5), 1.0), rel=1e-5)


def test_acsl_weights_avg_factor_and_options():
    loss = ACSLLoss("sigmoid", num_classes=4, loss_weight=2.0, score_thr=0.5)
    logits, labels = torch.tensor(SIG_LOGITS), torch.tensor(SIG_LABELS)
    kept = sigmoid(SIG_LOGITS) >= 0.5                         # xi = 0.5 on foreground rows
    kept[2] = True
    kept[np.arange(2), SIG_LABELS[:2]] = True
    terms = (bce(sigmoid(SIG_LOGITS), one_hot(SIG_LABELS, 4)) * kept).sum(1)
    weight = torch.tensor([1.0, 0.0, 1.0])
    assert loss(logits, labels, weight, avg_factor=2).item() == pytest.approx(
        2.0 * (terms[0] + terms[2]) / 2, rel=1e-6)
    with pytest.raises(ConfigError, match="score_thr"):
        ACSLLoss("gumbel", num_classes=4, score_thr=1.0)
    with pytest.raises(ConfigError, match="needs a binary activation"):
        ACSLLoss("softmax", num_classes=4)


# ----------------------------------------------------------------------------- Federated

def detectron2_fed_classes(gt_classes, num_fed_loss_classes, num_classes, weight):
    """detectron2's get_fed_loss_classes (fast_rcnn.py), restated: the classes of the labels
    (background included) and a multinomial draw without replacement on the C + 1 weights."""
    unique = torch.unique(gt_classes)
    prob = torch.ones(num_classes + 1)
    prob[-1] = 0
    if len(unique) < num_fed_loss_classes:
        prob[:num_classes] = weight.float().clone()
        prob[unique] = 0
        drawn = torch.multinomial(prob, num_fed_loss_classes - len(unique), replacement=False)
        unique = torch.cat([unique, drawn])
    mask = torch.zeros(num_classes + 1)
    mask[unique] = 1
    return mask[:num_classes].bool()


def counts(c, seed=0):
    return np.random.default_rng(seed).integers(1, 5000, size=c).astype(float)


def test_federated_set_holds_the_positives_and_detectron2s_number_of_classes():
    c = 300
    loss = FederatedLoss("sigmoid", num_classes=c, image_count=counts(c))
    assert loss.num_sampled_classes == 50 and loss.freq_weight_power == 0.5
    torch.manual_seed(0)
    positives = [3, 17, 17, 250, 299]
    with_background = torch.tensor(positives + [c] * 20)
    s = loss.federated_classes(with_background)
    assert s[[3, 17, 250, 299]].all()
    assert int(s.sum()) == 49         # the background label counts among detectron2's 50
    s = loss.federated_classes(torch.tensor(positives))
    assert s[[3, 17, 250, 299]].all() and int(s.sum()) == 50
    many = torch.tensor(list(range(0, 120, 2)) + [c] * 5)      # 60 positive classes > 50: no draw
    state = torch.get_rng_state()
    s = loss.federated_classes(many)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(torch.nonzero(s).flatten(), torch.arange(0, 120, 2))
    small = FederatedLoss("gumbel", num_classes=30, image_count=counts(30))  # C <= 49: every class
    assert small.federated_classes(torch.tensor([2, 30, 30])).all()
    assert torch.equal(torch.get_rng_state(), state)              # ... and nothing drawn


@pytest.mark.parametrize("labels", [
    [5, 5, 9, 200, 200, 200],                  # background present: 50 - 3 labels drawn
    [5, 9, 120],                               # no background
    [200] * 8,                                 # background only
])
def test_federated_draw_is_detectron2s_draw_for_a_seed(labels):
    c = 200
    loss = FederatedLoss("sigmoid", num_classes=c, image_count=counts(c, 1))
    weight = torch.tensor(counts(c, 1)) ** 0.5
    for seed in range(5):
        torch.manual_seed(seed)
        ours = loss.federated_classes(torch.tensor(labels))
        torch.manual_seed(seed)
        theirs = detectron2_fed_classes(torch.tensor(labels), 50, c, weight)
        assert torch.equal(ours, theirs)


def test_federated_negatives_are_drawn_by_image_count_to_the_power_half():
    """C = 3, a background-only batch, 3 labels in all: 2 classes drawn without replacement by
    weights sqrt([1, 4, 25]) = [1, 2, 5] (p = 1/8, 2/8, 5/8).  The excluded class is i with
    probability sum over the two orders of the other two: p_j p_k / (1 - p_j) + p_k p_j / (1 - p_k)."""
    loss = FederatedLoss("sigmoid", num_classes=3, num_sampled_classes=3, image_count=[1, 4, 25])
    p = np.array([1, 2, 5]) / 8
    excluded = np.array([p[j] * p[k] / (1 - p[j]) + p[k] * p[j] / (1 - p[k])
                         for j, k in ((1, 2), (0, 2), (0, 1))])
    assert excluded == pytest.approx([0.625, 0.2976, 0.0774], abs=1e-4) and excluded.sum() == pytest.approx(1)
    torch.manual_seed(0)
    draws = 4000
    labels = torch.full((4,), 3)
    sets = torch.stack([loss.federated_classes(labels) for _ in range(draws)])
    assert torch.all(sets.sum(1) == 2)
    observed = (~sets).sum(0).numpy()               # how often each class was left out
    chi2 = (((observed - draws * excluded) ** 2) / (draws * excluded)).sum()
    assert chi2 < 13.8                              # chi-square, 2 degrees of freedom, p = 0.001
    linear = np.array([1, 4, 25]) / 30              # count^1 would leave class 0 out 3/4 of the time
    wrong = np.array([linear[j] * linear[k] / (1 - linear[j]) + linear[k] * linear[j] / (1 - linear[k])
                      for j, k in ((1, 2), (0, 2), (0, 1))])
    assert (((observed - draws * wrong) ** 2) / (draws * wrong)).sum() > 100


@pytest.mark.parametrize("activation,prob", [("sigmoid", sigmoid), ("gumbel", gumbel)])
def test_federated_loss_is_the_bce_over_the_drawn_classes(activation, prob):
    c = 80
    loss = FederatedLoss(activation, num_classes=c, image_count=counts(c, 2))
    labels = torch.tensor([4, 4, 60, 7, c, c, c, c, c, c])
    logits = (torch.randn(len(labels), c, generator=torch.Generator().manual_seed(3)) * 2).clamp(-3.9, 9.9)
    logits.requires_grad_(True)
    torch.manual_seed(7)
    s = loss.federated_classes(labels).numpy()
    assert s.sum() == 49 and s[[4, 60, 7]].all()     # 3 positives + 50 - 4 labels drawn (background counts)
    torch.manual_seed(7)
    value = loss(logits, labels)
    value.backward()
    z = logits.detach().numpy()
    expected = (bce(prob(z), one_hot(labels.numpy(), c)) * s[None, :]).sum() / len(labels)
    assert value.item() == pytest.approx(expected, rel=1e-5)
    grad = logits.grad.numpy()
    assert np.all(grad[:, ~s] == 0) and np.all(grad[:, s] != 0)


def test_federated_with_few_classes_is_plain_bce_over_all_classes():
    loss = FederatedLoss("sigmoid", num_classes=4, image_count=[10, 1, 3, 500])
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1)) * 2
    labels = torch.tensor([1, 4, 4, 0, 4, 4])
    expected = bce(sigmoid(logits.numpy()), one_hot(labels.numpy(), 4)).sum() / 6
    assert loss(logits, labels).item() == pytest.approx(expected, rel=1e-6)
    plain = F.binary_cross_entropy_with_logits(logits, F.one_hot(labels, 5)[:, :4].float(), reduction="sum") / 6
    assert loss(logits, labels).item() == pytest.approx(plain.item(), rel=1e-6)


def test_federated_weights_from_a_categories_file(tmp_path):
    cats = [{"id": 7, "name": "b", "image_count": 9, "frequency": "r"},
            {"id": 3, "name": "a", "image_count": 100, "frequency": "f"}]
    path = tmp_path / "cats.json"
    path.write_text(json.dumps(cats))                # a categories-only list: no image total needed
    loss = FederatedLoss("gumbel", num_classes=2, frequency_file=str(path))
    assert loss.class_weight.tolist() == pytest.approx([3.0, 10.0])      # the file's order, count^0.5
    assert FederatedLoss("gumbel", num_classes=2, frequency_file=str(path),
                         freq_weight_power=1.0).class_weight.tolist() == pytest.approx([9.0, 100.0])
    with pytest.raises(ConfigError, match="needs frequency_file"):
        FederatedLoss("gumbel", num_classes=2)
    with pytest.raises(ConfigError, match="2 category image counts for num_classes=3"):
        FederatedLoss("gumbel", num_classes=3, frequency_file=str(path))
    with pytest.raises(ConfigError, match="needs a binary activation"):
        FederatedLoss("softmax", num_classes=2, image_count=[1, 2])


@needs_shared
def test_federated_lvis_v1_weights_are_image_counts_to_the_half(v1_stats):
    data = json.loads((SHARED_LVIS / "lvis_v1_categories_with_counts.json").read_text())
    loss = FederatedLoss("gumbel", num_classes=1203, frequency_file=v1_stats[1])   # the run's summary file
    assert loss.class_weight.numpy() == pytest.approx(np.array([c["image_count"] for c in data]) ** 0.5, rel=1e-6)
    assert [c["id"] for c in data] == sorted(c["id"] for c in data)   # label order = detectron2's id order


def test_registry_names_and_flags():
    acsl, fed = DETECTION_LOSSES.get("acsl").cls, DETECTION_LOSSES.get("federated").cls
    assert acsl is ACSLLoss and fed is FederatedLoss
    assert acsl.binary_only and fed.binary_only and not acsl.background_logit and not fed.background_logit
    assert fed.image_counts and not fed.tail_frequencies       # frequency_file, no lambda_
    assert not acsl.image_counts and not acsl.tail_frequencies  # nothing but the activation


def test_gradient_collector_sees_the_new_losses():
    """Both end in ``_watch`` like the others (GOL's Figure 7 collector)."""
    seen = []

    class Collector:
        def watch(self, loss, cls_score, labels, weight):
            seen.append((loss, labels))

    for loss in (ACSLLoss("gumbel", num_classes=4), FederatedLoss("gumbel", num_classes=4, image_count=[1] * 4)):
        loss._grad_collector = Collector()
        value = loss(torch.randn(3, 4), torch.tensor([0, 4, 2]))
        assert seen[-1][0] is value


# ----------------------------------------------------------------------------- the plugin

def test_validation_accepts_them_with_binary_activations_only(make_cfg, tmp_path):
    from lt_bench.validate import validate
    for loss in ("acsl", "federated"):
        for activation in ("sigmoid", "gumbel"):
            validate(make_cfg(*lvis_overrides(tmp_path, f"detector.loss={loss}", f"activation={activation}")))
        with pytest.raises(ConfigError, match=r"needs a binary activation \(sigmoid or gumbel\), not softmax"):
            validate(make_cfg(*lvis_overrides(tmp_path, f"detector.loss={loss}", "activation=softmax")))
        with pytest.raises(ConfigError, match="detection.scoring=softmax needs the C \\+ 1 outputs"):
            validate(make_cfg(*lvis_overrides(tmp_path, f"detector.loss={loss}", "detection.scoring=softmax")))


def test_runner_passes_the_frequency_file_to_the_federated_loss(make_cfg, tmp_path):
    pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")
    from lt_bench.detection.runner import box_classifier_loss
    cfg = make_cfg(*lvis_overrides(tmp_path, "detector.loss=federated", "activation=gumbel"))
    loss = box_classifier_loss(cfg, 1203, "cats.json", 0.0011)
    assert loss["type"] == "FederatedLoss" and loss["frequency_file"] == "cats.json" and "lambda_" not in loss


@pytest.mark.parametrize("loss,activation,bias", [
    ("ACSLLoss", "sigmoid", -6.5), ("ACSLLoss", "gumbel", -2.0),
    ("FederatedLoss", "sigmoid", -6.5), ("FederatedLoss", "gumbel", -2.0),
])
def test_mmdet_bbox_head_builds_with_the_loss(loss, activation, bias):
    pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")
    from mmdet.registry import MODELS
    import lt_bench.detection.registry  # noqa: F401  (the plugin's classes in mmdet's MODELS)
    extra = {}
    if loss == "FederatedLoss":
        if not (SHARED_LVIS / "lvis_v1_categories_with_counts.json").is_file():
            pytest.skip("../shared/data/lvis/lvis_v1_categories_with_counts.json not present (the image counts)")
        extra = dict(frequency_file=str(SHARED_LVIS / "lvis_v1_categories_with_counts.json"), num_images=99_388)
    head = MODELS.build(dict(
        type="Shared2FCBBoxHead", in_channels=8, fc_out_channels=16, roi_feat_size=7, num_classes=1203,
        loss_cls=dict(type=loss, activation=activation, num_classes=1203, **extra),
        init_cfg=[dict(type="ActivationClassifierInit", activation=activation, override=dict(name="fc_cls"))]))
    head.init_weights()
    assert head.fc_cls.out_features == 1203 and torch.all(head.fc_cls.bias == bias)
    assert head.loss_cls.get_activation(torch.zeros(3, 1203)).shape == (3, 1204)
    torch.manual_seed(0)
    cls_score = torch.randn(5, 1203, requires_grad=True)
    losses = head.loss(cls_score, torch.randn(5, 4 * 1203), rois=torch.zeros(5, 5),
                       labels=torch.tensor([0, 5, 1203, 1203, 7]), label_weights=torch.ones(5),
                       bbox_targets=torch.zeros(5, 4), bbox_weights=torch.zeros(5, 4))
    assert torch.isfinite(losses["loss_cls"]) and losses["loss_cls"] > 0 and "acc_classes" in losses
    losses["loss_cls"].backward()
    assert torch.isfinite(cls_score.grad).all()
    if loss == "FederatedLoss":
        assert int((cls_score.grad.abs().sum(0) > 0).sum()) == 49    # 3 classes + background + 46 drawn
