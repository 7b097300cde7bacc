"""``PositiveGradientHook``: the mean positive gradient per category (GOL's Figure 7) of an
mmdet training run, written as json at the end of training (``grad_stats.py`` says what is
measured; ``analysis/positive_gradients.py`` plots two runs).

Before training the hook attaches a ``PositiveGradientCollector`` to the box classifier's loss
of each stage (``roi_head.bbox_head.loss_cls``; a cascade has one per stage); after training it
sums the accumulators over the processes (all ranks), detaches, and rank 0 writes the file
atomically.  Stages are kept apart in ``stages`` and summed at the top level (``count``,
``sum``, ``mean``: every (stage, proposal) pair weighs the same), which for one stage is that
stage.  A resumed run collects from the iteration it resumed at (``start_iter``).
"""
from __future__ import annotations

from pathlib import Path

from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from lt_bench.detection.grad_stats import (DEFINITION, KIND, PositiveGradientCollector, box_classification_losses,
                                           pooled)
from lt_bench.fileio import atomic_write_json


class PositiveGradientHook(Hook):
    """Per-category |d loss_cls / d z_positive| over training, written to ``out_file`` (a path
    relative to the run's work_dir, or absolute)."""

    priority = "NORMAL"

    def __init__(self, out_file: str = "grad_stats.json"):
        self.out_file = str(out_file)
        self._losses: list = []
        self._collectors: list[PositiveGradientCollector] = []
        self._iterations = 0
        self._start_iter = 0
        self._classes: list[str] | None = None

    def before_train(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        device = next(model.parameters()).device
        self._losses = box_classification_losses(model)
        self._collectors = [PositiveGradientCollector(int(loss.num_classes), device).attach(loss)
                            for loss in self._losses]
        self._start_iter, self._iterations = int(runner.iter), 0
        try:
            classes = runner.train_dataloader.dataset.metainfo.get("classes")
            self._classes = [str(name) for name in classes] if classes is not None else None
        except (AttributeError, TypeError):
            self._classes = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self._iterations += 1

    def after_train(self, runner) -> None:
        for collector in self._collectors:      # a collective: every rank takes part
            collector.all_reduce(lambda t: all_reduce(t, op="sum"))
        for loss, collector in zip(self._losses, self._collectors):
            collector.detach(loss)
        if is_main_process() and self._collectors:
            path = Path(self.out_file)
            if not path.is_absolute():
                path = Path(runner.work_dir) / path
            atomic_write_json(path, self.report(int(runner.iter), get_world_size()))
            runner.logger.info(f"positive gradients per category -> {path}")

    def report(self, end_iter: int, world_size: int) -> dict:
        stages = [collector.summary() for collector in self._collectors]
        losses = sorted({str(s["loss"]) for s in stages})
        activations = sorted({str(s["activation"]) for s in stages})
        return {"kind": KIND, "version": 1, "definition": DEFINITION, "gradient": "magnitude",
                "loss": "|".join(losses), "activation": "|".join(activations),
                "num_classes": stages[0]["num_classes"], "classes": self._classes,
                "iterations": self._iterations, "start_iter": self._start_iter, "end_iter": end_iter,
                "world_size": world_size, "num_stages": len(stages),
                "skipped": sum(s["skipped"] for s in stages), **pooled(stages),
                **({"stages": stages} if len(stages) > 1 else {})}
