"""Stage 1: backbone and linear classifier trained together (softmax cross-entropy)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from lt_bench.activations import Activation
from lt_bench.data import DataBundle
from lt_bench.distributed import DistContext
from lt_bench.models import LTClassifier
from lt_bench.stages.loop import StageJob, TrainOptions, fit


def train_stage1(model: LTClassifier, bundle: DataBundle, activation: Activation, recipe, ctx: DistContext,
                 opts: TrainOptions, out_dir: Path, meta: dict,
                 evaluate: Callable[[], dict] | None = None) -> dict:
    job = StageJob(
        name="stage1", index=1, model=model, trainable=model, dataset=bundle.train,
        loss_fn=activation.loss, recipe=recipe,
        checkpoint_path=out_dir / "checkpoints" / "stage1.pt", log_dir=out_dir / "tensorboard" / "stage1",
        train_mode=model.train, evaluate=evaluate, meta=meta,
    )
    return fit(job, ctx, opts)
