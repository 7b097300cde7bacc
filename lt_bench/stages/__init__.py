"""Decoupled training: stage 1 (representation + classifier), stage 2 (classifier only)."""
from lt_bench.stages.loop import StageJob, TrainOptions, fit
from lt_bench.stages.stage1 import train_stage1
from lt_bench.stages.stage2 import train_stage2

__all__ = ["StageJob", "TrainOptions", "fit", "train_stage1", "train_stage2"]
