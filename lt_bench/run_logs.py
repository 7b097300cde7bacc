"""What a run reports while it trains: ``metrics.csv``, TensorBoard and the optional trackers.

Rank 0 only.  The training loop hands each finished epoch to a ``RunLog`` (``loop.ReportHook``),
the pipeline each stage's record and, at the end, the run's hyper-parameters, final metrics and
plots.  ``RunLog`` writes ``metrics.csv`` itself and forwards everything to its trackers: the
``TensorBoard`` one (``logger=tensorboard``, the default, and beside the others unless
``logger.tensorboard=false``), ``Wandb`` (``logger=wandb``) and ``MLflow`` (``logger=mlflow``).

**metrics.csv** (``<run>/metrics.csv``): one row per epoch of each stage, columns

    epoch, stage, loss, lr, train_top1,
    <split>_top1, <split>_top5, <split>_many, <split>_medium, <split>_few, <split>_ece, <split>_nll,
    <split>_brier, <split>_ece_classwise, <split>_ece_normalised      (evaluated epochs; empty otherwise)
    val_top1                       (the val split's top-1 that picks the best epoch, eval.select=val)
    seconds, data_seconds          (the epoch's wall time, and the part spent waiting for data)

where ``<split>`` is ``eval.split`` (test or val); evaluation columns appear once an epoch has
them.  Floats are written in full (``repr``): a cell reads back as exactly the value in the
checkpoint's history.  The file is rewritten atomically after each epoch from the stage's
history (``progress['history']``, which the checkpoints keep) and the rows of the earlier
stages, so a resumed run never duplicates or loses a row.

**Tags** (the same names in TensorBoard, Weights & Biases and MLflow; the stage is in every tag,
so that the two stages of a run, whose epochs both count from 1, never share a chart):

    stage{N}/train/loss, stage{N}/train/top1, stage{N}/lr          every epoch (step: the stage's epoch)
    stage{N}/<split>/top1, .../top5, many, medium, few, ece, nll, brier, ...   evaluated epochs
    stage{N}/val/top1                                              eval.select=val's top-1
    stage{N}/time/epoch_seconds, stage{N}/time/data_seconds, stage{N}/train/skipped_steps
    stage{N}/final/top1, top5, many, medium, few, ece, nll, brier  the stage's record (step: its epochs)
    stage{N}/final/per_class_top1_by_frequency_rank                step: the class's frequency rank
    plots/per_class_accuracy, plots/weight_norms, plots/activations   the PNGs (plots=true)

TensorBoard layout: ``<run>/tensorboard/stage{N}/`` holds the per-epoch curves of stage N;
``<run>/tensorboard/`` itself is the run's HParams session: the hyper-parameters
(``run_hparams``), the final metrics (the HParams tab's metric columns are the
``stage{N}/final/*`` tags) and the plots as images.  ``tensorboard --logdir runs/multirun/<date>``
compares a sweep in the HParams tab.

Offline, everything stays in the run folder: Weights & Biases in ``<run>/wandb/`` (``mode``
offline by default; ``wandb sync <run>/wandb/offline-run-*`` uploads it later), MLflow in
``<run>/mlruns/`` (a ``file:`` tracking URI unless ``logger.tracking_uri`` names a server).  A
resumed run continues the same tracker run (their ids are kept in ``<run>/trackers.json``).
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
import logging
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from lt_bench.errors import ConfigError
from lt_bench.fileio import atomic_write

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
TRACKERS_FILE = "trackers.json"
LOGGERS = ("tensorboard", "wandb", "mlflow", "none")
WANDB_MODES = ("offline", "online", "disabled")
PACKAGES = {"wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}     # logger: (module, extra)
# evaluation metrics in the order of their columns (history keys test_<metric>); others follow, sorted
EVAL_METRICS = ("top1", "top5", "many", "medium", "few", "ece", "nll", "brier", "ece_classwise", "ece_normalised")
FINAL_METRICS = ("top1", "top5", "many", "medium", "few", "ece", "nll", "brier")
HPARAM_METRICS = ("top1", "many", "medium", "few", "ece")        # the HParams tab's columns, per stage
BASE_COLUMNS = ("epoch", "stage", "loss", "lr", "train_top1")
TIME_COLUMNS = ("seconds", "data_seconds")
# (config key, hparam name): the settings a sweep varies
HPARAM_KEYS = (
    ("task.name", "task"), ("imbalance", "imbalance"), ("model.name", "model"), ("seed", "seed"),
    ("stage", "stage"), ("stage1.loss", "stage1.loss"), ("stage1.activation", "stage1.activation"),
    ("stage1.lr", "stage1.lr"), ("stage1.epochs", "stage1.epochs"), ("stage1.batch_size", "stage1.batch_size"),
    ("stage1.schedule", "stage1.schedule"), ("stage2.method", "stage2.method"),
    ("stage2.activation", "stage2.activation"), ("stage2.sampler", "stage2.sampler"), ("stage2.lr", "stage2.lr"),
    ("stage2.epochs", "stage2.epochs"), ("stage2.batch_size", "stage2.batch_size"),
    ("activations.gumbel.clamp", "gumbel.clamp"), ("activations.gumbel.temperature", "gumbel.temperature"),
    ("activations.gumbel.gradient", "gumbel.gradient"), ("eval.split", "eval.split"),
    ("eval.select", "eval.select"), ("train.amp", "train.amp"), ("train.compile", "train.compile"),
)


# -- what is logged ---------------------------------------------------------------------------

def logger_settings(cfg) -> dict:
    """The ``logger`` node of a config as a plain dict (``logger=tensorboard`` when absent)."""
    from omegaconf import DictConfig, OmegaConf
    node = cfg.get("logger") if cfg is not None else None
    settings = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})
    settings.setdefault("name", "tensorboard")
    settings.setdefault("tensorboard", settings["name"] != "none")
    return settings


def check_logger(cfg) -> dict:
    """The logger settings, checked: a known name and mode, and its package installed
    (ConfigError naming the extra to install).  Every rank calls it, so all agree."""
    settings = logger_settings(cfg)
    name = settings["name"]
    if name not in LOGGERS:
        raise ConfigError(f"unknown logger.name {name!r}; valid: {', '.join(LOGGERS)}")
    if name == "wandb" and settings.get("mode", "offline") not in WANDB_MODES:
        raise ConfigError(f"unknown logger.mode {settings.get('mode')!r} for wandb; valid: {', '.join(WANDB_MODES)}")
    if name in PACKAGES:
        module, extra = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger={name} needs the {module} package: pip install 'lt_bench[{extra}]' "
                              "(or choose logger=tensorboard)")
    return settings


def run_hparams(cfg) -> dict[str, str | int | float | bool]:
    """The key settings of a run, flat (``stage1.lr``, ``gumbel.clamp``, ...): scalars kept,
    lists and null as text, so that every run of a sweep has the same keys and types."""
    from omegaconf import OmegaConf
    out: dict[str, str | int | float | bool] = {}
    for key, name in HPARAM_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
        out[name] = value if isinstance(value, (str, int, float, bool)) else json.dumps(value)
    return out


def final_metrics(records: Iterable[dict]) -> dict[str, float]:
    """``stage{N}/final/<metric>`` of each classification record (the HParams tab's metrics);
    ``best_top1`` too where the run picked a best epoch."""
    out = {}
    for r in records:
        for key in (*HPARAM_METRICS, "best_top1"):
            if _number(r.get(key)):
                out[f"stage{r['stage']}/final/{key}"] = float(r[key])
    return out


# an epoch's stats key -> its tag below stage{N}/ (the evaluation split's ``test_*`` metrics aside)
EPOCH_TAGS = {"loss": "train/loss", "train_top1": "train/top1", "lr": "lr", "select_top1": "val/top1",
              "seconds": "time/epoch_seconds", "data_seconds": "time/data_seconds", "skipped": "train/skipped_steps"}


def epoch_scalars(stage: int, stats: Mapping[str, Any], split: str) -> dict[str, float]:
    """An epoch's record (``Trainer._epoch``'s stats, with ``EvalHook``'s ``test_*`` metrics of
    the evaluation split, which it names in ``eval_split``, and ``select_top1``) under the run's
    tags; ``split``: the evaluation split of records that do not name theirs."""
    p = f"stage{stage}/"
    split = stats.get("eval_split") or split
    out = {}
    for key, value in stats.items():
        if not _number(value) or (key == "skipped" and not value):    # skipped steps: only when there are
            continue
        if key.startswith("test_"):
            tag = f"{split}/{key[5:]}"
        elif key in EPOCH_TAGS:
            tag = EPOCH_TAGS[key]
        else:
            continue                                  # epoch, items
        out[p + tag] = float(value)
    return out


def csv_row(stage: int, stats: Mapping[str, Any], split: str) -> dict[str, Any]:
    """An epoch's row of metrics.csv (``metrics.csv`` columns in the module docstring)."""
    split = stats.get("eval_split") or split
    row: dict[str, Any] = {"epoch": stats["epoch"], "stage": stage}
    for key in ("loss", "lr", "train_top1"):
        row[key] = stats.get(key)
    for key, value in stats.items():
        if key.startswith("test_") and value is not None:
            row[f"{split}_{key[5:]}"] = value
    if stats.get("select_top1") is not None:
        row["val_top1"] = stats["select_top1"]
    for key in TIME_COLUMNS:
        row[key] = stats.get(key)
    return row


def csv_columns(rows: Sequence[Mapping[str, Any]], split: str) -> list[str]:
    """The header for ``rows``: base columns, the evaluation columns any row has (canonical
    order, unknown ones sorted after), the selection column, then the timings."""
    present = {key for row in rows for key in row}
    known = [f"{split}_{m}" for m in EVAL_METRICS]
    other = sorted(present - set(BASE_COLUMNS) - set(TIME_COLUMNS) - set(known) - {"val_top1"})
    columns = [*BASE_COLUMNS, *(c for c in known if c in present), *other]
    if "val_top1" in present:
        columns.append("val_top1")
    return columns + list(TIME_COLUMNS)


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a metrics.csv as strings (empty cells ''); [] when there is none."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else str(value)


# -- the run's log ------------------------------------------------------------------------------

class Tracker:
    """One destination of a run's numbers (rank 0); every method is optional."""

    def start_stage(self, stage: int, log_dir: Path | None, epochs_done: int, complete: bool) -> None: ...
    def log_epoch(self, stage: int, epoch: int, scalars: Mapping[str, float]) -> None: ...
    def end_stage(self, stage: int) -> None: ...
    def log_final(self, stage: int, epoch: int, scalars: Mapping[str, float],
                  per_class_by_rank: Sequence[float | None]) -> None: ...
    def log_run(self, hparams: Mapping[str, Any], metrics: Mapping[str, float], images: Sequence[Path]) -> None: ...
    def close(self, status: str) -> None: ...


class RunLog:
    """metrics.csv and the trackers of one run (rank 0).  ``root`` None: no metrics.csv (a
    stage trained outside a run folder, e.g. by a benchmark)."""

    def __init__(self, root: Path | None, split: str = "test", trackers: Sequence[Tracker] = ()):
        self.root, self.split, self.trackers = (Path(root) if root is not None else None), split, list(trackers)
        self._rows: list[dict] = []             # the rows of the stages before the current one
        self._stage_rows: list[dict] = []
        self._stage = 0

    @property
    def metrics_file(self) -> Path | None:
        return None if self.root is None else self.root / METRICS_FILE

    def _call(self, method: str, *args) -> None:
        """A tracker failing (a network error, a full quota) is logged; training goes on."""
        for tracker in self.trackers:
            try:
                getattr(tracker, method)(*args)
            except Exception as err:   # noqa: BLE001 - trackers are reporting, not the run
                log.warning("%s.%s failed (%s: %s)", type(tracker).__name__, method, type(err).__name__, err)

    def start_stage(self, stage: int, log_dir: Path | None, progress: Mapping[str, Any]) -> None:
        """A stage (re)starts with ``progress`` (its checkpoint's, on resume): metrics.csv is
        rebuilt from the earlier stages' rows and this stage's history."""
        self._stage = stage
        if self.metrics_file is not None:
            earlier = [row for row in read_metrics_csv(self.metrics_file) if _int(row.get("stage")) < stage]
            self._rows = earlier
            self._stage_rows = [csv_row(stage, stats, self.split) for stats in progress.get("history", [])]
            self._write()
        self._call("start_stage", stage, log_dir, int(progress.get("epochs_done", 0)),
                   bool(progress.get("complete", False)))

    def log_epoch(self, stage: int, stats: Mapping[str, Any]) -> None:
        if self.metrics_file is not None:
            self._stage_rows.append(csv_row(stage, stats, self.split))
            self._write()
        self._call("log_epoch", stage, int(stats["epoch"]), epoch_scalars(stage, stats, self.split))

    def end_stage(self, stage: int) -> None:
        self._call("end_stage", stage)

    def log_final(self, record: Mapping[str, Any]) -> None:
        """A stage's record: its final metrics, and per-class top-1 by frequency rank."""
        stage = int(record["stage"])
        scalars = {f"stage{stage}/final/{k}": float(record[k]) for k in FINAL_METRICS if _number(record.get(k))}
        counts, per_class = record.get("train_counts") or [], record.get("per_class_top1") or []
        order = sorted(range(len(counts)), key=lambda c: -counts[c])      # stable: ties keep index order
        by_rank = [per_class[c] for c in order] if len(per_class) == len(counts) else []
        self._call("log_final", stage, int(record.get("epochs") or 0), scalars, by_rank)

    def log_run(self, hparams: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                images: Sequence[Path] = ()) -> None:
        """The end of a successful run: hyper-parameters against final metrics, and the plots."""
        self._call("log_run", dict(hparams), final_metrics(records), [Path(p) for p in images])

    def close(self, status: str = "finished") -> None:
        """``status``: finished | failed | interrupted."""
        self._call("close", status)

    def _write(self) -> None:
        rows = self._rows + self._stage_rows
        columns = csv_columns(rows, self.split)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) if not isinstance(row.get(c), str) else row[c] for c in columns])
        data = buf.getvalue().encode()
        atomic_write(self.metrics_file, lambda f: f.write(data))


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


# -- trackers ---------------------------------------------------------------------------------

class TensorBoard(Tracker):
    """Per-stage curves in the stage's folder, the run's session (final metrics, HParams,
    plots) in ``root`` (``<run>/tensorboard``; None: curves only)."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else None
        self.stage_writer = None
        self._run_writer = None
        self._final_tags: set[str] = set()

    @staticmethod
    def _writer(log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter
        return SummaryWriter(str(log_dir), purge_step=purge_step)

    def run_writer(self):
        if self._run_writer is None and self.root is not None:
            self._run_writer = self._writer(self.root)
        return self._run_writer

    def start_stage(self, stage, log_dir, epochs_done, complete):
        self.end_stage(stage)
        if log_dir is not None and not complete:
            # steps are 1-based epochs: a (re)started stage drops the events of the epochs it will
            # (re)do, those after its checkpoint's last
            self.stage_writer = self._writer(log_dir, purge_step=epochs_done + 1)

    def log_epoch(self, stage, epoch, scalars):
        if self.stage_writer is not None:
            for tag, value in scalars.items():
                self.stage_writer.add_scalar(tag, value, epoch)
            self.stage_writer.flush()

    def end_stage(self, stage):
        if self.stage_writer is not None:
            self.stage_writer.close()
            self.stage_writer = None

    def log_final(self, stage, epoch, scalars, per_class_by_rank):
        writer = self.run_writer()
        if writer is None:
            return
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, epoch)
        self._final_tags.update(scalars)
        for rank, value in enumerate(per_class_by_rank):
            if value is not None:
                writer.add_scalar(f"stage{stage}/final/per_class_top1_by_frequency_rank", value, rank)
        writer.flush()

    def log_run(self, hparams, metrics, images):
        writer = self.run_writer()
        if writer is None:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary
        # The session is this folder: its metric columns are the stage{N}/final/* scalars above.
        for summary in hparams_summary(dict(hparams), dict(metrics)):
            writer.file_writer.add_summary(summary)
        for tag, value in metrics.items():
            if tag not in self._final_tags:         # best_top1: not among the stages' final scalars
                writer.add_scalar(tag, value, 0)
        for path in images:
            writer.add_image(f"plots/{path.stem}", _png_array(path), 0, dataformats="HWC")
        writer.flush()

    def close(self, status):
        self.end_stage(0)
        if self._run_writer is not None:
            self._run_writer.close()
            self._run_writer = None


def _png_array(path: Path):
    """A PNG as an RGB uint8 array (H, W, 3)."""
    import numpy as np
    from PIL import Image
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


class _TrackerIds:
    """Tracker run ids kept in ``<run>/trackers.json``, so that a resumed run continues its
    tracker run instead of starting another."""

    def __init__(self, root: Path):
        self.path = Path(root) / TRACKERS_FILE

    def get(self, name: str) -> str | None:
        try:
            return json.loads(self.path.read_text()).get(name)
        except (OSError, ValueError, AttributeError):
            return None

    def put(self, name: str, value: str) -> None:
        try:
            ids = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except (OSError, ValueError):
            ids = {}
        ids[name] = value
        data = json.dumps(ids, indent=1).encode()
        atomic_write(self.path, lambda f: f.write(data))


class Wandb(Tracker):
    """Weights & Biases: one wandb run per lt_bench run, the hyper-parameters as its config, the
    epochs against ``stage{N}/epoch``, the final metrics in its summary, the plots as images."""

    def __init__(self, root: Path, settings: Mapping[str, Any], hparams: Mapping[str, Any], resume: bool,
                 name: str | None = None):
        import wandb
        self.wandb = wandb
        ids = _TrackerIds(root)
        run_id = ids.get("wandb") if resume else None
        directory = Path(settings.get("dir") or Path(root))      # wandb writes <dir>/wandb/
        directory.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=settings.get("project") or "lt_bench", entity=settings.get("entity"),
                              group=settings.get("group"), tags=list(settings.get("tags") or []),
                              name=settings.get("run_name") or name, mode=settings.get("mode", "offline"),
                              dir=str(directory), id=run_id or uuid.uuid4().hex[:12],
                              resume="allow", config=dict(hparams), reinit="create_new",
                              settings=wandb.Settings(console="off", silent=True))
        ids.put("wandb", self.run.id)
        self._defined: set[int] = set()

    def _define(self, stage: int) -> None:
        if stage not in self._defined:
            self.run.define_metric(f"stage{stage}/epoch")
            self.run.define_metric(f"stage{stage}/*", step_metric=f"stage{stage}/epoch")
            self._defined.add(stage)

    def log_epoch(self, stage, epoch, scalars):
        self._define(stage)
        self.run.log({**scalars, f"stage{stage}/epoch": epoch})

    def log_final(self, stage, epoch, scalars, per_class_by_rank):
        self.run.summary.update(dict(scalars))

    def log_run(self, hparams, metrics, images):
        self.run.summary.update(dict(metrics))
        if images:
            self.run.log({f"plots/{p.stem}": self.wandb.Image(str(p)) for p in images})

    def close(self, status):
        self.run.finish(exit_code=0 if status == "finished" else 1)


class MLflow(Tracker):
    """MLflow through its client (no global active run): the hyper-parameters as params, the
    curves with the stage's epoch as step, final metrics, the plots as artifacts (``plots/``)."""

    STATUS = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

    def __init__(self, root: Path, settings: Mapping[str, Any], hparams: Mapping[str, Any], resume: bool,
                 name: str | None = None):
        uri = settings.get("tracking_uri") or (Path(root).resolve() / "mlruns").as_uri()
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store in maintenance mode and refuses it unless asked
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient
        self.client = MlflowClient(tracking_uri=uri)
        ids = _TrackerIds(root)
        run_id = ids.get("mlflow") if resume else None
        if run_id is None:
            experiment = settings.get("experiment") or "lt_bench"
            found = self.client.get_experiment_by_name(experiment)
            experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
            run_id = self.client.create_run(experiment_id, run_name=settings.get("run_name") or name).info.run_id
            self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in hparams.items()])
            ids.put("mlflow", run_id)
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        self._final_tags: set[str] = set()

    def _metrics(self, scalars: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, step) for key, value in scalars.items()]
        for start in range(0, len(metrics), 1000):              # log_batch takes up to 1000
            self.client.log_batch(self.run_id, metrics=metrics[start:start + 1000])

    def log_epoch(self, stage, epoch, scalars):
        self._metrics(scalars, epoch)

    def log_final(self, stage, epoch, scalars, per_class_by_rank):
        self._metrics(scalars, epoch)
        self._final_tags.update(scalars)

    def log_run(self, hparams, metrics, images):
        self._metrics({k: v for k, v in metrics.items() if k not in self._final_tags}, 0)     # best_top1
        for path in images:
            self.client.log_artifact(self.run_id, str(path), "plots")

    def close(self, status):
        self.client.set_terminated(self.run_id, self.STATUS.get(status, "FAILED"))


def open_run_log(cfg, root: Path, resume: bool, name: str | None = None) -> RunLog:
    """The run's log on rank 0: metrics.csv in ``root``, and the trackers ``logger`` names."""
    settings = check_logger(cfg)
    trackers: list[Tracker] = []
    if settings.get("tensorboard", True):
        trackers.append(TensorBoard(Path(root) / "tensorboard"))
    kind = {"wandb": Wandb, "mlflow": MLflow}.get(settings["name"])
    if kind is not None:
        try:
            trackers.append(kind(Path(root), settings, run_hparams(cfg), resume, name))
        except Exception as err:   # noqa: BLE001 - a tracker that cannot start (a server down) costs its curves only
            log.warning("logger=%s could not start (%s: %s); training goes on with metrics.csv%s", settings["name"],
                        type(err).__name__, err, " and TensorBoard" if settings.get("tensorboard", True) else "")
    return RunLog(root, split=str(cfg.eval.split), trackers=trackers)
