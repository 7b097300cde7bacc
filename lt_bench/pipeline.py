"""The decoupled pipeline: data -> stage 1 -> evaluation -> stage 2 -> evaluation -> records."""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from lt_bench import distributed
from lt_bench.activations import Activation
from lt_bench.checkpoint import load_checkpoint
from lt_bench.config import build_configured_activation, check_batch_sizes, config_hash, validate
from lt_bench.data import DataBundle, build_data
from lt_bench.distributed import DistContext
from lt_bench.errors import CheckpointError, ConfigError
from lt_bench.evaluation import compute_metrics, run_inference
from lt_bench.fileio import atomic_write
from lt_bench.models import LTClassifier, build_model, parameter_checksum
from lt_bench.records import RESULTS_FILE, SCHEMA_VERSION, git_revision, upsert_record
from lt_bench.seeding import seed_everything
from lt_bench.stages import TrainOptions, train_stage1, train_stage2
from lt_bench.stages.loop import AMP_DTYPES

log = logging.getLogger(__name__)


def resolve_out_dir(cfg: DictConfig) -> Path:
    """``out_dir`` if set, else the folder Hydra made for this run (or multirun job)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        hydra_cfg = HydraConfig.get()
    except ValueError:  # composed without Hydra's runtime (tests, notebooks)
        hydra_cfg = None
    if hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN and cfg.out_dir:
        raise ConfigError("out_dir would be shared by every job of this multirun; leave it unset "
                          "(each job writes to its own folder under hydra.sweep.dir)")
    if cfg.out_dir:
        return Path(cfg.out_dir)
    if hydra_cfg is None:
        raise ConfigError("out_dir is required when the config is not run through run.py")
    return Path(hydra_cfg.runtime.output_dir)


def _train_options(cfg: DictConfig) -> TrainOptions:
    return TrainOptions(seed=int(cfg.seed), amp=cfg.train.amp, channels_last=bool(cfg.train.channels_last),
                        skip_nonfinite=bool(cfg.train.skip_nonfinite), num_workers=int(cfg.data.num_workers),
                        persistent_workers=bool(cfg.data.persistent_workers),
                        prefetch_factor=int(cfg.data.prefetch_factor), progress=bool(cfg.progress),
                        resume=bool(cfg.resume), eval_every=int(cfg.eval.every_epochs))


def evaluate(model: LTClassifier, bundle: DataBundle, activation: Activation, cfg: DictConfig,
             ctx: DistContext) -> dict:
    was_training = model.training
    model.eval()
    channels_last = bool(cfg.train.channels_last)
    logits, labels = run_inference(model, bundle.test, ctx, batch_size=int(cfg.data.eval_batch_size),
                                   num_workers=int(cfg.data.num_workers), amp_dtype=AMP_DTYPES[cfg.train.amp],
                                   channels_last=channels_last, progress=bool(cfg.progress))
    model.train(was_training)
    many_above, few_below = cfg.eval.shot_thresholds
    return compute_metrics(logits, labels, activation, bundle.train_counts, many_above=many_above,
                           few_below=few_below, ece_bins=int(cfg.eval.ece_bins))


def _check_stage1_checkpoint(cfg: DictConfig) -> dict:
    """Read the stage-1 checkpoint of a stage=2 run and check it fits, before any data is read."""
    ckpt = load_checkpoint(cfg.stage1.checkpoint)
    for key, expected in (("num_classes", cfg.task.num_classes), ("model_name", cfg.model.name)):
        if ckpt.get(key) != expected:
            raise CheckpointError(f"{cfg.stage1.checkpoint} has {key}={ckpt.get(key)!r}, this run needs "
                                  f"{expected!r} (task {cfg.task.name}, model {cfg.model.name})")
    if not ckpt.get("progress", {}).get("complete", False):
        log.warning("%s is an unfinished stage-1 run (%s epochs); retraining its classifier anyway",
                    cfg.stage1.checkpoint, ckpt.get("progress", {}).get("epochs_done"))
    return ckpt


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
        **{k: metrics[k] for k in ("top1", "top5", "many", "medium", "few", "ece", "ece_scores",
                                    "num_eval", "shot_classes")},
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


def _log_final_metrics(log_dir: Path, record: dict) -> None:
    """The record's metrics in TensorBoard: final/* scalars, and per-class top-1 along the
    classes sorted by training frequency (step = frequency rank) to show head and tail."""
    from torch.utils.tensorboard import SummaryWriter
    with SummaryWriter(str(log_dir)) as writer:
        for key in ("top1", "top5", "many", "medium", "few", "ece"):
            if record[key] is not None:
                writer.add_scalar(f"final/{key}", record[key], record["epochs"])
        order = sorted(range(len(record["train_counts"])), key=lambda c: -record["train_counts"][c])
        for rank, c in enumerate(order):
            if record["per_class_top1"][c] is not None:
                writer.add_scalar("final/per_class_top1_by_frequency_rank", record["per_class_top1"][c], rank)


def _write_plots(out_dir: Path) -> None:
    """Analysis plots beside the records; a plotting failure is reported, the run stands."""
    from lt_bench.plots import write_run_plots
    try:
        for path in write_run_plots(out_dir):
            log.info("plot: %s", path)
    except Exception as err:   # noqa: BLE001 - the records are written; say what failed
        log.warning("plots not written (%s: %s)", type(err).__name__, err)


def _save_config(cfg: DictConfig, out_dir: Path) -> None:
    text = OmegaConf.to_yaml(cfg, resolve=True).encode()
    atomic_write(out_dir / "config.yaml", lambda f: f.write(text))


def format_summary(records: list[dict]) -> str:
    head = f"{'stage':<6}{'method':<10}{'top1':>8}{'top5':>8}{'many':>8}{'medium':>8}{'few':>8}{'ece':>8}"
    rows = [head, "-" * len(head)]
    fmt = lambda v: f"{v:8.2f}" if v is not None else f"{'-':>8}"  # noqa: E731
    for r in records:
        rows.append(f"{r['stage']:<6}{r['method']:<10}" + "".join(fmt(r[k]) for k in
                    ("top1", "top5", "many", "medium", "few", "ece")))
    return "\n".join(rows)


def run_training(cfg: DictConfig) -> list[dict]:
    """Validate, then run the configured stages; returns the records written to results.json."""
    validate(cfg)
    stage1_ckpt = _check_stage1_checkpoint(cfg) if str(cfg.stage) == "2" else None
    ctx = distributed.setup(cfg.device, float(cfg.distributed.timeout_minutes))
    try:
        return _run(cfg, ctx, stage1_ckpt)
    finally:
        distributed.teardown(ctx)


def _run(cfg: DictConfig, ctx: DistContext, stage1_ckpt: dict | None) -> list[dict]:
    start = time.perf_counter()
    out_dir = Path(ctx.broadcast_object(str(resolve_out_dir(cfg))))
    if ctx.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        _save_config(cfg, out_dir)
    opts = _train_options(cfg)
    meta = {"config_hash": config_hash(cfg), "num_classes": int(cfg.task.num_classes),
            "model_name": cfg.model.name, "task": cfg.task.name}

    check_batch_sizes(cfg, ctx.world_size)
    bundle = build_data(cfg, ctx)
    if bundle.num_classes != cfg.task.num_classes:
        raise ConfigError(f"task {cfg.task.name}: data has {bundle.num_classes} classes, config says "
                          f"{cfg.task.num_classes}")
    log.info("%s (imbalance %s): %d training images, %d %s images, %d classes -> %s", cfg.task.name,
             cfg.imbalance, len(bundle.train), len(bundle.test), bundle.eval_split, bundle.num_classes, out_dir)

    seed_everything(int(cfg.seed))
    # Pretrained weights only matter when stage 1 trains; stage=2 loads a stage-1 checkpoint.
    pretrained = cfg.model.pretrained if str(cfg.stage) != "2" else None
    model = build_model(cfg.model.name, bundle.num_classes, in_chans=int(cfg.task.in_chans),
                        pretrained=pretrained).to(ctx.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    results_path = out_dir / RESULTS_FILE
    records = []

    def run_stage(stage: int, train) -> None:
        """``train()`` returns (progress, activation to evaluate with, method name, details)."""
        started = time.perf_counter()
        progress, activation, method, details = train()
        timing = {"stage_seconds": time.perf_counter() - started}   # training, feature cache included
        started = time.perf_counter()
        metrics = evaluate(model, bundle, activation, cfg, ctx)
        timing["eval_seconds"] = time.perf_counter() - started
        checksums = ctx.all_gather_object(parameter_checksum(model)) if ctx.is_distributed else None
        record = _record(cfg, bundle, stage, activation, metrics, progress, ctx, checksums)
        record.update(method=method, **details, **{k: round(v, 3) for k, v in timing.items()})
        if ctx.is_main:
            upsert_record(results_path, record)   # stage 1's record survives a failing stage 2
            _log_final_metrics(out_dir / "tensorboard" / f"stage{stage}", record)
        records.append(record)
        log.info("stage %d (%s): top1 %.2f%%  many %s  medium %s  few %s  ece %.2f", stage, method,
                 record["top1"], *(f"{record[g]:.2f}" if record[g] is not None else "-"
                                   for g in ("many", "medium", "few")), record["ece"])

    def evaluate_with(activation: Activation):
        return lambda: evaluate(model, bundle, activation, cfg, ctx)

    if str(cfg.stage) in ("all", "1"):
        act1 = build_configured_activation(cfg, cfg.stage1.activation)

        def stage1():
            progress = train_stage1(model, bundle, act1, cfg.stage1, ctx, opts, out_dir, meta,
                                    evaluate=evaluate_with(act1))
            return progress, act1, act1.name, {}
        run_stage(1, stage1)
    else:
        model.load_state_dict(stage1_ckpt["model"])
        log.info("stage 1 weights from %s", cfg.stage1.checkpoint)

    if str(cfg.stage) in ("all", "2"):
        act2 = build_configured_activation(cfg, cfg.stage2.activation)

        def stage2():
            outcome = train_stage2(model, bundle, act2, cfg.stage2, ctx, opts, out_dir, meta,
                                   evaluate_with=evaluate_with, eval_batch_size=int(cfg.data.eval_batch_size))
            return outcome.progress, outcome.activation, outcome.method, outcome.details
        run_stage(2, stage2)

    if ctx.is_main and cfg.plots:
        _write_plots(out_dir)
    if ctx.is_main:
        imbalance = records[0]["imbalance"] if records else cfg.imbalance
        print(f"\n{cfg.task.name}, imbalance {imbalance}, {cfg.model.name}, seed {cfg.seed} "
              f"({time.perf_counter() - start:.0f} s) -> {results_path}\n{format_summary(records)}\n", flush=True)
    return records
