"""Registers the suite's losses, classifier initialiser and LVIS metric in mmdet's registries, and
its safe checkpoint loader as mmengine's loader of local files.

mmengine imports this module through ``custom_imports = dict(imports=['lt_bench.detection.registry'])``
in the detection configs, after which they name every loss of ``DETECTION_LOSSES`` by its class
(``ActivationCrossEntropyLoss``, ``EQLLoss``, ``DropLoss``, ...), the ``ActivationClassifierInit``
initialiser, ``FastLVISMetric`` and the ``PositiveGradientHook`` like any mmdet component.
"""
from __future__ import annotations

from mmengine.model.weight_init import BaseInit, _get_bases_name, update_init_info
from mmengine.registry import WEIGHT_INITIALIZERS   # the root: found from mmdet's scope and any other
from mmengine.runner.checkpoint import CheckpointLoader
from mmdet.registry import HOOKS, MODELS
from torch import nn

from lt_bench.activations import build_activation, init_classifier
from lt_bench.detection import fast_metric  # noqa: F401  (registers FastLVISMetric in mmdet's METRICS)
from lt_bench.detection.grad_hook import PositiveGradientHook
from lt_bench.detection.lvis_compat import patch_lvis
from lt_bench.detection.safe_checkpoint import load_checkpoint
from lt_bench.registries import DETECTION_LOSSES

for _name in DETECTION_LOSSES.names():   # every registered loss, under its class name (mmdet configs' type=)
    MODELS.register_module(module=DETECTION_LOSSES.get(_name).cls, force=True)
HOOKS.register_module(module=PositiveGradientHook, force=True)   # custom_hooks: grad_stats.positive_gradient_hook


@WEIGHT_INITIALIZERS.register_module(force=True)
class ActivationClassifierInit(BaseInit):
    """The box classifier's init for its activation (``lt_bench.activations.init_classifier``):
    scheme ``paper`` gives weights 0.001 and bias -2 for Gumbel, -6.5 for sigmoid and
    softmax (the paper's); ``prior`` gives every initial score 1/C.

    Like mmengine's own initialisers it touches only what it is pointed at: the module given
    with ``override=dict(name='fc_cls')`` (mmengine then sets ``wholemodule``), or the layer
    types named in ``layer``.  mmengine first applies each ``init_cfg`` entry to the whole
    head with ``wholemodule=False``; that pass must leave the shared fcs alone.
    """

    def __init__(self, activation: str = "gumbel", scheme: str = "paper",
                 activation_options: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.activation = build_activation(activation, **(activation_options or {}))
        self.scheme = scheme

    def __call__(self, module: nn.Module) -> None:
        def init(layer: nn.Module) -> None:
            if not isinstance(layer, (nn.Linear, nn.Conv2d)):   # a box head's fc_cls, a dense head's conv
                return
            if self.wholemodule or set(self.layer) & {type(layer).__name__, *_get_bases_name(layer)}:
                init_classifier(layer, self.activation, self.scheme)
        module.apply(init)
        if hasattr(module, "_params_init_info"):
            update_init_info(module, init_info=self._get_init_info())

    def _get_init_info(self) -> str:
        return f"{type(self).__name__}: activation={self.activation.name}, scheme={self.scheme}"


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_from_safe_local(filename: str, map_location=None) -> dict:
    """mmengine's loader of local checkpoint files (``load_from``, a backbone's ``Pretrained``
    file), replaced: ``torch.load`` under PyTorch's default refuses mmengine's own checkpoints
    (their message hub pickles mmengine classes), and allowing them would let any file run code.
    The safe loader reads the weights and ``meta`` (``lt_bench.detection.safe_checkpoint``) and
    refuses anything else, naming the file; what it returns is all a model load reads."""
    state, meta = load_checkpoint(filename)
    return {"state_dict": state, **({"meta": dict(meta)} if meta is not None else {})}


patch_lvis()   # mmdet's LVISMetric runs lvis.eval
