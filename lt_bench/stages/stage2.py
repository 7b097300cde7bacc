"""Stage 2: the backbone frozen (BatchNorm in eval mode), only the classifier retrained
with the chosen activation (Gumbel by default, as GOL)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from lt_bench.activations import Activation, init_classifier
from lt_bench.data import DataBundle
from lt_bench.distributed import DistContext
from lt_bench.models import LTClassifier
from lt_bench.stages.feature_cache import cached_features
from lt_bench.stages.loop import AMP_DTYPES, StageJob, TrainOptions, fit, is_complete


def loss_scale(activation: Activation, setting, num_classes: int) -> float:
    """Factor on the activation's loss.

    ``per_class`` reproduces the authors' step size: their BCE is PyTorch's default mean
    over batch x classes, ours sums over classes (mean over the batch), which is C times
    larger; dividing binary losses by C makes their learning rate (and weight decay) give
    exactly their SGD update.  Softmax cross-entropy is a per-sample mean in both.
    """
    if setting == "per_class":
        return 1.0 / num_classes if activation.binary else 1.0
    return float(setting)


def freeze_backbone(model: LTClassifier) -> None:
    for p in model.backbone.parameters():
        p.requires_grad_(False)


def train_stage2(model: LTClassifier, bundle: DataBundle, activation: Activation, recipe, ctx: DistContext,
                 opts: TrainOptions, out_dir: Path, meta: dict,
                 evaluate: Callable[[], dict] | None = None, eval_batch_size: int = 256) -> dict:
    freeze_backbone(model)
    if recipe.init == "reinit":
        init_classifier(model.classifier, activation, recipe.reinit_scheme)
    scale = loss_scale(activation, recipe.loss_scale, model.num_classes)

    def loss_fn(logits, labels):
        return activation.loss(logits, labels) * scale

    def train_mode():
        model.eval()               # frozen BatchNorm statistics
        model.classifier.train()

    checkpoint_path = out_dir / "checkpoints" / "stage2.pt"
    if recipe.cache_features and not (opts.resume and is_complete(checkpoint_path)):
        dataset = cached_features(model.backbone, bundle.train_plain, bundle.train.targets, ctx,
                                  out_dir / "cache", batch_size=eval_batch_size, num_workers=opts.num_workers,
                                  amp_dtype=AMP_DTYPES[opts.amp], progress=opts.progress,
                                  channels_last=opts.channels_last)
        frozen = None
    else:
        dataset, frozen = bundle.train, model.backbone
    job = StageJob(
        name="stage2", index=2, model=model, trainable=model.classifier, dataset=dataset,
        loss_fn=loss_fn, recipe=recipe,
        checkpoint_path=checkpoint_path, log_dir=out_dir / "tensorboard" / "stage2",
        train_mode=train_mode, frozen=frozen, evaluate=evaluate, meta=meta,
    )
    return fit(job, ctx, opts)
