"""Stage-2 classifier operations on tiny problems whose effect is known: tau-normalisation,
logit adjustment, LWS scales, the choice of tau (the methods' runs are in
tests/integration/test_stage2_methods.py)."""
import numpy as np
import pytest
import torch
from torch import nn

from lt_bench.stages.classifier_ops import ScaledLinear, adjust_logits, choose_tau, tau_normalise

torch.manual_seed(0)


def linear(c=4, d=6):
    layer = nn.Linear(d, c)
    with torch.no_grad():
        layer.weight.mul_(torch.arange(1, c + 1, dtype=torch.float32)[:, None])   # uneven norms
    return layer


def test_tau_zero_is_the_identity_and_tau_one_normalises():
    layer = linear()
    before = layer.weight.clone()
    tau_normalise(layer, 0.0)
    assert torch.equal(layer.weight, before)
    tau_normalise(layer, 1.0)
    torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(layer.weight, before / before.norm(dim=1, keepdim=True))


def test_logit_adjustment_uniform_prior_is_the_identity():
    layer, x = linear(), torch.randn(10, 6)
    probs_before = torch.softmax(layer(x), 1)
    adjust_logits(layer, [50, 50, 50, 50], tau=1.0)
    torch.testing.assert_close(torch.softmax(layer(x), 1), probs_before)


def test_logit_adjustment_subtracts_tau_log_prior():
    layer, x = linear(), torch.randn(3, 6)
    before = layer(x)
    adjust_logits(layer, [70, 20, 8, 2], tau=0.5)
    expected = before - 0.5 * torch.log(torch.tensor([0.7, 0.2, 0.08, 0.02]))
    torch.testing.assert_close(layer(x), expected)


def test_lws_initialised_to_one_is_the_identity_and_learns_only_scales():
    layer, x = linear(), torch.randn(5, 6)
    scaled = ScaledLinear.scaling(layer)
    torch.testing.assert_close(scaled(x), layer(x))
    assert [n for n, p in scaled.named_parameters() if p.requires_grad] == ["scales"]
    with torch.no_grad():
        scaled.scales.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0]))
    torch.testing.assert_close(scaled(x), layer(x) * torch.tensor([1.0, 2.0, 0.5, 1.0]))


def test_choose_tau_fixes_a_norm_biased_classifier():
    # class 3's weight is 4x longer: at tau = 0 it wins everywhere; normalising fixes it
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(4) * torch.tensor([1.0, 1.0, 1.0, 4.0])[:, None])
    labels = torch.arange(4).repeat(25)
    features = torch.eye(4)[labels] * 0.6 + 0.4 * torch.eye(4)[3]   # every sample leans to class 3
    tau, scores = choose_tau(features, labels, layer)
    # class k < 3 wins when 0.6 > 1.6 * 4^-tau, i.e. tau > log(1.6 / 0.6) / log 4 = 0.708;
    # ties go to the smaller tau, so the grid's answer is 0.8
    threshold = np.log(1.6 / 0.6) / np.log(4)
    assert len(scores) == 21 and scores[0.0] == pytest.approx(0.25)
    assert tau == min(t for t in scores if t > threshold) == 0.8 and scores[tau] == pytest.approx(1.0)


def test_tau_norm_scores_without_the_bias_as_kang():
    """Kang et al.'s tau_norm.py scores f . w_i / ||w_i||^tau: the classifier's bias is not used."""
    layer, x = linear(), torch.randn(5, 6)
    w = layer.weight.detach().clone()
    tau_normalise(layer, 0.7)
    torch.testing.assert_close(layer(x), x @ (w / w.norm(dim=1, keepdim=True) ** 0.7).T)


def test_logit_adjustment_tau_chosen_on_val_by_balanced_accuracy():
    from lt_bench.stages.classifier_ops import choose_adjustment_tau
    # a classifier that prefers the head class 0 by +1 logit on every sample of class 1
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(2))
        layer.bias.copy_(torch.tensor([1.0, 0.0]))
    labels = torch.tensor([0] * 10 + [1] * 10)
    features = torch.eye(2)[labels] * 0.5          # margin 0.5 for the true class, bias 1 for class 0
    counts = [90, 10]                               # log prior gap log(9) = 2.197
    tau, scores = choose_adjustment_tau(features, labels, layer, counts)
    # class 1 wins its samples once tau * log 9 > 1 - 0.5 (tau > 0.228), class 0 keeps its own while
    # tau * log 9 < 1 + 0.5 (tau < 0.683): the smallest tau of the grid above 0.228 is 0.3
    assert scores[0.0] == pytest.approx(0.5) and scores[0.3] == pytest.approx(1.0) and tau == 0.3
    assert scores[0.7] == pytest.approx(0.5)
