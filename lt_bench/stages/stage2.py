"""Stage 2: the backbone frozen (BatchNorm in eval mode), the classifier rebalanced by a
stage-2 method: retrained with the chosen activation (Gumbel by default, as GOL), or one of
the decoupling baselines (cRT, LWS, tau-normalisation, logit adjustment; see methods.py)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lt_bench.activations import Activation, build_activation, init_classifier
from lt_bench.checkpoint import load_checkpoint, save_checkpoint
from lt_bench.data import DataBundle
from lt_bench.distributed import DistContext
from lt_bench.errors import CheckpointError, ConfigError
from lt_bench.evaluation import run_inference
from lt_bench.models import LTClassifier
from lt_bench.stages.feature_cache import cached_features
from lt_bench.stages.loop import AMP_DTYPES, StageJob, TrainOptions, fit, is_complete
from lt_bench.stages.methods import ScaledLinear, adjust_logits, choose_tau, tau_normalise


@dataclass
class Stage2Outcome:
    progress: dict
    activation: Activation      # scores the retrained classifier is evaluated with
    method: str                 # the record's method: the activation (retrain) or the baseline
    details: dict = field(default_factory=dict)


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
                 evaluate_with: Callable[[Activation], Callable[[], dict]] | None = None,
                 eval_batch_size: int = 256) -> Stage2Outcome:
    """``activation``: what ``retrain`` uses; the baselines use softmax."""
    freeze_backbone(model)
    checkpoint_path = out_dir / "checkpoints" / "stage2.pt"
    if recipe.method in ("tau_norm", "logit_adjust"):
        return _post_hoc(model, bundle, recipe, ctx, opts, checkpoint_path, meta, eval_batch_size)

    sampler = recipe.sampler
    if recipe.method != "retrain":                       # crt, lws: as Kang et al.
        activation, sampler = build_activation("softmax"), "class_balanced"
    if recipe.method == "crt" or (recipe.method == "retrain" and recipe.init == "reinit"):
        init_classifier(model.classifier, activation, recipe.reinit_scheme)
    if recipe.method == "lws":
        model.classifier = ScaledLinear.scaling(model.classifier)
    scale = loss_scale(activation, recipe.loss_scale, model.num_classes)

    def loss_fn(logits, labels):
        return activation.loss(logits, labels) * scale

    def train_mode():
        model.eval()               # frozen BatchNorm statistics
        model.classifier.train()

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
        loss_fn=loss_fn, recipe=recipe, sampler=sampler,
        checkpoint_path=checkpoint_path, log_dir=out_dir / "tensorboard" / "stage2",
        train_mode=train_mode, frozen=frozen, meta=meta,
        evaluate=evaluate_with(activation) if evaluate_with else None,
    )
    progress = fit(job, ctx, opts)
    method = activation.name if recipe.method == "retrain" else recipe.method
    return Stage2Outcome(progress, activation, method, {"stage2_method": recipe.method, "sampler": sampler})


def _post_hoc(model: LTClassifier, bundle: DataBundle, recipe, ctx: DistContext, opts: TrainOptions,
              checkpoint_path: Path, meta: dict, eval_batch_size: int) -> Stage2Outcome:
    """tau-normalisation or logit adjustment of the stage-1 classifier: no training."""
    softmax = build_activation("softmax")
    progress = {"epochs_done": 0, "complete": True, "history": [], "nonfinite_skipped": 0, "train_seconds": 0.0}
    if opts.resume and checkpoint_path.exists():     # already adjusted: never adjust twice
        ckpt = load_checkpoint(checkpoint_path, map_location=ctx.device)
        if ckpt.get("config_hash") != meta.get("config_hash"):
            raise CheckpointError(f"{checkpoint_path} was written by a different configuration")
        model.load_state_dict(ckpt["model"])
        return Stage2Outcome(progress, softmax, recipe.method, ckpt["details"])

    if recipe.method == "tau_norm":
        tau, details = recipe.tau, {}
        if tau is None:
            if bundle.val is None:
                raise ConfigError("tau_norm chooses tau on a val split, which this task has not: "
                                  "give stage2.tau=VALUE")
            model.eval()
            features, labels = run_inference(model.backbone, bundle.val, ctx, batch_size=eval_batch_size,
                                             num_workers=opts.num_workers, amp_dtype=AMP_DTYPES[opts.amp],
                                             progress=opts.progress, desc="tau_norm val features")
            tau, scores = choose_tau(features, labels, copy.deepcopy(model.classifier).cpu().float())
            details["val_balanced_top1_by_tau"] = {str(t): round(100 * v, 4) for t, v in scores.items()}
        tau_normalise(model.classifier, float(tau))
    else:
        tau, details = (1.0 if recipe.tau is None else float(recipe.tau)), {}
        adjust_logits(model.classifier, bundle.train_counts, tau)
    details.update(stage2_method=recipe.method, tau=float(tau))
    if ctx.is_main:
        save_checkpoint(checkpoint_path, {**meta, "stage": "stage2", "model": model.state_dict(),
                                          "progress": progress, "details": details})
    ctx.barrier()
    return Stage2Outcome(progress, softmax, recipe.method, details)
