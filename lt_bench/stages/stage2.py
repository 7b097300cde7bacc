"""Stage 2: the backbone frozen (BatchNorm in eval mode), the classifier rebalanced by the
registered stage-2 method the config names (``stage2=<method>``; ``stages/methods/``).

``Stage2`` is the toolbox a method's ``run`` works with: activations with the run's options,
re-initialising or wrapping the classifier, training it with a loss and a sampler (through
the shared loop), and post-hoc adjustment with its checkpoint and resume rule.
"""
from __future__ import annotations

from typing import Callable

from lt_bench.activations import Activation, init_classifier
from lt_bench.checkpoint import load_for_resume, save_checkpoint
from lt_bench.data import DataBundle
from lt_bench.distributed import DistContext
from lt_bench.evaluation import run_inference
from lt_bench.models import LTClassifier
from lt_bench.run_folder import RunFolder
from lt_bench.stages.feature_cache import cached_features
from lt_bench.stages.loop import StageJob, TrainOptions, empty_progress, fit, is_complete
from lt_bench.stages.methods import Stage2Outcome, TrainedRecipe, build_method
from lt_bench.stages.precision import amp_dtype


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


class Stage2:
    """What a stage-2 method can do with the model whose backbone is frozen."""

    def __init__(self, model: LTClassifier, bundle: DataBundle, recipe, ctx: DistContext, opts: TrainOptions,
                 folder: RunFolder, meta: dict, activation_of: Callable[[str], Activation],
                 evaluate_with: Callable[[Activation], Callable[[], dict]] | None = None,
                 eval_batch_size: int = 256):
        self.model, self.bundle, self.recipe, self.ctx, self.opts = model, bundle, recipe, ctx, opts
        self.folder, self.meta, self.evaluate_with = folder, meta, evaluate_with
        self.eval_batch_size = eval_batch_size
        self._activation_of = activation_of
        self.checkpoint_path = folder.checkpoint(2)

    def activation(self, name: str) -> Activation:
        """A registered activation with the run's options (``activations.<name>``)."""
        return self._activation_of(name)

    def reinit_classifier(self, activation: Activation, scheme: str) -> None:
        init_classifier(self.model.classifier, activation, scheme)

    def replace_classifier(self, wrap: Callable) -> None:
        self.model.classifier = wrap(self.model.classifier)

    def train_classifier(self, activation: Activation, sampler: str, scale_setting) -> dict:
        """Train the classifier with ``activation``'s loss under ``sampler``; the progress record."""
        model, opts = self.model, self.opts
        scale = loss_scale(activation, scale_setting, model.num_classes)

        def loss_fn(logits, labels):
            return activation.loss(logits, labels) * scale

        bn_train = self.recipe.bn == "train"

        def train_mode():
            model.train(bn_train)      # train: BatchNorm statistics follow the stage-2 batches
            model.classifier.train()

        if self.recipe.cache_features and not (opts.resume and is_complete(self.checkpoint_path)):
            dataset = cached_features(model.backbone, self.bundle.train_plain, self.bundle.train.targets, self.ctx,
                                      self.folder.feature_cache, batch_size=self.eval_batch_size,
                                      num_workers=opts.num_workers, amp_dtype=amp_dtype(opts.amp),
                                      progress=opts.progress, channels_last=opts.channels_last)
            frozen = None
        else:
            dataset, frozen = self.bundle.train, model.backbone
        job = StageJob(
            name="stage2", index=2, model=model, trainable=model.classifier, dataset=dataset,
            loss_fn=loss_fn, recipe=self.recipe, sampler=sampler,
            checkpoint_path=self.checkpoint_path, log_dir=self.folder.tensorboard(2),
            train_mode=train_mode, frozen=frozen, meta=self.meta,
            evaluate=self.evaluate_with(activation) if self.evaluate_with else None,
        )
        return fit(job, self.ctx, opts)

    def val_features(self, desc: str):
        """Backbone features and labels of the val split (post-hoc methods choose on them)."""
        self.model.eval()
        return run_inference(self.model.backbone, self.bundle.val, self.ctx, batch_size=self.eval_batch_size,
                             num_workers=self.opts.num_workers, amp_dtype=amp_dtype(self.opts.amp),
                             progress=self.opts.progress, desc=desc)

    def post_hoc(self, method: str, adjust: Callable[["Stage2"], dict]) -> Stage2Outcome:
        """Adjust the stage-1 classifier without training (``adjust`` returns the details for
        the record) and checkpoint it; a resumed run loads the adjusted classifier instead of
        adjusting twice."""
        softmax = self.activation("softmax")
        progress = {**empty_progress(), "complete": True}
        if self.opts.resume and self.checkpoint_path.exists():
            ckpt = load_for_resume(self.checkpoint_path, self.meta.get("config_hash"), self.ctx.device)
            self.model.load_state_dict(ckpt["model"])
            return Stage2Outcome(progress, softmax, method, ckpt["details"])
        details = {"stage2_method": method, **adjust(self)}
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, {**self.meta, "stage": "stage2", "model": self.model.state_dict(),
                                                   "progress": progress, "details": details})
        self.ctx.barrier()
        return Stage2Outcome(progress, softmax, method, details)


def train_stage2(model: LTClassifier, bundle: DataBundle, recipe, ctx: DistContext, opts: TrainOptions,
                 folder: RunFolder, meta: dict, activation_of: Callable[[str], Activation],
                 evaluate_with: Callable[[Activation], Callable[[], dict]] | None = None,
                 eval_batch_size: int = 256) -> Stage2Outcome:
    """Freeze the backbone and run the method ``recipe.method`` names."""
    freeze_backbone(model)
    stage = Stage2(model, bundle, recipe, ctx, opts, folder, meta, activation_of, evaluate_with, eval_batch_size)
    method = build_method(recipe)
    outcome = method.run(stage)
    if issubclass(method.Settings, TrainedRecipe):
        outcome.details.update(bn=recipe.bn, lr=float(recipe.lr), epochs_recipe=int(recipe.epochs),
                               batch_size=int(recipe.batch_size), schedule=recipe.schedule,
                               recipe_source=recipe.source)
    return outcome
