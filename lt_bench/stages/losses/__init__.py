"""Stage-1 losses: what the backbone and classifier are trained with.

Each loss is one module here: a class registered in ``STAGE1_LOSSES`` with its typed recipe
(``Settings``, a ``Stage1Recipe`` subclass; Hydra's ConfigStore holds it as
``schema/stage1/<name>``, and ``configs/stage1/<name>.yaml`` holds the published values:
``stage1=<name>``).  A loss is built with its settings, the stage-1 activation (the scores it is
evaluated with) and the training-set class counts, which the field's long-tailed losses use.
Besides ``__call__`` it may shape the model before training (``prepare``: a cosine classifier,
an initialisation) and change with the epoch (``set_epoch``: deferred re-weighting).
These modules stay import-light (torch is imported inside methods), so that a config is
checked before torch loads.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from lt_bench.registries import STAGE1_LOSSES
from lt_bench.stages.recipes import Stage1Recipe

if TYPE_CHECKING:
    from torch import Tensor

    from lt_bench.activations import Activation
    from lt_bench.models import LTClassifier


class Stage1Loss:
    """A registered stage-1 loss: ``loss(logits, labels)`` -> a scalar, computed in float32."""

    Settings: type[Stage1Recipe] = Stage1Recipe
    name: str = ""
    activations: tuple[str, ...] = ("softmax",)   # the stage-1 activations it is defined for
    one_stage: bool = False    # its classifier is not a plain linear layer: no stage 2 after it

    def __init__(self, settings, activation: "Activation", train_counts: list[int]):
        self.settings, self.activation, self.train_counts = settings, activation, list(train_counts)
        self.epoch = 0

    @classmethod
    def check(cls, settings) -> None:
        """Checks of the settings before any data is read (no torch); ConfigError on a bad value."""
        from lt_bench.errors import ConfigError
        if settings.activation not in cls.activations:
            raise ConfigError(f"stage1={cls.name} is defined for stage1.activation="
                              f"{'|'.join(cls.activations)}, got {settings.activation!r}")

    def prepare(self, model: "LTClassifier") -> None:
        """Shape the freshly built model before training (default: nothing)."""

    def set_epoch(self, epoch: int) -> None:
        """Called before each training epoch (0-based), also after a resume."""
        self.epoch = epoch

    def __call__(self, logits: "Tensor", labels: "Tensor") -> "Tensor":
        raise NotImplementedError

    @property
    def method(self) -> str:
        """The record's (and the leaderboard's) method name."""
        return self.name

    def details(self) -> dict:
        """What the record says about the loss (its name and settings)."""
        return {"stage1_loss": self.name}

    # helpers of the field's re-weighting losses
    def scaled_epoch(self, epoch: Optional[float]) -> Optional[float]:
        """An epoch of the recipe's ``reference_epochs``-long schedule, scaled to ``epochs``
        (as the lr milestones are)."""
        if epoch is None:
            return None
        s = self.settings
        return epoch * s.epochs / (s.reference_epochs or s.epochs)


def build_stage1_loss(settings, activation: "Activation", train_counts: list[int]) -> Stage1Loss:
    """The loss ``settings.loss`` names, holding its settings (the composed ``stage1`` node)."""
    return STAGE1_LOSSES.build(settings.loss, settings, activation, train_counts)
