"""Class activations shared by classification and detection: Softmax, Sigmoid, Gumbel.

An activation turns logits into class scores (``log_probs``, ``probs``) and logits plus
labels into a loss.  Classification stage 2, the detection losses and the plots all take
activations by name from the ``ACTIVATIONS`` registry (``build_activation``, or
``configured_activation`` with the run's ``activations.<name>`` options); nothing else in the
suite knows the formulas.

Losses are computed in float32 with autocast disabled: binary cross-entropy on
probabilities is unsafe in half precision, so every loss here works from closed-form
log-probabilities instead.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lt_bench.errors import ConfigError
from lt_bench.registries import ACTIVATIONS, CLASSIFIER_INITS


def build_activation(name: str, **options) -> "Activation":
    """The activation registered as ``name``; an unknown name lists the valid ones."""
    cls = ACTIVATIONS.get(name).cls
    try:
        return cls(**options)
    except TypeError as err:
        raise ConfigError(f"activations.{name}: {err}") from err


def activation_options(cfg, name: str) -> dict:
    """The run's options of activation ``name`` (``activations.<name>`` of the config), plain."""
    from omegaconf import DictConfig, OmegaConf
    options = (cfg.get("activations") or {}).get(name) or {}
    return OmegaConf.to_container(options, resolve=True) if isinstance(options, DictConfig) else dict(options)


def configured_activation(cfg, name: str) -> "Activation":
    """Activation ``name`` with the run's options: the one source of truth both tracks use."""
    return build_activation(name, **activation_options(cfg, name))


def _float32(logits: Tensor) -> Tensor:
    return logits.float()


class Activation:
    """Base class. ``binary`` activations score each class independently (one-vs-all BCE)."""

    name: str = ""
    binary: bool = False
    # Classifier bias the paper uses in the detection head (weights constant 0.001).
    detection_bias: float = -6.5

    def log_probs(self, logits: Tensor) -> Tensor:
        """Log of the class scores, float32, same shape as ``logits``."""
        raise NotImplementedError

    def probs(self, logits: Tensor) -> Tensor:
        return self.log_probs(logits).exp()

    def normalised_probs(self, logits: Tensor) -> Tensor:
        """Scores rescaled to sum to one per sample (softmax of the log-scores).

        Binary activations do not produce a distribution; calibration (ECE) is measured on
        this normalisation so that all activations are compared on the same footing.
        """
        return torch.softmax(self.log_probs(logits), dim=-1)

    def sample_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Per-sample loss, shape [N]; for binary activations the sum over classes."""
        raise NotImplementedError

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean over the batch of the per-sample loss; ``labels`` are class indices."""
        with torch.autocast(logits.device.type, enabled=False):
            return self.sample_loss(logits, labels).mean()

    def prior_bias(self, num_classes: int) -> float:
        """Classifier bias that makes every initial class score 1/C when the weights are zero."""
        raise NotImplementedError

    def bias_for_prob(self, prob: float) -> float:
        """The logit whose probability is ``prob`` (a binary activation's inverse): a classifier
        bias that starts every score at ``prob`` when the weights are near zero."""
        raise ConfigError(f"{type(self).__name__.lower()} scores a class from all logits together: no bias "
                          "gives one class a chosen probability (use a binary activation)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class BinaryActivation(Activation):
    """One independent probability per class, trained with binary cross-entropy."""

    binary = True

    def elementwise_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        """BCE per (sample, class), float32; ``targets`` in [0, 1] (one-hot, or all zero
        for a detection background row)."""
        raise NotImplementedError

    def sample_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        targets = F.one_hot(labels, logits.shape[-1]).float()
        return self.elementwise_loss(logits, targets).sum(dim=-1)

    def loss_probs(self, logits: Tensor) -> Tensor:
        """The probabilities as the loss sees them (Gumbel: after its clamp and temperature),
        float32, differentiable with finite gradients everywhere: a focal loss's modulation."""
        raise NotImplementedError

    def prior_bias(self, num_classes: int) -> float:
        return self.bias_for_prob(1.0 / num_classes)


@ACTIVATIONS.register("softmax")
class Softmax(Activation):
    def log_probs(self, logits: Tensor) -> Tensor:
        return torch.log_softmax(_float32(logits), dim=-1)

    def sample_loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        return F.cross_entropy(_float32(logits), labels, reduction="none")

    def prior_bias(self, num_classes: int) -> float:
        return 0.0  # equal logits give 1/C whatever their value


@ACTIVATIONS.register("sigmoid")
class Sigmoid(BinaryActivation):
    def log_probs(self, logits: Tensor) -> Tensor:
        return F.logsigmoid(_float32(logits))

    def elementwise_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            return F.binary_cross_entropy_with_logits(
                _float32(logits), targets.float(), reduction="none"
            )

    def loss_probs(self, logits: Tensor) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            return torch.sigmoid(_float32(logits))

    def bias_for_prob(self, prob: float) -> float:
        _check_prob(prob)
        return math.log(prob / (1.0 - prob))   # 1/C: -log(C - 1)


# Below -this logit, the Gumbel probability and its derivative are 0 in float64 (exp(-e^40)).
_GUMBEL_PROBS_FROM = 40.0


def _check_prob(prob: float) -> None:
    if not 0.0 < prob < 1.0:
        raise ConfigError(f"a prior probability must be in (0, 1), got {prob}")


# Above this logit, -log(1 - p) = z + u/2 + O(u^2) with u = exp(-z) < 2.1e-9: the series is
# exact in float32 and float64, while log(-expm1(-u)) would underflow for z > ~100.
_GUMBEL_SERIES_FROM = 20.0


class _GumbelBCE(torch.autograd.Function):
    """Elementwise BCE of p = exp(-exp(-z)) against targets t, with closed-form gradient.

    loss = t * u - (1 - t) * log(1 - p),  u = exp(-z),  log p = -u
    d/dz = t * (-u) + (1 - t) * u p / (1 - p),  where u p / (1 - p) = u / expm1(u).

    Autograd through the stable forward would multiply 0 by inf at the extremes
    (z -> +inf: u = 0; z -> -inf: u = inf); the closed form has no such product.
    """

    @staticmethod
    def forward(ctx, z: Tensor, targets: Tensor) -> Tensor:
        u = torch.exp(-z)
        neg_log_1mp = torch.where(
            z > _GUMBEL_SERIES_FROM, z + 0.5 * u, -torch.log(-torch.expm1(-u))
        )
        ctx.save_for_backward(u, targets)
        return _weighted(targets, u) + _weighted(1.0 - targets, neg_log_1mp)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        u, targets = ctx.saved_tensors
        # u / expm1(u) -> 1 as u -> 0 and -> 0 as u -> inf; the clamp keeps 0/0 and inf/inf
        # out without changing the value at float32 resolution.
        u_safe = u.clamp(1e-30, 1e4)
        neg_grad = u_safe / torch.expm1(u_safe)
        grad = _weighted(targets, -u) + _weighted(1.0 - targets, neg_grad)
        return grad_out * grad, None


def _weighted(weight: Tensor, value: Tensor) -> Tensor:
    """weight * value, exactly 0 where weight is 0 (even where value is infinite)."""
    return torch.where(weight != 0, weight * value, torch.zeros_like(value))


@ACTIVATIONS.register("gumbel")
class Gumbel(BinaryActivation):
    """Gumbel activation of GOL (ECCV 2022): p = exp(-exp(-z / T)).

    ``clamp``: the loss clamps logits to [lo, hi] (the authors' [-4, 10]) before the
    double exponent, so logits outside get zero gradient; ``None`` disables it.  Scores at
    inference (``log_probs``) are not clamped, as in the authors' code, so that the ranking
    of confident predictions is kept.  ``temperature`` divides the (clamped) logits.

    ``gradient``: ``exact`` computes the loss from closed-form log-probabilities with the
    closed-form gradient (-exp(-z) for a positive, finite everywhere).  ``authors`` is the
    authors' loss as their code computes it: PyTorch's ``binary_cross_entropy`` on the float32
    probabilities p = exp(-exp(-z)).  Its log is floored at -100 and its backward divides by
    max(p (1 - p), 1e-12), so a positive below z = -3.32 gets almost no gradient (at z = -3.94:
    -2.4e-9 against the exact -exp(3.94) = -51.4).  The paper-reproduction recipes use ``authors``.
    """

    detection_bias = -2.0
    GRADIENTS = ("exact", "authors")

    def __init__(self, clamp: tuple[float, float] | None = (-4.0, 10.0), temperature: float = 1.0,
                 gradient: str = "exact"):
        if clamp is not None:
            lo, hi = (float(v) for v in clamp)
            if not lo < hi:
                raise ConfigError(f"gumbel clamp must be (lo, hi) with lo < hi, got {tuple(clamp)}")
            clamp = (lo, hi)
        if not temperature > 0:
            raise ConfigError(f"gumbel temperature must be > 0, got {temperature}")
        if gradient not in self.GRADIENTS:
            raise ConfigError(f"unknown gumbel gradient {gradient!r}; valid: {', '.join(self.GRADIENTS)}")
        self.clamp = clamp
        self.temperature = float(temperature)
        self.gradient = gradient

    def log_probs(self, logits: Tensor) -> Tensor:
        return -torch.exp(-_float32(logits) / self.temperature)

    def elementwise_loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            z = _float32(logits)
            if self.clamp is not None:
                z = z.clamp(*self.clamp)
            z = z / self.temperature
            if self.gradient == "authors":
                probs = torch.exp(-torch.exp(-z))
                return F.binary_cross_entropy(probs, targets.float(), reduction="none")
            return _GumbelBCE.apply(z, targets.float())

    def loss_probs(self, logits: Tensor) -> Tensor:
        with torch.autocast(logits.device.type, enabled=False):
            z = _float32(logits)
            if self.clamp is not None:
                z = z.clamp(*self.clamp)
            # below z = -_GUMBEL_PROBS_FROM, p = exp(-exp(-z)) and dp/dz = p exp(-z) are 0 in
            # float64 already; the floor keeps autograd from multiplying 0 by an infinite exp(-z)
            z = (z / self.temperature).clamp(min=-_GUMBEL_PROBS_FROM)
            return torch.exp(-torch.exp(-z))

    def bias_for_prob(self, prob: float) -> float:
        # exp(-exp(-b / T)) = p  <=>  b = -T log(-log p)   (1/C: -T log(log C))
        _check_prob(prob)
        return -self.temperature * math.log(-math.log(prob))

    def __repr__(self) -> str:
        return f"Gumbel(clamp={self.clamp}, temperature={self.temperature}, gradient={self.gradient})"


def focal_loss(activation: BinaryActivation, logits: Tensor, targets: Tensor, gamma: float = 2.0,
               alpha: float | None = 0.25) -> Tensor:
    """Focal loss (Lin et al. 2017) over a binary activation's probabilities, per (sample, class):

        FL = w * pt^gamma * BCE(p, t),   pt = p (1 - t) + (1 - p) t,   w = alpha t + (1 - alpha)(1 - t)

    with p the activation's ``loss_probs`` and BCE its own ``elementwise_loss`` (closed form;
    for Gumbel its clamp, temperature and gradient mode).  With the sigmoid this is mmdet's
    ``py_sigmoid_focal_loss`` (the modulation is differentiated too, as there); gamma = 0 and
    alpha = None give the activation's BCE.  ``alpha=None``: no class-weighting (w = 1)."""
    if gamma < 0:
        raise ConfigError(f"focal gamma must be >= 0, got {gamma}")
    if alpha is not None and not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"focal alpha must be in [0, 1] or None, got {alpha}")
    with torch.autocast(logits.device.type, enabled=False):
        targets = targets.float()
        bce = activation.elementwise_loss(logits, targets)
        if gamma == 0 and alpha is None:
            return bce
        p = activation.loss_probs(logits)
        pt = p * (1.0 - targets) + (1.0 - p) * targets
        if gamma == 0:
            weight = torch.ones_like(pt)
        else:   # below gamma = 1, d pt^gamma / d pt is infinite at pt = 0: floor pt there
            weight = (pt if gamma >= 1 else pt.clamp(min=1e-30)).pow(gamma)
        if alpha is not None:
            weight = weight * (alpha * targets + (1.0 - alpha) * (1.0 - targets))
        return _weighted(weight, bce)


class ClassifierInit:
    """How a linear classifier starts for an activation (``init_classifier``)."""

    def __call__(self, linear: nn.Linear, activation: Activation) -> None:
        raise NotImplementedError


@CLASSIFIER_INITS.register("keep")
class KeepInit(ClassifierInit):
    """Leave the layer as it is (e.g. the stage-1 classifier)."""

    def __call__(self, linear: nn.Linear, activation: Activation) -> None:
        pass


@CLASSIFIER_INITS.register("prior")
class PriorInit(ClassifierInit):
    """Weights N(0, 0.01^2), bias so that every initial score is 1/C (Gumbel: -T log(log C);
    sigmoid: -log(C - 1); softmax: 0)."""

    @torch.no_grad()
    def __call__(self, linear: nn.Linear, activation: Activation) -> None:
        linear.weight.normal_(0.0, 0.01)
        if linear.bias is not None:
            linear.bias.fill_(activation.prior_bias(linear.out_features))


@CLASSIFIER_INITS.register("paper")
class PaperInit(ClassifierInit):
    """The paper's detection-head init: weights constant 0.001, bias -2 for Gumbel, -6.5 for
    sigmoid and softmax."""

    @torch.no_grad()
    def __call__(self, linear: nn.Linear, activation: Activation) -> None:
        linear.weight.fill_(0.001)
        if linear.bias is not None:
            linear.bias.fill_(activation.detection_bias)


@CLASSIFIER_INITS.register("focal_prior")
class FocalPriorInit(ClassifierInit):
    """Lin et al.'s focal-loss start, in the activation's own probability: the bias so that every
    initial score is pi = 0.01 (sigmoid: -log(99) = -4.595, mmdet's ``bias_prob=0.01``; Gumbel:
    -log(log 100) = -1.527, inside its loss clamp where the sigmoid's -4.595 is not); the weights
    stay as they are (mmdet's dense heads draw them N(0, 0.01^2) first, as Lin et al.)."""

    PI = 0.01

    @torch.no_grad()
    def __call__(self, linear: nn.Module, activation: Activation) -> None:
        if linear.bias is not None:
            linear.bias.fill_(activation.bias_for_prob(self.PI))


def init_classifier(linear: nn.Linear, activation: Activation, scheme: str) -> None:
    """Initialise a linear classifier for ``activation`` with a registered scheme."""
    CLASSIFIER_INITS.build(scheme)(linear, activation)
