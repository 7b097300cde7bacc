"""Stage 1: backbone and linear classifier trained together with a registered stage-1 loss
(the paper's: softmax cross-entropy)."""
from __future__ import annotations

from typing import Callable

from lt_bench.data import DataBundle
from lt_bench.distributed import DistContext
from lt_bench.models import LTClassifier
from lt_bench.run_folder import RunFolder
from lt_bench.stages.loop import StageJob, TrainOptions, fit
from lt_bench.stages.losses import Stage1Loss


def train_stage1(model: LTClassifier, bundle: DataBundle, loss: Stage1Loss, recipe, ctx: DistContext,
                 opts: TrainOptions, folder: RunFolder, meta: dict,
                 evaluate: Callable[[], dict] | None = None) -> dict:
    job = StageJob(
        name="stage1", index=1, model=model, trainable=model, dataset=bundle.train,
        loss_fn=loss, recipe=recipe, checkpoint_path=folder.checkpoint(1), log_dir=folder.tensorboard(1),
        train_mode=model.train, evaluate=evaluate, meta=meta,
    )
    return fit(job, ctx, opts)
