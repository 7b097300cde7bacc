"""The focal loss over the shared activations (dense detection, issue 17 part 5) against its
references: Lin et al.'s formula by hand, mmdet's own FocalLoss (sigmoid), the GOL authors'
GumbelFocalLoss formula (BCE on the clamped Gumbel probability times the focal weight), and the
activation's BCE at gamma = 0; then the focal-prior init against mmengine's bias_init_with_prob."""
import math

import pytest
import torch
import torch.nn.functional as F

from lt_bench.activations import build_activation, focal_loss, init_classifier
from lt_bench.detection.losses import ActivationFocalLoss
from lt_bench.errors import ConfigError


def by_hand(z: list[float], label: int, activation: str, gamma=2.0, alpha=0.25) -> float:
    """Lin et al.: -alpha (1-p)^gamma log p for the true class, -(1-alpha) p^gamma log(1-p) for
    the others; p = sigmoid(z) or exp(-exp(-z)) with Gumbel's loss clamp [-4, 10]."""
    total = 0.0
    for j, v in enumerate(z):
        if activation == "gumbel":
            v = min(max(v, -4.0), 10.0)
            p = math.exp(-math.exp(-v))
        else:
            p = 1.0 / (1.0 + math.exp(-v))
        if j == label:
            total += -alpha * (1 - p) ** gamma * math.log(p)
        else:
            total += -(1 - alpha) * p ** gamma * math.log(1 - p)
    return total


@pytest.mark.parametrize("activation", ["sigmoid", "gumbel"])
def test_focal_loss_is_lin_et_als_formula(activation):
    logits = torch.tensor([[0.5, -1.0, 2.0], [3.0, 0.0, -6.0], [-2.5, 1.5, 0.2]])
    labels = torch.tensor([0, 3, 2])              # two positives and a background anchor (label C = 3)
    loss = ActivationFocalLoss(activation, num_classes=3)
    expected = sum(by_hand(logits[i].tolist(), int(labels[i]), activation) for i in range(3))
    assert loss(logits, labels, avg_factor=2.0).item() == pytest.approx(expected / 2.0, rel=1e-5)
    assert loss(logits, labels, reduction_override="sum").item() == pytest.approx(expected, rel=1e-5)
    weight = torch.tensor([1.0, 0.0, 1.0])          # an ignored anchor (mmdet's label_weights)
    kept = by_hand(logits[0].tolist(), 0, activation) + by_hand(logits[2].tolist(), 2, activation)
    assert loss(logits, labels, weight, avg_factor=2.0).item() == pytest.approx(kept / 2.0, rel=1e-5)


@pytest.mark.parametrize("activation", ["sigmoid", "gumbel"])
def test_gamma_0_without_alpha_is_the_activations_bce(activation):
    act = build_activation(activation)
    z = (torch.randn(40, 6) * 4).requires_grad_()
    z2 = z.detach().clone().requires_grad_()
    targets = F.one_hot(torch.randint(0, 6, (40,)), 6).float()
    focal_loss(act, z, targets, gamma=0.0, alpha=None).sum().backward()
    act.elementwise_loss(z2, targets).sum().backward()
    torch.testing.assert_close(z.grad, z2.grad)


def test_sigmoid_focal_equals_mmdets_focal_loss_with_gradients():
    pytest.importorskip("mmdet", reason="the detection extra is not installed (make det)")
    from mmdet.models.losses import FocalLoss
    torch.manual_seed(0)
    logits, labels, weight = torch.randn(200, 9) * 3, torch.randint(0, 10, (200,)), torch.rand(200)
    for gamma, alpha in ((2.0, 0.25), (1.0, 0.5), (0.0, 0.25)):
        ref, ours = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        expected = FocalLoss(use_sigmoid=True, gamma=gamma, alpha=alpha)(ref, labels, weight, avg_factor=17.0)
        got = ActivationFocalLoss("sigmoid", num_classes=9, gamma=gamma, alpha=alpha)(ours, labels, weight,
                                                                                      avg_factor=17.0)
        expected.backward()
        got.backward()
        assert got.item() == pytest.approx(expected.item(), rel=1e-6)
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-5, atol=1e-8)


def authors_gumbel_focal(logits, labels, num_classes, gamma, alpha, avg_factor):
    """The GOL authors' GumbelFocalLoss as its formula reads (their mmdet 2.x plugin): p from the
    logits clamped to [-4, 10], BCE(p, t) from PyTorch's binary_cross_entropy, times
    (alpha t + (1 - alpha)(1 - t)) ((1 - p) t + p (1 - t))^gamma, summed, over avg_factor."""
    t = F.one_hot(labels, num_classes + 1)[:, :num_classes].float()
    p = torch.exp(-torch.exp(-logits.clamp(-4, 10)))
    pt = (1 - p) * t + p * (1 - t)
    w = (alpha * t + (1 - alpha) * (1 - t)) * pt.pow(gamma)
    return (F.binary_cross_entropy(p, t, reduction="none") * w).sum() / avg_factor


def test_gumbel_focal_with_authors_gradient_is_their_loss():
    torch.manual_seed(1)
    logits, labels = torch.randn(300, 7) * 2, torch.randint(0, 8, (300,))
    for gamma, alpha in ((2.0, 0.25), (0.0, 0.1), (2.0, 0.5)):    # the authors' configs' settings
        ref, ours = logits.clone().requires_grad_(), logits.clone().requires_grad_()
        expected = authors_gumbel_focal(ref, labels, 7, gamma, alpha, 23.0)
        loss = ActivationFocalLoss("gumbel", num_classes=7, gamma=gamma, alpha=alpha,
                                   activation_options=dict(gradient="authors"))
        got = loss(ours, labels, avg_factor=23.0)
        expected.backward()
        got.backward()
        assert got.item() == pytest.approx(expected.item(), rel=1e-5)
        torch.testing.assert_close(ours.grad, ref.grad, rtol=1e-4, atol=1e-7)
        # the exact gradient differs only where the authors' BCE backward loses it: positives
        # below z = -3.32, where p (1 - p) < 1e-12 (issue 14's finding, through the focal weight)
        exact = logits.clone().requires_grad_()
        ActivationFocalLoss("gumbel", num_classes=7, gamma=gamma, alpha=alpha)(exact, labels, avg_factor=23.0).backward()
        lost = (F.one_hot(labels, 8)[:, :7] == 1) & (logits < -3.32) & (logits > -4.0)
        assert lost.any()
        torch.testing.assert_close(exact.grad[~lost], ref.grad[~lost], rtol=1e-3, atol=1e-6)
        # (their gradient keeps only the focal weight's own derivative there)
        assert torch.all(exact.grad[lost].abs() > 1.5 * ref.grad[lost].abs())


def test_gumbel_focal_is_finite_far_outside_the_clamp_and_scores_are_unclamped():
    loss = ActivationFocalLoss("gumbel", num_classes=4)
    z = torch.tensor([[-300.0, -50.0, 60.0, 300.0], [-4.5, 0.0, 9.0, 12.0]], requires_grad=True)
    value = loss(z, torch.tensor([0, 4]), avg_factor=1.0)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    assert z.grad[0, 0] == 0 and z.grad[1, 0] == 0       # below the clamp: no gradient (the authors' too)
    scores = loss.get_activation(z.detach())
    assert scores.shape == (2, 4)                          # C columns: a dense head has no background score
    torch.testing.assert_close(scores, torch.exp(-torch.exp(-z.detach())))


def test_focal_loss_refuses_what_a_dense_head_cannot_use():
    with pytest.raises(ConfigError, match="binary activation"):
        ActivationFocalLoss("softmax", num_classes=3)
    with pytest.raises(ConfigError, match="use_sigmoid=True"):
        ActivationFocalLoss("sigmoid", num_classes=3, use_sigmoid=False)
    with pytest.raises(ConfigError, match="gamma"):
        ActivationFocalLoss("sigmoid", num_classes=3, gamma=-1.0)
    with pytest.raises(ConfigError, match="alpha"):
        ActivationFocalLoss("sigmoid", num_classes=3, alpha=1.5)
    with pytest.raises(ConfigError, match="num_classes=3, the head 5"):
        ActivationFocalLoss("sigmoid", num_classes=3).get_cls_channels(5)


def test_focal_prior_init_starts_every_score_at_one_percent():
    conv = torch.nn.Conv2d(8, 9 * 5, 3)
    weight = conv.weight.detach().clone()
    init_classifier(conv, build_activation("sigmoid"), "focal_prior")
    try:
        from mmengine.model import bias_init_with_prob   # mmdet's RetinaNet init: bias_prob=0.01
        assert torch.all(conv.bias == torch.tensor(bias_init_with_prob(0.01), dtype=torch.float32))
    except ImportError:
        pass
    assert torch.all(conv.bias == torch.tensor(-math.log(99), dtype=torch.float32))
    assert torch.equal(conv.weight, weight)                 # the head's own weight draw is kept
    init_classifier(conv, build_activation("gumbel"), "focal_prior")
    gumbel = build_activation("gumbel")
    torch.testing.assert_close(gumbel.probs(conv.bias.detach()), torch.full((45,), 0.01))
    assert conv.bias[0].item() == pytest.approx(-math.log(math.log(100)), rel=1e-6)
    with pytest.raises(ConfigError, match="binary activation"):
        init_classifier(conv, build_activation("softmax"), "focal_prior")
