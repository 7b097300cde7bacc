"""Analyses of trained LVIS detectors, one ``lt-bench det-...`` command per module."""
