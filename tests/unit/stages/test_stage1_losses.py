"""The field's stage-1 losses (lt_bench/stages/losses/) against their papers' formulas, on cases
computed by hand with math (no torch in the expectations), and their recipes and checks."""
import math

import pytest
import torch
from omegaconf import OmegaConf

from lt_bench.activations import build_activation
from lt_bench.errors import ConfigError
from lt_bench.models import build_model
from lt_bench.stages.classifier_ops import NormedLinear
from lt_bench.stages.functional import class_balanced_weights, ldam_margins
from lt_bench.stages.losses import STAGE1_LOSSES, build_stage1_loss
from lt_bench.validate import validate


def settings(loss, **values):
    cls = STAGE1_LOSSES.get(loss).cls.Settings
    return OmegaConf.structured(cls(loss=loss, **values))


def make(loss, counts, activation="softmax", **values):
    s = settings(loss, activation=activation, **values)
    return build_stage1_loss(s, build_activation(activation), counts)


def ce(logits, label, weights=None):
    """-log softmax(logits)[label], in plain math."""
    return -(logits[label] - math.log(sum(math.exp(z) for z in logits)))


def test_class_balanced_weights_are_cui_et_al():
    counts, beta = [3, 1], 0.9
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]          # 0.1/0.271, 0.1/0.1
    expected = [w / sum(raw) * 2 for w in raw]
    assert class_balanced_weights(counts, beta).tolist() == pytest.approx(expected, rel=1e-6)
    assert class_balanced_weights(counts, 0.0).tolist() == [1.0, 1.0]


def test_balanced_softmax_adds_log_counts():
    loss = make("balanced_softmax", [9, 1])
    # logits [0, 0] + log [9, 1]: p(class 1) = 1 / 10
    assert loss(torch.zeros(1, 2), torch.tensor([1])).item() == pytest.approx(math.log(10), rel=1e-6)
    assert loss(torch.zeros(1, 2), torch.tensor([0])).item() == pytest.approx(math.log(10 / 9), rel=1e-6)


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_logit_adjusted_loss_adds_tau_log_prior(tau):
    counts, z = [9, 1], [0.3, 1.2]
    loss = make("logit_adjusted", counts, tau=tau)
    adjusted = [z[0] + tau * math.log(0.9), z[1] + tau * math.log(0.1)]
    for label in (0, 1):
        assert loss(torch.tensor([z]), torch.tensor([label])).item() == pytest.approx(ce(adjusted, label), rel=1e-6)
    # tau = 1 equals Balanced Softmax (log counts and log prior differ by a constant)
    if tau == 1.0:
        bs = make("balanced_softmax", counts)
        assert loss(torch.tensor([z]), torch.tensor([1])).item() == pytest.approx(
            bs(torch.tensor([z]), torch.tensor([1])).item(), rel=1e-6)


def test_ldam_margins_and_loss_on_cosine_logits():
    counts = [100, 1]
    loss = make("ldam", counts, drw_epoch=None)
    m = [0.5 * 100 ** -0.25, 0.5]                                   # ~ n^(-1/4), the largest 0.5
    assert ldam_margins(counts, 0.5).tolist() == pytest.approx(m, rel=1e-6)
    cos = [0.2, 0.3]
    logits = torch.tensor([[30 * c for c in cos]])                  # NormedLinear's s * cos
    for label in (0, 1):
        shifted = [30 * (c - (m[label] if i == label else 0)) for i, c in enumerate(cos)]
        assert loss(logits, torch.tensor([label])).item() == pytest.approx(ce(shifted, label), rel=1e-5)


def test_ldam_uses_a_cosine_classifier_with_scale():
    model = build_model("resnet8", 3, in_chans=1)
    make("ldam", [5, 3, 1], scale=30.0).prepare(model)
    assert isinstance(model.classifier, NormedLinear) and model.num_classes == 3
    x = torch.randn(4, model.classifier.in_features)
    cos = torch.nn.functional.cosine_similarity(x[:, None, :], model.classifier.weight[None], dim=2)
    assert torch.allclose(model.classifier(x), 30 * cos, atol=1e-5)


def test_drw_switches_weights_at_the_scaled_epoch():
    counts, beta = [3, 1], 0.9
    loss = make("drw", counts, drw_epoch=160.0, drw_beta=beta, epochs=30, reference_epochs=200.0)
    logits, labels = torch.tensor([[1.0, 0.0], [0.2, 0.7], [0.0, 0.5]]), torch.tensor([0, 1, 0])
    rows = [[1.0, 0.0], [0.2, 0.7], [0.0, 0.5]]
    plain = sum(ce(r, y) for r, y in zip(rows, [0, 1, 0])) / 3
    loss.set_epoch(23)                                             # 160 * 30 / 200 = 24: not yet
    assert loss(logits, labels).item() == pytest.approx(plain, rel=1e-6)
    loss.set_epoch(24)
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    w = [v / sum(raw) * 2 for v in raw]
    weighted = sum(w[y] * ce(r, y) for r, y in zip(rows, [0, 1, 0])) / (w[0] + w[1] + w[0])
    assert loss(logits, labels).item() == pytest.approx(weighted, rel=1e-6)
    assert loss.details()["drw_epoch"] == 24.0
    # by default from the first lr decay, wherever the task's recipe puts it (digits: 40 of 60)
    first = make("drw", counts, epochs=60, milestones=[40.0, 50.0], reference_epochs=60.0)
    assert first.drw_start == 40.0 and make("ldam", counts, drw_epoch=None).method == "ldam"


@pytest.mark.parametrize("gamma,z,label", [(1.0, [0.0, 0.0], 0), (2.0, [2.0, -1.0], 0), (0.0, [0.5, 1.5], 1)])
def test_cb_focal_is_cui_et_al_sigmoid_focal(gamma, z, label):
    counts, beta = [4, 2], 0.5
    loss = make("cb_focal", counts, activation="sigmoid", beta=beta, gamma=gamma)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    pt = [sig(v) if i == label else sig(-v) for i, v in enumerate(z)]
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    w = raw[label] / sum(raw) * 2
    expected = w * sum((1 - p) ** gamma * -math.log(p) for p in pt)
    assert loss(torch.tensor([z]), torch.tensor([label])).item() == pytest.approx(expected, rel=1e-5)


def test_cb_focal_bias_starts_at_the_prior():
    model = build_model("resnet8", 4, in_chans=1)
    make("cb_focal", [4, 3, 2, 1], activation="sigmoid", prior=0.1).prepare(model)
    assert torch.sigmoid(model.classifier.bias).tolist() == pytest.approx([0.1] * 4, rel=1e-5)


def test_one_stage_binary_gets_the_authors_scale_and_init():
    """Part 7: BCE averaged over classes as the authors' (1/C), the paper's classifier init."""
    counts = [5, 3, 1, 1]
    gumbel = make("activation", counts, activation="gumbel")
    logits, labels = torch.randn(6, 4), torch.randint(0, 4, (6,))
    assert gumbel(logits, labels).item() == pytest.approx(
        build_activation("gumbel").loss(logits, labels).item() / 4, rel=1e-6)
    model = build_model("resnet8", 4, in_chans=1)
    gumbel.prepare(model)
    assert set(model.classifier.bias.tolist()) == {-2.0}
    assert torch.equal(model.classifier.weight, torch.full_like(model.classifier.weight, 0.001))
    softmax = make("activation", counts)                              # softmax: unchanged
    model = build_model("resnet8", 4, in_chans=1)
    before = model.classifier.weight.clone()
    softmax.prepare(model)
    assert torch.equal(model.classifier.weight, before)
    assert softmax(logits, labels).item() == pytest.approx(
        build_activation("softmax").loss(logits, labels).item(), rel=1e-6)


def test_baseline_recipes_compose_with_the_ldam_schedule(make_cfg):
    for loss in ("ldam_drw", "drw", "balanced_softmax", "logit_adjusted", "cb_focal"):
        cfg = make_cfg("task=cifar100lt", f"stage1={loss}", "stage=1")
        validate(cfg)
        s = cfg.stage1
        assert (s.epochs, s.batch_size, s.lr, list(s.milestones), s.gamma, s.warmup_epochs) == (
            200, 128, 0.1, [160, 180], 0.01, 5), loss
        assert cfg.data.autoaugment is False and "LDAM-DRW" in s.source
    assert make_cfg("stage1=ldam_drw", "stage=1").stage1.epochs == 60    # digits: the task's recipe


@pytest.mark.parametrize("overrides,match", [
    (("stage1=ldam_drw",), "one-stage baseline: run it with stage=1"),
    (("stage1=cb_focal", "stage1.activation=softmax", "stage=1"), "defined for stage1.activation=sigmoid"),
    (("stage1=drw", "stage1.drw_beta=1.0"), "drw_beta must be in"),
    (("stage1=drw", "stage1.milestones=[]"), "needs lr milestones"),
    (("stage1.loss_scale=zero",), "loss_scale must be"),
])
def test_bad_stage1_settings_are_refused(make_cfg, overrides, match):
    with pytest.raises(ConfigError, match=match):
        validate(make_cfg(*overrides))
