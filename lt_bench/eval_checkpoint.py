"""``lt-bench eval PATH [key=value ...]``: a run's checkpoint evaluated again.

PATH is a checkpoint of a run folder (``<run>/checkpoints/stage1.pt`` or ``stage2.pt``) or the run
folder itself, meaning its last stage (stage 1 for a ``stage=1`` run, else stage 2).  The run's
own ``config.yaml`` (in the run folder, beside ``checkpoints/``; ``--config FILE`` names another)
rebuilds the data, the model and the stage's activation as the run did (stage 1: the stage-1
loss's activation and classifier; stage 2: the method's activation, softmax for the post-hoc and
re-weighting methods), so the numbers are the run's own.  ``key=value`` may change only how the
model is evaluated (``EVALUATION_OVERRIDES``: ``eval.split=val``, ``eval.*``,
``data.eval_batch_size``, ``device``, ``data.root`` ...), never what it is.

The record is the pipeline's (``pipeline._record``) with what was evaluated: ``reevaluation``
(true), ``checkpoint``, ``checkpoint_sha256``, ``checkpoint_complete``, ``eval_overrides``.  It is
appended to ``<run>/eval.json`` (``records.EVAL_FILE``) or ``--out FILE``: never to a
``results.json`` (the run's own records, which the leaderboard reads), and no earlier record is
ever replaced.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from lt_bench.errors import CheckpointError, ConfigError, DataError, LtBenchError, error_text
from lt_bench.records import EVAL_FILE, RESULTS_FILE, append_record, read_records
from lt_bench.run_folder import RunFolder, config_hash, training_hash

log = logging.getLogger(__name__)

# keys a re-evaluation may override: how the model is evaluated and where the data is, not the model
EVALUATION_OVERRIDES = ("eval.", "data.eval_batch_size", "data.root", "data.splits_dir", "data.num_workers",
                        "data.download", "data.verify_md5", "device", "progress", "train.amp",
                        "train.channels_last", "distributed.")
COMPARED = ("top1", "top5", "many", "medium", "few", "ece")
_ABSENT = object()


def locate(path: str | os.PathLike, config: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(checkpoint, config.yaml) for PATH: a checkpoint file, or a run folder (its last stage)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint or run folder")
    if path.is_dir():
        folder = RunFolder(path)
        config_file = Path(config) if config else folder.config
        cfg = load_config(config_file)
        stage = 1 if str(cfg.get("stage", "all")) == "1" else 2
        checkpoint = folder.checkpoint(stage)
        if not checkpoint.is_file():
            found = sorted(p.name for p in folder.checkpoints.glob("*.pt")) if folder.checkpoints.is_dir() else []
            raise CheckpointError(f"{path}: its last stage is stage {stage} (stage={cfg.get('stage')}) but "
                                  f"{checkpoint} does not exist (checkpoints there: {', '.join(found) or 'none'}); "
                                  "name a checkpoint file instead")
        return checkpoint, config_file
    run = path.parent.parent if path.parent.name == RunFolder(path.parent).checkpoints.name else path.parent
    config_file = Path(config) if config else RunFolder(run).config
    if not config_file.is_file():
        raise ConfigError(f"{path}: no config.yaml of its run at {config_file} (the run folder holds "
                          "checkpoints/ and config.yaml); give it with --config FILE")
    return path, config_file


def load_config(path: Path) -> DictConfig:
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file (a run folder holds its config.yaml)")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:    # noqa: BLE001 - yaml and OmegaConf raise many types
        raise ConfigError(f"{path}: not a readable config ({err})") from err
    if not isinstance(cfg, DictConfig) or "task" not in cfg or "model" not in cfg:
        raise ConfigError(f"{path}: not an lt_bench run configuration (no task or model)")
    return cfg


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """A copy of ``cfg`` with ``key=value`` overrides (values parsed as YAML, as on run.py's
    command line); only evaluation and runtime keys (``EVALUATION_OVERRIDES``) of the config."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key or key.startswith(("+", "~")):
            raise ConfigError(f"{item!r}: overrides are key=value of the run's config, e.g. eval.split=val")
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(f"{key}: the run's config has no such key")
        if not any(key == k or (k.endswith(".") and key.startswith(k)) for k in EVALUATION_OVERRIDES):
            raise ConfigError(f"{key}: would change what the checkpoint is, not how it is evaluated; a "
                              f"re-evaluation may override {', '.join(k + '*' if k.endswith('.') else k for k in EVALUATION_OVERRIDES)}")
        OmegaConf.update(cfg, key, OmegaConf.select(OmegaConf.from_dotlist([item]), key), merge=False)
    return cfg


def _check(cfg: DictConfig) -> None:
    from lt_bench.errors import check_one_of, check_positive_int
    if cfg.task.get("kind", "classification") != "classification":
        raise ConfigError(f"lt-bench eval evaluates classification runs; task {cfg.task.name} is "
                          f"{cfg.task.get('kind')}")
    check_one_of(f"eval.split for task {cfg.task.name}", cfg.eval.split, cfg.task.eval_splits)
    check_positive_int("data.eval_batch_size", cfg.data.eval_batch_size)
    check_positive_int("eval.ece_bins", cfg.eval.ece_bins)


def read_checkpoint(path: Path, saved: DictConfig, config_file: Path) -> tuple[dict, int]:
    """The checkpoint and its stage (1 or 2), checked to be the run's that ``saved`` configured."""
    from lt_bench.checkpoint import load_checkpoint
    ckpt = load_checkpoint(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict) \
            or ckpt.get("stage") not in ("stage1", "stage2"):
        raise CheckpointError(f"{path}: not a stage-1 or stage-2 checkpoint of an lt_bench run "
                              "(checkpoints/stage1.pt or stage2.pt)")
    if ckpt.get("config_hash") != training_hash(saved):
        raise CheckpointError(f"{path} was written by a run with config hash {ckpt.get('config_hash')}, "
                              f"{config_file} gives {training_hash(saved)}: it is not that run's checkpoint (give the "
                              "run's own config with --config FILE)")
    return ckpt, 1 if ckpt["stage"] == "stage1" else 2


def stage_model(cfg: DictConfig, stage: int, state: dict, train_counts: list[int], num_classes: int, device):
    """(model holding ``state``, activation it is scored with, the record's method, details):
    stage 1 with the stage-1 loss's activation and classifier (``prepare``); stage 2 with the
    method's activation: the one it names (``stage2.activation``), else softmax (cRT, LWS,
    tau-norm, logit adjustment), LWS's per-class scales when the checkpoint holds them."""
    import torch

    from lt_bench.activations import configured_activation
    from lt_bench.models import build_model
    from lt_bench.stages.losses import build_stage1_loss
    model = build_model(cfg.model.name, num_classes, in_chans=int(cfg.task.in_chans), pretrained=None).to(device)
    stage1_activation = configured_activation(cfg, cfg.stage1.activation)
    loss = build_stage1_loss(cfg.stage1, stage1_activation, train_counts)
    loss.prepare(model)                 # a one-stage loss's own classifier (LDAM's cosine one)
    if stage == 1:
        activation, method, details = stage1_activation, loss.method, dict(loss.details())
    else:
        named = cfg.stage2.get("activation")
        activation = configured_activation(cfg, named or "softmax")
        method, details = (activation.name if named else str(cfg.stage2.method)), {}
        if "classifier.scales" in state:
            from lt_bench.stages.classifier_ops import ScaledLinear
            model.classifier = ScaledLinear.scaling(model.classifier)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()
        raise CheckpointError(f"its weights do not fit {cfg.model.name} as the run built it: "
                              f"{' '.join(first[1:3] if len(first) > 1 else first)}") from err
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, activation, method, details


def run_record(run: Path, saved: DictConfig, stage: int) -> dict | None:
    """The run's own record of ``stage`` (results.json), if it has one of this configuration."""
    try:
        records = read_records(RunFolder(run).results)
    except DataError:
        return None
    own = config_hash(saved)
    return next((r for r in records if isinstance(r, dict) and r.get("stage") == stage
                 and r.get("kind", "classification") == "classification" and r.get("config_hash") == own), None)


def evaluate_checkpoint(path: str | os.PathLike, overrides: Sequence[str] = (),
                        config: str | os.PathLike | None = None) -> tuple[dict, dict | None, Path]:
    """Evaluate PATH (``locate``); returns (the record, the run's own record of that stage or
    None, the run folder).  Writes nothing."""
    from lt_bench import distributed
    from lt_bench.data import build_data
    from lt_bench.fileio import file_digest
    from lt_bench.pipeline import _record, evaluate
    from lt_bench.registries import AMP_MODES

    checkpoint, config_file = locate(path, config)
    saved = load_config(config_file)
    cfg = apply_overrides(saved, overrides)
    _check(cfg)
    ckpt, stage = read_checkpoint(checkpoint, saved, config_file)
    ctx = distributed.setup(cfg.device, float(cfg.get("distributed", {}).get("timeout_minutes", 30)))
    try:
        if AMP_MODES.get(cfg.train.amp).cls.needs_cuda and ctx.device.type != "cuda":
            raise ConfigError(f"train.amp={cfg.train.amp} needs a CUDA device; use train.amp=bf16 or none on CPU")
        bundle = build_data(cfg, ctx)
        model, activation, method, details = stage_model(cfg, stage, ckpt["model"], bundle.train_counts,
                                                         bundle.num_classes, ctx.device)
        own = run_record(config_file.parent, saved, stage)
        if own is not None and (own.get("method"), own.get("activation")) != (method, repr(activation)):
            log.warning("the run's stage-%d record says method %s, activation %s; evaluating as %s, %s", stage,
                        own.get("method"), own.get("activation"), method, repr(activation))
        progress = ckpt.get("progress") or {}
        progress = {"epochs_done": progress.get("epochs_done", 0), "train_seconds": progress.get("train_seconds", 0.0),
                    "nonfinite_skipped": progress.get("nonfinite_skipped", 0), **progress}
        if not progress.get("complete", False):
            log.warning("%s is an unfinished stage-%d checkpoint (%s epochs%s)", checkpoint, stage,
                        progress["epochs_done"], ", mid-epoch" if "in_epoch" in progress else "")
        started = time.perf_counter()
        metrics = evaluate(model, bundle, activation, cfg, ctx)
        record = _record(cfg, bundle, stage, activation, metrics, progress, ctx, None)
    finally:
        distributed.teardown(ctx)
    record.update(method=method, pretrained_source=ckpt.get("pretrained_source"),
                  **{**details, **(ckpt.get("details") or {})},
                  eval_seconds=round(time.perf_counter() - started, 3),
                  reevaluation=True, checkpoint=str(checkpoint.resolve()),
                  checkpoint_sha256=file_digest(checkpoint, "sha256"),
                  checkpoint_complete=bool(progress.get("complete", False)), eval_overrides=list(overrides))
    return record, own, config_file.parent


def eval_target(run: Path, out: str | os.PathLike | None) -> Path:
    """Where the record goes: ``out``, else ``<run>/eval.json``; never a results.json."""
    target = Path(out) if out is not None else run / EVAL_FILE
    if target.is_dir():
        raise ConfigError(f"--out {target}: is a folder; name the file to write")
    if target.name == RESULTS_FILE:
        raise ConfigError(f"--out {target}: {RESULTS_FILE} holds the runs' own records; lt-bench eval writes "
                          f"its records elsewhere (default: {EVAL_FILE} in the run folder)")
    return target


def comparison(record: dict, own: dict | None) -> str:
    """How the re-evaluation compares with the run's own record of that stage."""
    if own is None:
        return f"(the run's {RESULTS_FILE} has no record of this stage and configuration to compare with)"
    if own.get("eval_split") != record.get("eval_split"):
        return f"(the run's own record is of the {own.get('eval_split')} split, this one of {record['eval_split']})"
    differ = [f"{k} {own.get(k)} -> {record.get(k)}" for k in COMPARED if own.get(k) != record.get(k)]
    if differ:
        return f"differs from the run's own record ({RESULTS_FILE}): {'; '.join(differ)}"
    return f"the same numbers as the run's own record ({RESULTS_FILE}): {', '.join(COMPARED)}"


def run_eval(path, overrides: Sequence[str] = (), out=None, config=None) -> tuple[dict, Path]:
    """Evaluate, append the record (``eval_target``), print a summary; (record, file)."""
    from lt_bench.pipeline import format_summary
    checkpoint, config_file = locate(path, config)
    target = eval_target(config_file.parent, out)       # refused before anything is evaluated
    record, own, _ = evaluate_checkpoint(path, overrides, config)
    if int(os.environ.get("RANK", "0")) == 0:
        append_record(target, record)
        print(f"\nstage {record['stage']} checkpoint {checkpoint} (sha256 {record['checkpoint_sha256'][:12]}), "
              f"{record['eval_split']} split -> {target}\n{format_summary([record])}\n{comparison(record, own)}\n",
              flush=True)
    return record, target


def main(argv: list[str] | None = None) -> int:
    """``lt-bench eval PATH [key=value ...] [--out FILE] [--config FILE]``."""
    parser = argparse.ArgumentParser(
        prog="lt-bench eval",
        description="evaluate a run's checkpoint again with its config.yaml; the record is appended to "
                    f"<run>/{EVAL_FILE} (or --out), never to results.json")
    parser.add_argument("path", help="checkpoints/stage1.pt or stage2.pt of a run, or a run folder (its last stage)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="evaluation settings, e.g. eval.split=val data.eval_batch_size=512 device=cpu")
    parser.add_argument("--out", default=None, help=f"append the record to this file (default <run>/{EVAL_FILE})")
    parser.add_argument("--config", default=None, help="the run's config.yaml (default: the run folder's)")
    args = parser.parse_args(argv)
    try:
        run_eval(args.path, args.overrides, args.out, args.config)
    except LtBenchError as err:
        print(f"{type(err).__name__}: {error_text(err)}", file=sys.stderr)
        return getattr(err, "exit_status", 2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
