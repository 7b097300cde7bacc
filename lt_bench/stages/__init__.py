"""Decoupled training: stage 1 (representation + classifier), stage 2 (classifier only).

``recipes`` and ``methods/`` are import-light (typed recipes, registered before Hydra composes
the config); ``loop``, ``stage1``, ``stage2`` and ``classifier_ops`` hold the tensor work.
"""
