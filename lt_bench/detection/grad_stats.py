"""Mean positive gradient per category during training (GOL, Figure 7): an opt-in collector.

For each foreground proposal i with label c, the box-classification loss's gradient with respect
to that proposal's own logit, ``g_i = d loss_cls / d z[i, c]``, is accumulated per category:
``count[c]`` (foreground proposals of c) and ``sum[c]`` (the sum of ``|g_i|``; also
``signed_sum[c]``, the sum of ``g_i``).  ``mean = sum / count`` is the curve of the paper.

What the gradient is of, precisely: ``loss_cls`` is the value the plugin's loss returns to mmdet,
i.e. ``loss_weight * sum_i w_i * loss_i / avg_factor`` with mmdet's BBoxHead arguments (its
``avg_factor`` is the number of proposals with a positive label weight, the whole sampled batch
of the process: 512 per image for the paper's detectors, so one proposal's gradient carries a
1/avg_factor).  Whatever multiplies ``loss_cls`` after the loss returns is divided out: a cascade
stage's loss weight, the AMP loss scale, the 1/accumulative_counts of gradient accumulation, the
sum with the other losses.  The collector reads that factor from the gradient reaching the loss
value and divides by it, so the numbers are comparable across such settings.

The magnitude, not the signed value: a positive's gradient is never positive with these losses
(-exp(-z) for Gumbel, sigmoid(z) - 1, softmax p - 1; 0 outside Gumbel's clamp), so ``|g|`` is
``-g`` and the paper plots magnitudes on a log scale.  ``signed_sum`` is kept to show it
(``signed_sum == -sum``).

Zero cost when off: a loss calls ``self._watch(loss, cls_score, labels, weight)`` (base.py), which
is one attribute test until a collector is attached.  When attached, two tensor hooks per call
(no host sync): the accumulators are float64 tensors on the model's device, read once at the end
(``summary``).  Gradients and losses are untouched (the hooks return None).

torch only: the mmengine hook that attaches collectors to a detector and writes the file is
``grad_hook.PositiveGradientHook``; ``positive_gradient_hook`` gives its config entry.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from lt_bench.errors import ConfigError

KIND = "lt_bench.positive_gradients"
DEFINITION = ("per category c, over the foreground proposals i labelled c: |d loss_cls / d z[i, c]|, "
              "loss_cls = loss_weight * sum_i w_i loss_i / avg_factor as returned by the loss to mmdet "
              "(factors applied after it, such as cascade stage weights, the AMP loss scale or gradient "
              "accumulation, divided out); mean = sum / count")


def positive_gradient_hook(out_file: str) -> dict:
    """The ``custom_hooks`` entry of an mmdet config that writes the per-category positive
    gradients of the box classifier's loss to ``out_file`` at the end of training (relative:
    to the work_dir).  The config must import ``lt_bench.detection.registry`` (all do)."""
    return dict(type="PositiveGradientHook", out_file=str(out_file))


class PositiveGradientCollector:
    """Per-category sums of the positive-logit gradient of one box-classification loss module.

    ``attach(loss)`` makes the loss report every forward (``_watch``); ``detach(loss)`` stops it.
    The accumulators are float64 tensors on ``device``: ``count``, ``sum`` (|g|), ``signed_sum``,
    and ``skipped`` (positives whose gradient could not be measured: non-finite, as in an AMP
    step that overflows and is skipped, or a zero gradient reaching the loss value).
    """

    def __init__(self, num_classes: int, device: torch.device | str | None = None):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = num_classes
        zeros = dict(dtype=torch.float64, device=device)
        self.count = torch.zeros(num_classes, **zeros)
        self.sum = torch.zeros(num_classes, **zeros)
        self.signed_sum = torch.zeros(num_classes, **zeros)
        self.skipped = torch.zeros((), **zeros)
        self.calls = 0          # forwards watched (a host-side count)
        self.loss_type = self.activation = self.settings = None

    # ------------------------------------------------------------------ wiring to a loss module
    def attach(self, loss: nn.Module) -> "PositiveGradientCollector":
        if not callable(getattr(loss, "_watch", None)):
            raise ConfigError(f"{type(loss).__name__} cannot report its gradients: the positive-gradient "
                              "statistics need one of lt_bench's box-classification losses "
                              "(ActivationCrossEntropyLoss, EQLLoss, DropLoss)")
        if loss.num_classes != self.num_classes:
            raise ConfigError(f"{type(loss).__name__} has num_classes={loss.num_classes}, the collector "
                              f"{self.num_classes}")
        current = getattr(loss, "_grad_collector", None)
        if current is not None and current is not self:
            raise ConfigError(f"{type(loss).__name__} already has a gradient collector attached")
        loss._grad_collector = self     # a plain attribute (not a submodule): no state_dict entry
        self.loss_type = type(loss).__name__
        self.activation = getattr(getattr(loss, "activation", None), "name", None)
        self.settings = {"activation": repr(getattr(loss, "activation", None)),
                         "loss_weight": getattr(loss, "loss_weight", None)}
        return self

    def detach(self, loss: nn.Module) -> None:
        if getattr(loss, "_grad_collector", None) is self:
            del loss._grad_collector    # back to the class default (None)

    # ------------------------------------------------------------------ called by the loss
    def watch(self, loss: Tensor, cls_score: Tensor, labels: Tensor, weight: Tensor | None = None) -> None:
        """Register the hooks of one forward: on ``loss`` (the gradient reaching the loss value:
        the factor to divide out), then on ``cls_score`` (the accumulation)."""
        if not (torch.is_grad_enabled() and cls_score.requires_grad and loss.requires_grad):
            return
        self.calls += 1
        upstream: list[Tensor] = []
        labels, weight = labels.detach(), None if weight is None else weight.detach()

        def on_loss(grad: Tensor) -> None:
            upstream.append(grad.detach())

        def on_scores(grad: Tensor) -> None:
            # the hook on the loss value ran first (cls_score's gradient needs it); without it
            # (autograd.grad asked for cls_score alone) the gradient is taken as it comes
            self.add(grad, labels, weight, upstream[-1] if upstream else None)

        loss.register_hook(on_loss)
        cls_score.register_hook(on_scores)

    @torch.no_grad()
    def add(self, grad: Tensor, labels: Tensor, weight: Tensor | None = None, upstream: Tensor | None = None) -> None:
        """Accumulate the gradient ``grad`` [N, K >= C] of the watched loss's output with respect
        to the logits; ``upstream`` is the gradient that reached the loss value (a scalar, or one
        per proposal for reduction='none'), divided out.  No host sync."""
        device = self.sum.device
        grad = grad.detach().to(device=device, dtype=torch.float64)
        labels = labels.to(device)
        foreground = (labels >= 0) & (labels < self.num_classes)
        if weight is not None:
            foreground &= weight.to(device).reshape(-1) > 0
        index = torch.where(foreground, labels, torch.zeros_like(labels)).long()
        g = grad.gather(1, index[:, None]).squeeze(1)
        if upstream is not None:
            scale = upstream.to(device=device, dtype=torch.float64).reshape(-1)
            if scale.numel() not in (1, g.numel()):
                raise ConfigError(f"the loss value has {scale.numel()} elements for {g.numel()} proposals")
            measurable = scale != 0
            g = g / torch.where(measurable, scale, torch.ones_like(scale))
            foreground_ok = foreground & measurable & torch.isfinite(g)
        else:
            foreground_ok = foreground & torch.isfinite(g)
        keep = foreground_ok.to(torch.float64)
        g = torch.where(foreground_ok, g, torch.zeros_like(g))     # no 0 * inf
        self.count.index_add_(0, index, keep)
        self.sum.index_add_(0, index, g.abs())
        self.signed_sum.index_add_(0, index, g)
        self.skipped += (foreground & ~foreground_ok).sum()

    # ------------------------------------------------------------------ reading
    def all_reduce(self, reduce_sum: Callable[[Tensor], None]) -> None:
        """Sum the accumulators over processes with ``reduce_sum`` (in place, e.g.
        ``mmengine.dist.all_reduce``); every process must call it."""
        packed = torch.cat([self.count, self.sum, self.signed_sum, self.skipped.reshape(1)])
        reduce_sum(packed)
        c = self.num_classes
        self.count.copy_(packed[:c])
        self.sum.copy_(packed[c:2 * c])
        self.signed_sum.copy_(packed[2 * c:3 * c])
        self.skipped.copy_(packed[3 * c])

    def summary(self) -> dict:
        """The accumulators as plain numbers (one host sync): per category index, count, sum,
        signed_sum and mean (None where the category had no foreground proposal)."""
        count = self.count.cpu().tolist()
        total = self.sum.cpu().tolist()
        return {"loss": self.loss_type, "activation": self.activation, "settings": self.settings,
                "num_classes": self.num_classes,
                "forwards": self.calls, "skipped": int(self.skipped.item()),
                "count": [int(n) for n in count], "sum": total, "signed_sum": self.signed_sum.cpu().tolist(),
                "mean": [s / n if n > 0 else None for s, n in zip(total, count)]}


def box_classification_losses(model: nn.Module) -> list[nn.Module]:
    """The box classifier's loss module of each stage of a two-stage detector
    (``roi_head.bbox_head.loss_cls``; a cascade's ``bbox_head`` is a list: one per stage)."""
    roi_head = getattr(model, "roi_head", None)
    heads = getattr(roi_head, "bbox_head", None)
    if heads is None:
        raise ConfigError(f"{type(model).__name__} has no roi_head.bbox_head: the positive-gradient statistics "
                          "are for two-stage detectors' box classifiers")
    heads = list(heads) if isinstance(heads, (nn.ModuleList, list, tuple)) else [heads]
    losses, seen = [], set()
    for stage, head in enumerate(heads):
        loss = getattr(head, "loss_cls", None)
        if loss is None:
            raise ConfigError(f"roi_head.bbox_head[{stage}] ({type(head).__name__}) has no loss_cls")
        if id(loss) not in seen:     # one module shared by several heads counts once
            seen.add(id(loss))
            losses.append(loss)
    return losses


def pooled(stages: list[dict]) -> dict:
    """Stages summed: counts and sums added, the mean over every (stage, proposal) pair."""
    if len({s["num_classes"] for s in stages}) != 1:
        raise ConfigError(f"stages with different numbers of classes: {[s['num_classes'] for s in stages]}")
    count = [sum(s["count"][c] for s in stages) for c in range(stages[0]["num_classes"])]
    total = [sum(s["sum"][c] for s in stages) for c in range(len(count))]
    signed = [sum(s["signed_sum"][c] for s in stages) for c in range(len(count))]
    return {"count": count, "sum": total, "signed_sum": signed,
            "mean": [t / n if n > 0 else None for t, n in zip(total, count)]}
