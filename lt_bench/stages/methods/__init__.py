"""Stage-2 methods: how the classifier on the frozen backbone is rebalanced.

Each method is one module here: a class registered in ``STAGE2_METHODS`` with its typed recipe
(``Settings``, a dataclass; Hydra's ConfigStore holds it as ``schema/stage2/<name>``) and
``run(stage)``, which says what to do with the stage-2 toolbox (``lt_bench.stages.stage2.Stage2``:
train the classifier with a loss and sampler, re-initialise or wrap it, adjust it post hoc).
The recipe's published values are in ``configs/stage2/<name>.yaml`` (``stage2=<name>``).
These modules stay import-light: tensor helpers are imported inside ``run``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from omegaconf import MISSING

from lt_bench.registries import STAGE2_METHODS
from lt_bench.stages.recipes import StageRecipe

if TYPE_CHECKING:
    from lt_bench.activations import Activation
    from lt_bench.stages.stage2 import Stage2



@dataclass
class Stage2Recipe(StageRecipe):
    """What every stage-2 method has: its name and the classifier training recipe (GOL's:
    15 epochs, lr 1e-4, constant); post-hoc methods train nothing but keep the keys so that
    a task file can set them for every method."""

    method: str = MISSING             # the STAGE2_METHODS name (set by the method's schema)
    epochs: int = 15
    lr: float = 1.0e-4
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    reference_epochs: Optional[float] = "${.epochs}"   # type: ignore[assignment]
    # BatchNorm of the frozen backbone while the classifier trains: train (the running statistics
    # follow the stage-2 batches, as the GOL authors' and Kang et al.'s code, whose whole model is
    # in train mode) | frozen (eval mode: the stage-1 statistics)
    bn: str = "train"
    # true: backbone features computed once (one forward pass), then every epoch trains on them:
    # much faster, but without data augmentation in stage 2 (and needs bn=frozen)
    cache_features: bool = False


@dataclass
class TrainedRecipe(Stage2Recipe):
    """Methods that train the classifier."""

    sampler: str = "random"           # a SAMPLERS name: random | class_balanced | sqrt
    # The authors average BCE over batch x classes (PyTorch's default); our binary losses sum
    # over classes, C times more.  per_class divides binary losses by C, so the recipe's lr and
    # weight decay give exactly the authors' SGD step.  A number multiplies the loss instead.
    loss_scale: Any = "per_class"


@dataclass
class Stage2Outcome:
    progress: dict
    activation: "Activation"   # scores the adjusted classifier is evaluated with
    method: str                # the record's method: the activation (retrain) or the method's name
    details: dict = field(default_factory=dict)


class Stage2Method:
    """A registered stage-2 method; ``Settings`` is its typed recipe."""

    Settings: type[Stage2Recipe] = Stage2Recipe
    name: str = ""

    def __init__(self, settings):
        self.settings = settings

    @classmethod
    def check(cls, settings, task) -> None:
        """Checks of the settings against the task, before any data is read (no torch)."""

    def run(self, stage: "Stage2") -> Stage2Outcome:
        raise NotImplementedError


def build_method(settings) -> Stage2Method:
    """The method ``settings.method`` names, holding its settings (the composed ``stage2`` node)."""
    return STAGE2_METHODS.build(settings.method, settings)
