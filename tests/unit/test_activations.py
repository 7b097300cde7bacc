"""Activations: values, gradients and numerical safety against independent formulas."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lt_bench.activations import (ACTIVATIONS, Gumbel, _GumbelBCE, build_activation,
                                  init_classifier)
from lt_bench.errors import ConfigError

torch.manual_seed(0)


def one_hot(labels, num_classes, dtype=torch.float64):
    return F.one_hot(labels, num_classes).to(dtype)


def naive_gumbel_bce(z64, targets64):
    """Textbook BCE on p = exp(-exp(-z)), float64: trustworthy where p is not 0 or 1."""
    p = torch.exp(-torch.exp(-z64))
    return -(targets64 * torch.log(p) + (1 - targets64) * torch.log(1 - p))


def test_registry_lists_valid_names_on_typo():
    assert set(ACTIVATIONS) == {"softmax", "sigmoid", "gumbel"}
    with pytest.raises(ConfigError, match="valid: gumbel, sigmoid, softmax"):
        build_activation("gumble")


def test_gumbel_loss_matches_naive_bce_in_safe_range():
    z = torch.empty(64, 10, dtype=torch.float64).uniform_(-4, 10)
    labels = torch.randint(0, 10, (64,))
    t = one_hot(labels, 10)
    expected = naive_gumbel_bce(z, t).sum(1).mean()
    got = build_activation("gumbel").loss(z.float(), labels)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gumbel_gradient_matches_closed_form_and_autograd():
    z = torch.empty(32, 7, dtype=torch.float64).uniform_(-3.9, 9.9)
    t = one_hot(torch.randint(0, 7, (32,)), 7)
    # our custom backward, float64
    z_ours = z.clone().requires_grad_(True)
    _GumbelBCE.apply(z_ours, t).sum().backward()
    # autograd through the naive formula
    z_auto = z.clone().requires_grad_(True)
    naive_gumbel_bce(z_auto, t).sum().backward()
    # closed forms: positive -exp(-z), negative exp(-z) p / (1 - p)
    p = torch.exp(-torch.exp(-z))
    closed = torch.where(t == 1, -torch.exp(-z), torch.exp(-z) * p / (1 - p))
    torch.testing.assert_close(z_ours.grad, closed, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(z_auto.grad, closed, rtol=1e-8, atol=1e-10)


def test_gumbel_function_passes_gradcheck():
    z = torch.empty(6, 5, dtype=torch.float64).uniform_(-5, 25).requires_grad_(True)
    t = one_hot(torch.randint(0, 5, (6,)), 5)
    assert torch.autograd.gradcheck(lambda x: _GumbelBCE.apply(x, t), (z,))


def test_clamp_is_an_explicit_parameter_with_zero_gradient_outside():
    act = build_activation("gumbel", clamp=(-4.0, 10.0))
    z = torch.tensor([[-6.0, 12.0, 3.0]], requires_grad=True)
    act.loss(z, torch.tensor([0])).backward()
    assert z.grad[0, 0] == 0 and z.grad[0, 1] == 0 and z.grad[0, 2] != 0
    # outside the range the loss equals the loss at the boundary
    at_edges = act.loss(torch.tensor([[-4.0, 10.0, 3.0]]), torch.tensor([0]))
    assert act.loss(z.detach(), torch.tensor([0])).item() == pytest.approx(at_edges.item(), rel=1e-6)
    # clamp=None: the gradient at z = -6 is the closed form, not zero
    free = build_activation("gumbel", clamp=None)
    z2 = torch.tensor([[-6.0, 12.0, 3.0]], requires_grad=True)
    free.loss(z2, torch.tensor([0])).backward()
    assert z2.grad[0, 0].item() == pytest.approx(-math.exp(6.0), rel=1e-5)
    with pytest.raises(ConfigError, match="lo < hi"):
        Gumbel(clamp=(10.0, -4.0))


def test_default_clamp_is_the_papers_range():
    assert Gumbel().clamp == (-4.0, 10.0)


HUGE = [1e4, -1e4, 50.0, -50.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gumbel_finite_for_huge_logits_with_default_clamp(dtype):
    act = build_activation("gumbel")
    z = torch.tensor([HUGE] * 5, dtype=dtype).requires_grad_(True)
    loss = act.loss(z, torch.arange(5))          # every logit is once the positive one
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gumbel_without_clamp_finite_wherever_the_true_value_is(dtype):
    # Negatives at any logit, positives at z >= 0: the true loss and gradient are small.
    # (A positive at z = -1e4 has the true loss exp(1e4): infinite in any float, which the
    # training loop's non-finite guard reports.)
    act = build_activation("gumbel", clamp=None)
    z = torch.tensor([HUGE] * 3, dtype=dtype).requires_grad_(True)
    loss = act.loss(z, torch.tensor([0, 2, 4]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert z.grad[:, 1].abs().max() == 0    # negative at -1e4: p = 0, nothing to learn


def test_gumbel_without_clamp_large_positive_loss_is_exact():
    act = build_activation("gumbel", clamp=None)
    loss = act.sample_loss(torch.tensor([[-50.0, 0.0]]), torch.tensor([0]))
    expected = math.exp(50.0) - math.log(1 - math.exp(-1.0))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_gumbel_negative_loss_exact_where_naive_float32_fails():
    # -log(1 - p) for z = 50 is 50 + exp(-50)/2; float32 1 - p rounds to 0.
    act = build_activation("gumbel", clamp=None)
    z = torch.tensor([[50.0, 0.0]])
    loss = act.sample_loss(z, torch.tensor([1]))   # class 0 is a negative
    expected = 50.0 + math.exp(-50) / 2 + (-math.log(math.exp(-math.exp(-0.0))))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_gumbel_scores_closed_form_and_temperature():
    z = torch.linspace(-3, 6, 11).reshape(1, -1)
    act = build_activation("gumbel")
    torch.testing.assert_close(act.probs(z), torch.exp(-torch.exp(-z)))
    torch.testing.assert_close(act.log_probs(z), -torch.exp(-z))
    hot = build_activation("gumbel", clamp=None, temperature=2.0)
    cold = build_activation("gumbel", clamp=None)
    labels = torch.tensor([3])
    torch.testing.assert_close(hot.loss(z, labels), cold.loss(z / 2, labels))


def test_softmax_and_sigmoid_losses_match_formulas():
    z = torch.randn(16, 5, dtype=torch.float64)
    labels = torch.randint(0, 5, (16,))
    expected_ce = -(torch.log_softmax(z, 1).gather(1, labels[:, None])).mean()
    assert build_activation("softmax").loss(z, labels).item() == pytest.approx(expected_ce.item(), rel=1e-6)
    t = one_hot(labels, 5)
    s = torch.sigmoid(z)
    expected_bce = -(t * torch.log(s) + (1 - t) * torch.log(1 - s)).sum(1).mean()
    assert build_activation("sigmoid").loss(z, labels).item() == pytest.approx(expected_bce.item(), rel=1e-6)


def test_loss_is_float32_under_autocast():
    z = torch.randn(8, 4)
    labels = torch.randint(0, 4, (8,))
    for name in ACTIVATIONS:
        act = build_activation(name)
        plain = act.loss(z, labels)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = act.loss(z.bfloat16(), labels)
        assert mixed.dtype == torch.float32
        assert mixed.item() == pytest.approx(plain.item(), rel=2e-2)


@pytest.mark.parametrize("name,options", [("softmax", {}), ("sigmoid", {}), ("gumbel", {}),
                                          ("gumbel", {"temperature": 3.0})])
def test_prior_bias_gives_uniform_initial_scores(name, options):
    act = build_activation(name, **options)
    layer = nn.Linear(16, 37)
    init_classifier(layer, act, "prior")
    nn.init.zeros_(layer.weight)    # the bias alone sets the initial score
    scores = act.probs(layer(torch.randn(4, 16)))
    torch.testing.assert_close(scores, torch.full_like(scores, 1 / 37))
    torch.testing.assert_close(act.normalised_probs(layer(torch.randn(4, 16))).sum(1), torch.ones(4))


def test_gumbel_prior_bias_is_minus_log_log_c():
    assert build_activation("gumbel").prior_bias(100) == pytest.approx(-math.log(math.log(100)))
    assert build_activation("gumbel", temperature=2.0).prior_bias(100) == pytest.approx(-2 * math.log(math.log(100)))


def test_detection_init_is_the_papers():
    layer = nn.Linear(8, 4)
    init_classifier(layer, build_activation("gumbel"), "paper")
    assert torch.all(layer.weight == 0.001) and torch.all(layer.bias == -2.0)
    init_classifier(layer, build_activation("sigmoid"), "paper")
    assert torch.all(layer.bias == -6.5)
    with pytest.raises(ConfigError, match="unknown classifier init 'xavier'; valid: focal_prior, keep, paper, prior"):
        init_classifier(layer, build_activation("sigmoid"), "xavier")


def test_gumbel_authors_gradient_is_their_bce_on_probabilities():
    """gradient=authors against the GOL authors' classification loss, written as their code
    does it (kostas1515/improved_baselines, classification/custom.py, BCE(use_gumbel=True)):
    nn.BCELoss on exp(-exp(-clamp(z, -4, 10)))."""
    z = (torch.randn(32, 10) * 4).requires_grad_()
    targets = torch.nn.functional.one_hot(torch.randint(0, 10, (32,)), 10).float()
    theirs_z = z.detach().clone().requires_grad_()
    theirs = nn.BCELoss(reduction="none")(torch.exp(-torch.exp(-torch.clamp(theirs_z, min=-4.0, max=10.0))), targets)
    ours = build_activation("gumbel", gradient="authors").elementwise_loss(z, targets)
    torch.testing.assert_close(ours, theirs)
    ours.sum().backward()
    theirs.sum().backward()
    torch.testing.assert_close(z.grad, theirs_z.grad)
    # where they differ from the exact loss: a positive far below zero keeps its gradient only there
    deep = torch.tensor([[-3.94]], requires_grad=True)
    build_activation("gumbel").elementwise_loss(deep, torch.ones(1, 1)).sum().backward()
    assert deep.grad.item() == pytest.approx(-math.exp(3.94), rel=1e-5)
    deep.grad = None
    build_activation("gumbel", gradient="authors").elementwise_loss(deep, torch.ones(1, 1)).sum().backward()
    assert abs(deep.grad.item()) < 1e-8
    with pytest.raises(ConfigError, match="unknown gumbel gradient 'approx'; valid: exact, authors"):
        build_activation("gumbel", gradient="approx")
