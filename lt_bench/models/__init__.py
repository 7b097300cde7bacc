"""Models: backbone (feature extractor) + linear classifier, by name."""
from lt_bench.models.factory import (LOCAL_BACKBONES, LTClassifier, build_model, count_parameters,
                                     is_known_model, parameter_checksum)

__all__ = ["LOCAL_BACKBONES", "LTClassifier", "build_model", "count_parameters", "is_known_model",
           "parameter_checksum"]
