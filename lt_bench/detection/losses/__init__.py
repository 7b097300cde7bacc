"""Box-classification losses for mmdet's bbox heads, built on ``lt_bench.activations``: one
module each, a class registered in ``DETECTION_LOSSES`` (``detector.loss`` names it;
``lt_bench.detection.registry`` registers every one in mmdet's MODELS under its class name).

Each follows mmdet's loss interface and the hooks mmdet's BBoxHead asks a loss for
(``base.py``).  No mmdet import here: the loss math is testable without the detection extra.
"""
from lt_bench.detection.losses.acsl import ACSLLoss
from lt_bench.detection.losses.activation_ce import ActivationCrossEntropyLoss
from lt_bench.detection.losses.drop import DropLoss
from lt_bench.detection.losses.eql import EQLLoss
from lt_bench.detection.losses.federated import FederatedLoss
from lt_bench.detection.losses.focal import ActivationFocalLoss

__all__ = ["ACSLLoss", "ActivationCrossEntropyLoss", "ActivationFocalLoss", "DropLoss", "EQLLoss", "FederatedLoss"]
