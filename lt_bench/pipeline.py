"""The decoupled pipeline, in the order data flows:
config -> data -> model -> stage 1 -> evaluation -> stage 2 -> evaluation -> records -> plots."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf

from lt_bench import distributed
from lt_bench.activations import Activation, configured_activation
from lt_bench.checkpoint import load_checkpoint
from lt_bench.data import DataBundle, build_data
from lt_bench.distributed import DistContext
from lt_bench.errors import CheckpointError, ConfigError
from lt_bench.evaluation import compute_metrics, run_inference
from lt_bench.fileio import RunLock, atomic_write
from lt_bench.models import LTClassifier, build_model, parameter_checksum
from lt_bench.records import SCHEMA_VERSION, git_revision, upsert_record
from lt_bench.run_logs import METRICS_FILE, TRACKERS_FILE, RunLog, check_logger, open_run_log, run_hparams
from lt_bench.run_folder import RunFolder, accept_run_folder, config_hash, resolve_out_dir, run_files, training_hash
from lt_bench.seeding import seed_everything
from lt_bench.shots import SHOT_GROUPS, thresholds_of
from lt_bench.signals import TrainingInterrupted
from lt_bench.stages.loop import TrainOptions
from lt_bench.stages.losses import build_stage1_loss
from lt_bench.stages.precision import amp_dtype
from lt_bench.stages.stage1 import train_stage1
from lt_bench.stages.stage2 import train_stage2
from lt_bench.validate import check_batch_sizes, validate

log = logging.getLogger(__name__)
METRIC_KEYS = ("top1", "top5", *SHOT_GROUPS, "ece")


def _train_options(cfg: DictConfig) -> TrainOptions:
    return TrainOptions(seed=int(cfg.seed), amp=cfg.train.amp, channels_last=bool(cfg.train.channels_last),
                        skip_nonfinite=bool(cfg.train.skip_nonfinite), num_workers=int(cfg.data.num_workers),
                        persistent_workers=bool(cfg.data.persistent_workers),
                        prefetch_factor=int(cfg.data.prefetch_factor), progress=bool(cfg.progress),
                        resume=bool(cfg.resume), eval_every=int(cfg.eval.every_epochs),
                        eval_split=str(cfg.eval.split), compile=bool(cfg.train.get("compile", False)),
                        compile_backend=str(cfg.train.get("compile_backend", "inductor")))


def select_split(cfg: DictConfig, bundle: DataBundle) -> str | None:
    """The split that chooses the best epoch (``eval.select``), or None."""
    select = cfg.eval.select
    if select == "auto":
        return "val" if bundle.val is not None else "test"
    return None if select == "none" else select


def best_epoch(progress: dict, split: str | None) -> dict:
    """The best epoch of a stage's history (the first of equals), chosen on ``split``: its epoch
    and test metrics as best_*, and the split; {} when nothing was evaluated per epoch."""
    key = "select_top1" if split == "val" else "test_top1"
    history = [h for h in progress.get("history", []) if h.get(key) is not None]
    if split is None or not history:
        return {}
    best = max(history, key=lambda h: (h[key], -h["epoch"]))
    return {"best_epoch": best["epoch"], "best_select": split,
            **{f"best_{g}": best.get(f"test_{g}") for g in ("top1", *SHOT_GROUPS)}}


def evaluate(model: LTClassifier, bundle: DataBundle, activation: Activation, cfg: DictConfig,
             ctx: DistContext, split: str = "test") -> dict:
    was_training = model.training
    model.eval()
    data = bundle.val if split == "val" else bundle.test
    logits, labels = run_inference(model, data, ctx, batch_size=int(cfg.data.eval_batch_size),
                                   num_workers=int(cfg.data.num_workers), amp_dtype=amp_dtype(cfg.train.amp),
                                   channels_last=bool(cfg.train.channels_last), progress=bool(cfg.progress))
    model.train(was_training)
    many_above, few_below = thresholds_of(cfg)
    return compute_metrics(logits, labels, activation, bundle.train_counts, many_above=many_above,
                           few_below=few_below, ece_bins=int(cfg.eval.ece_bins))


def _check_stage1_checkpoint(cfg: DictConfig) -> dict:
    """Read the stage-1 checkpoint of a stage=2 run and check it fits, before any data is read."""
    path = cfg.stage1.checkpoint
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        what = ("a plain state dict (weights without lt_bench's metadata)"
                if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values())
                else f"a {type(ckpt).__name__} without a 'model' entry")
        raise CheckpointError(f"{path} is {what}: stage1.checkpoint needs the checkpoints/stage1.pt of an "
                              "lt_bench stage-1 run (weights from elsewhere: model.pretrained=FILE with stage=all)")
    if ckpt.get("stage") != "stage1":
        raise CheckpointError(f"{path} is a {ckpt.get('stage') or 'unknown'} checkpoint, not a stage-1 one: "
                              "stage1.checkpoint needs the checkpoints/stage1.pt of a run")
    for key, expected in (("num_classes", cfg.task.num_classes), ("model_name", cfg.model.name)):
        if ckpt.get(key) != expected:
            raise CheckpointError(f"{cfg.stage1.checkpoint} has {key}={ckpt.get(key)!r}, this run needs "
                                  f"{expected!r} (task {cfg.task.name}, model {cfg.model.name})")
    if not ckpt.get("progress", {}).get("complete", False):
        log.warning("%s is an unfinished stage-1 run (%s epochs); retraining its classifier anyway",
                    cfg.stage1.checkpoint, ckpt.get("progress", {}).get("epochs_done"))
    _check_model_state(cfg, path, ckpt["model"])
    return ckpt


def _check_model_state(cfg: DictConfig, path, state: dict) -> None:
    """The checkpoint's weights are exactly the model's (names and shapes), checked on a model
    built on the meta device (no memory, no data read yet)."""
    with torch.device("meta"):
        expected = build_model(cfg.model.name, int(cfg.task.num_classes), in_chans=int(cfg.task.in_chans),
                               pretrained=None).state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (model: {tuple(v.shape)})" for k, v in expected.items()
             if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape]
    wrong += [f"{k} is a {type(state[k]).__name__}" for k in expected if k in state
              and not isinstance(state[k], torch.Tensor)]
    if missing or unexpected or wrong:
        parts = [f"{len(items)} {what} (first: {', '.join(items[:3])})" for what, items in
                 (("missing", missing), ("unexpected", unexpected), ("wrong", wrong)) if items]
        raise CheckpointError(f"{path}: its model weights do not fit {cfg.model.name}: {'; '.join(parts)}")


def _record(cfg: DictConfig, bundle: DataBundle, stage: int, activation: Activation, metrics: dict,
            progress: dict, ctx: DistContext, checksums: list[float] | None) -> dict:
    record = {
        "schema": SCHEMA_VERSION,
        "task": cfg.task.name, "dataset": cfg.task.dataset,
        # fixed splits (ImageNet-LT, Places-LT): the split's own n_max / n_min
        "imbalance": (round(max(bundle.train_counts) / min(bundle.train_counts), 2) if cfg.task.fixed_split
                      else cfg.imbalance),
        "model": cfg.model.name, "stage": stage, "method": activation.name,
        "activation": repr(activation), "eval_split": bundle.eval_split,
        "gumbel_gradient": getattr(activation, "gradient", None),   # exact | authors (Gumbel only)
        **{k: metrics[k] for k in (*METRIC_KEYS, "ece_classwise", "ece_normalised", "nll", "brier", "ece_scores",
                                    "calibration_by_shot", "num_eval", "shot_classes", "shot_thresholds")},
        "num_train": len(bundle.train), "train_counts": bundle.train_counts,
        "per_class_top1": metrics["per_class_top1"],
        # setup_hash groups the seeds of one configuration; a stage-1 model does not depend on
        # the stage-2 settings, so its records group across them
        "seed": int(cfg.seed), "config_hash": config_hash(cfg),
        "setup_hash": config_hash(cfg, exclude=("seed",) if stage == 2 else ("seed", "stage2")),
        "git_rev": git_revision(), "world_size": ctx.world_size, "device": ctx.device.type,
        "epochs": progress["epochs_done"], "train_seconds": round(progress["train_seconds"], 3),
        "nonfinite_skipped": progress["nonfinite_skipped"],
        "torch": torch.__version__, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": {k: v for k, v in bundle.info.items() if k != "skipped_files"},
        "skipped_files": bundle.info.get("skipped_files", []),
        "pretrained": cfg.model.pretrained,
    }
    if checksums is not None:
        record["rank_param_checksums"] = checksums
    return record


def _write_plots(folder: RunFolder, cfg: DictConfig) -> list:
    """Analysis plots beside the records (the activation curves with the run's Gumbel options
    and number of classes); a plotting failure is reported, the run stands.  The paths written."""
    from lt_bench.activations import activation_options
    from lt_bench.plots import write_run_plots
    try:
        paths = write_run_plots(folder.root, num_classes=int(cfg.task.num_classes),
                                gumbel=activation_options(cfg, "gumbel"))
    except Exception as err:   # noqa: BLE001 - the records are written; say what failed
        log.warning("plots not written (%s: %s)", type(err).__name__, err)
        return []
    for path in paths:
        log.info("plot: %s", path)
    return paths


def _clear_run(folder: RunFolder) -> None:
    """``overwrite=true``: the run the folder held goes (records, checkpoints, cache, curves,
    plots, config), so that nothing of it mixes with the new one."""
    import shutil
    for path in (folder.results, folder.config, *(folder.root / name for name in
                                                  ("per_class_accuracy.png", "weight_norms.png", "activations.png",
                                                   METRICS_FILE, TRACKERS_FILE))):
        path.unlink(missing_ok=True)
    for path in (folder.checkpoints, folder.feature_cache, *(folder.root / name for name in
                                                             ("tensorboard", "wandb", "mlruns"))):
        if path.is_dir():
            shutil.rmtree(path)
    log.info("overwrite=true: removed the earlier run's records, checkpoints and curves in %s", folder.root)


def _save_config(cfg: DictConfig, folder: RunFolder) -> None:
    text = OmegaConf.to_yaml(cfg, resolve=True).encode()
    atomic_write(folder.config, lambda f: f.write(text))


def format_summary(records: list[dict]) -> str:
    """The run's records as a fixed-width table; each column is as wide as its longest entry
    (``logit_adjust``, ``balanced_softmax``, a long stage), so every row keeps the header's
    column positions.  A missing value (a shot group without classes) is '-'."""
    number = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
    cells = [["stage", "method", *METRIC_KEYS]]
    cells += [["-" if r.get("stage") is None else str(r["stage"]), str(r.get("method", "-")),
               *(number(r.get(k)) for k in METRIC_KEYS)] for r in records]
    widths = [max(6, *(len(row[0]) + 1 for row in cells)), max(10, *(len(row[1]) + 2 for row in cells)),
              *(max(8, *(len(row[i]) + 2 for row in cells)) for i in range(2, len(cells[0])))]
    lines = [f"{row[0]:<{widths[0]}}{row[1]:<{widths[1]}}" + "".join(f"{c:>{w}}" for c, w in zip(row[2:], widths[2:]))
             for row in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def run_training(cfg: DictConfig) -> list[dict]:
    """Validate, then run the configured stages; returns the records written to results.json."""
    validate(cfg)
    check_logger(cfg)                   # every rank: logger=wandb|mlflow without its package stops here
    stage1_ckpt = _check_stage1_checkpoint(cfg) if str(cfg.stage) == "2" else None
    ctx = distributed.setup(cfg.device, float(cfg.distributed.timeout_minutes))
    pipeline = None
    try:
        pipeline = Pipeline(cfg, ctx)
        return pipeline.run(stage1_ckpt)
    finally:
        if pipeline is not None:
            pipeline.lock.release()
        distributed.teardown(ctx)


class Pipeline:
    """One classification run on this rank, from its config to its records."""

    def __init__(self, cfg: DictConfig, ctx: DistContext):
        self.cfg, self.ctx = cfg, ctx
        self.folder = RunFolder(ctx.broadcast_object(str(resolve_out_dir(cfg))))
        self.opts = _train_options(cfg)
        self.meta = {"config_hash": training_hash(cfg), "num_classes": int(cfg.task.num_classes),
                     "model_name": cfg.model.name, "task": cfg.task.name}
        self.records: list[dict] = []
        self.lock = RunLock(self.folder.root)
        self.run_log: RunLog | None = None      # rank 0: metrics.csv, TensorBoard, trackers

    def run(self, stage1_ckpt: dict | None) -> list[dict]:
        mode = self._accept()
        self.opts = replace(self.opts, resume=mode == "resume")
        if self.ctx.is_main:
            if mode == "overwrite":
                _clear_run(self.folder)
            self.folder.root.mkdir(parents=True, exist_ok=True)
            _save_config(self.cfg, self.folder)
            self.run_log = open_run_log(self.cfg, self.folder.root, resume=mode == "resume",
                                        name=f"{self.cfg.task.name}/{self.folder.root.name}")
            self.opts = replace(self.opts, run_log=self.run_log)
        status = "failed"
        try:
            records = self._run(stage1_ckpt)
            status = "finished"
            return records
        except TrainingInterrupted:
            status = "interrupted"
            raise
        finally:
            if self.run_log is not None:
                self.run_log.close(status)

    def _run(self, stage1_ckpt: dict | None) -> list[dict]:
        cfg, ctx, started = self.cfg, self.ctx, time.perf_counter()
        check_batch_sizes(cfg, ctx.world_size)
        self.bundle = self._data()
        self.select, self.selecting = select_split(cfg, self.bundle), False
        self.model = self._model(train_stage1=stage1_ckpt is None)
        if stage1_ckpt is None:
            self._stage(1, self._train_stage1)
        else:
            self.meta["pretrained_source"] = stage1_ckpt.get("pretrained_source")
            self.model.load_state_dict(stage1_ckpt["model"])
            log.info("stage 1 weights from %s", cfg.stage1.checkpoint)
        if str(cfg.stage) in ("all", "2"):
            self._stage(2, self._train_stage2)
        if ctx.is_main:
            plots = _write_plots(self.folder, cfg) if cfg.plots else []
            self.run_log.log_run(run_hparams(cfg), self.records, plots)
            imbalance = self.records[0]["imbalance"] if self.records else cfg.imbalance
            print(f"\n{cfg.task.name}, imbalance {imbalance}, {cfg.model.name}, seed {cfg.seed} "
                  f"({time.perf_counter() - started:.0f} s) -> {self.folder.results}\n"
                  f"{format_summary(self.records)}\n", flush=True)
        return self.records

    def _accept(self) -> str:
        """Rank 0 decides whether this run may use its folder (``accept_run_folder``) and, for a
        resume, that the checkpoints are this configuration's, before anything is written; every
        rank gets the verdict."""
        verdict: tuple[str, str] = ("ok", "new")
        if self.ctx.is_main:
            try:
                mode = accept_run_folder(self.cfg, self.folder.root)
                self.lock.acquire()             # a second run on this folder fails here, naming the first
                mode = accept_run_folder(self.cfg, self.folder.root)   # as found under the lock
                if mode == "resume":
                    from lt_bench.checkpoint import check_resumable
                    check_resumable([f for f in run_files(self.folder.root) if f.suffix == ".pt"],
                                    self.meta["config_hash"])
                verdict = ("ok", mode)
            except (ConfigError, CheckpointError) as err:
                verdict = (type(err).__name__, str(err))
        kind, message = self.ctx.broadcast_object(verdict)
        if kind == "ok":
            return message
        raise (ConfigError if kind == "ConfigError" else CheckpointError)(message)

    def _data(self) -> DataBundle:
        cfg = self.cfg
        bundle = build_data(cfg, self.ctx)
        if bundle.num_classes != cfg.task.num_classes:
            raise ConfigError(f"task {cfg.task.name}: data has {bundle.num_classes} classes, config says "
                              f"{cfg.task.num_classes}")
        log.info("%s (imbalance %s): %d training images, %d %s images, %d classes -> %s", cfg.task.name,
                 cfg.imbalance, len(bundle.train), len(bundle.test), bundle.eval_split, bundle.num_classes,
                 self.folder.root)
        return bundle

    def _model(self, train_stage1: bool) -> LTClassifier:
        cfg = self.cfg
        seed_everything(int(cfg.seed))
        # Pretrained weights only matter when stage 1 trains; stage=2 loads a stage-1 checkpoint.
        model = build_model(cfg.model.name, self.bundle.num_classes, in_chans=int(cfg.task.in_chans),
                            pretrained=cfg.model.pretrained if train_stage1 else None).to(self.ctx.device)
        self.meta["pretrained_source"] = model.pretrained_source      # the weights stage 1 started from
        return model.to(memory_format=torch.channels_last) if cfg.train.channels_last else model

    def _evaluator(self, activation: Activation) -> Callable[[], dict]:
        """Test metrics for the per-epoch curves; on the last stage with ``eval.select=val`` also
        the val split's top-1 (``select_top1``), which picks the best epoch."""
        def run() -> dict:
            metrics = evaluate(self.model, self.bundle, activation, self.cfg, self.ctx)
            if self.select == "val" and self.selecting:
                metrics["select_top1"] = evaluate(self.model, self.bundle, activation, self.cfg, self.ctx,
                                                  split="val")["top1"]
            return metrics
        return run

    def _options(self, stage: int) -> TrainOptions:
        """Every epoch of the run's last stage is evaluated when the best epoch is selected."""
        last = 1 if str(self.cfg.stage) == "1" else 2
        self.selecting = stage == last and self.select is not None
        return replace(self.opts, eval_every=1) if self.selecting else self.opts

    def _train_stage1(self):
        activation = configured_activation(self.cfg, self.cfg.stage1.activation)
        loss = build_stage1_loss(self.cfg.stage1, activation, self.bundle.train_counts)
        loss.prepare(self.model)
        progress = train_stage1(self.model, self.bundle, loss, self.cfg.stage1, self.ctx, self._options(1),
                                self.folder, self.meta, evaluate=self._evaluator(activation))
        details = {**loss.details(), "recipe_source": self.cfg.stage1.source}
        return progress, activation, loss.method, details

    def _train_stage2(self):
        outcome = train_stage2(self.model, self.bundle, self.cfg.stage2, self.ctx, self._options(2), self.folder,
                               self.meta,
                               activation_of=lambda name: configured_activation(self.cfg, name),
                               evaluate_with=self._evaluator, eval_batch_size=int(self.cfg.data.eval_batch_size))
        return outcome.progress, outcome.activation, outcome.method, outcome.details

    def _stage(self, stage: int, train) -> None:
        """Train (``train()`` returns progress, the activation to evaluate with, the record's
        method and details), evaluate, write the stage's record (it survives a failing stage 2)."""
        cfg, ctx = self.cfg, self.ctx
        started = time.perf_counter()
        progress, activation, method, details = train()
        timing = {"stage_seconds": time.perf_counter() - started}   # training, feature cache included
        started = time.perf_counter()
        metrics = evaluate(self.model, self.bundle, activation, cfg, ctx)
        timing["eval_seconds"] = time.perf_counter() - started
        checksums = ctx.all_gather_object(parameter_checksum(self.model)) if ctx.is_distributed else None
        record = _record(cfg, self.bundle, stage, activation, metrics, progress, ctx, checksums)
        if self.selecting:
            record.update(best_epoch(progress, self.select))
        record.update(method=method, pretrained_source=self.meta.get("pretrained_source"), **details,
                      **{k: round(v, 3) for k, v in timing.items()})
        if ctx.is_main:
            upsert_record(self.folder.results, record)
            self.run_log.log_final(record)
        self.records.append(record)
        log.info("stage %d (%s): top1 %.2f%%  many %s  medium %s  few %s  ece %.2f", stage, method,
                 record["top1"], *(f"{record[g]:.2f}" if record[g] is not None else "-" for g in SHOT_GROUPS),
                 record["ece"])
