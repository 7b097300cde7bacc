"""Every extension point of lt_bench, in one place: the registries and where their entries live.

An extension is one class (or function) in one module of its registry's sources, registered
with ``@<REGISTRY>.register("name")``; nothing else lists it.  This module is import-light, so
that a config is checked against these names before torch is imported (``lt_bench.validate``).

| registry | chosen by | sources |
| --- | --- | --- |
| ACTIVATIONS | stage1.activation, stage2.activation, activation (detection) | activations.py |
| CLASSIFIER_INITS | stage2.reinit_scheme, detection.classifier_init | activations.py |
| STAGE1_LOSSES | stage1.loss | stages/losses/ |
| STAGE2_METHODS | stage2=<method> | stages/methods/ |
| SAMPLERS | stage2.sampler | data/samplers.py |
| SCHEDULES | stage1.schedule, stage2.schedule | stages/schedule.py |
| AMP_MODES | train.amp | stages/precision.py |
| DATASETS | task.dataset | data/ |
| TRANSFORMS | task.transform | data/transforms.py |
| IMAGE_DECODERS | data.decoder | data/decoders.py |
| DETECTION_LOSSES | detector.loss | detection/losses/ |
"""
from __future__ import annotations

from lt_bench.registry import Registry

ACTIVATIONS = Registry("activation", "ACTIVATIONS", ("lt_bench.activations",))
CLASSIFIER_INITS = Registry("classifier init", "CLASSIFIER_INITS", ("lt_bench.activations",))
STAGE1_LOSSES = Registry("stage1.loss", "STAGE1_LOSSES", ("lt_bench.stages.losses",))
STAGE2_METHODS = Registry("stage-2 method", "STAGE2_METHODS", ("lt_bench.stages.methods",))
SAMPLERS = Registry("sampler", "SAMPLERS", ("lt_bench.data.samplers",))
SCHEDULES = Registry("schedule", "SCHEDULES", ("lt_bench.stages.schedule",))
AMP_MODES = Registry("train.amp", "AMP_MODES", ("lt_bench.stages.precision",))
DATASETS = Registry("task.dataset", "DATASETS", ("lt_bench.data",))
TRANSFORMS = Registry("task.transform", "TRANSFORMS", ("lt_bench.data.transforms",))
IMAGE_DECODERS = Registry("data.decoder", "IMAGE_DECODERS", ("lt_bench.data.decoders",))
DETECTION_LOSSES = Registry("detector.loss", "DETECTION_LOSSES", ("lt_bench.detection.losses",))

ALL = (ACTIVATIONS, CLASSIFIER_INITS, STAGE1_LOSSES, STAGE2_METHODS, SAMPLERS, SCHEDULES, AMP_MODES, DATASETS,
       TRANSFORMS, IMAGE_DECODERS, DETECTION_LOSSES)
