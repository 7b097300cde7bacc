"""Where things are: the repository, a run folder's layout, and a configuration's identity.

A leaf both tracks use (classification and detection), importing only OmegaConf: the layout of
a run folder (``RunFolder``) and the config hash are spelt out here and nowhere else.

    <run>/config.yaml                 the resolved configuration
    <run>/results.json                one record per evaluated model (records.py)
    <run>/checkpoints/stage{1,2}.pt   atomic checkpoints (resume, stage=2, plots)
    <run>/tensorboard/stage{1,2}/     per-epoch curves and final metrics
    <run>/cache/                      stage-2 feature cache
    <run>/*.png                       analysis plots (plots.py)
    <run>/lvis_categories.json, lvis_val_subset.json   detection: rank 0's reading of the annotations
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lt_bench.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent       # the repository (configs/, run.py, data_splits/)
_PACKAGE = Path(__file__).resolve().parent
# The configs and the split-file manifest: the repository's folders in a checkout (or an editable
# install), the copies inside the package in an installed wheel (pyproject.toml maps them there).
CONFIG_DIR = REPO / "configs" if (REPO / "configs" / "config.yaml").is_file() else _PACKAGE / "configs"
SPLITS_DIR = REPO / "data_splits" if (REPO / "data_splits").is_dir() else _PACKAGE / "data_splits"


def config_file(path: str) -> Path:
    """A file the configs name relative to the repository (``configs/detection/x.py``), wherever
    the configs are."""
    parts = Path(path).parts
    if Path(path).is_absolute():
        return Path(path)
    if parts[:1] == ("configs",):
        return CONFIG_DIR.joinpath(*parts[1:])
    return REPO / path
RESULTS_FILE = "results.json"
PLOTS = {"per_class_accuracy": "per_class_accuracy.png", "weight_norms": "weight_norms.png",
         "activations": "activations.png"}

# Keys that say where and how a run executes, not what it computes: excluded from the hash.
RUNTIME_KEYS = ("out_dir", "resume", "overwrite", "progress", "mode", "stage", "stage1.checkpoint", "device",
                "data.root", "data.splits_dir", "data.download", "data.num_workers", "data.persistent_workers",
                "data.prefetch_factor", "train.compile", "train.compile_backend", "distributed", "check_data", "leaderboard", "plots", "logger")


@dataclass(frozen=True)
class RunFolder:
    """The files of one run."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def results(self) -> Path:
        return self.root / RESULTS_FILE

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def checkpoint(self, stage: int) -> Path:
        return self.checkpoints / f"stage{stage}.pt"

    def tensorboard(self, stage: int) -> Path:
        return self.root / "tensorboard" / f"stage{stage}"

    @property
    def feature_cache(self) -> Path:
        return self.root / "cache"

    def plot(self, name: str) -> Path:
        return self.root / PLOTS[name]

    @property
    def lvis_categories(self) -> Path:
        return self.root / "lvis_categories.json"

    @property
    def lvis_val_subset(self) -> Path:
        return self.root / "lvis_val_subset.json"


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


# Keys that change how a trained model is evaluated and reported, not the weights: left out of
# the hash that guards resume, so a fixed evaluation setting never forces retraining.
EVALUATION_KEYS = ("eval", "data.eval_batch_size", "overwrite")
RESUME_CHOICES = (False, True, "auto")


def training_hash(cfg: DictConfig) -> str:
    """The hash a checkpoint carries: what changes the trained weights (not the evaluation)."""
    return config_hash(cfg, exclude=EVALUATION_KEYS)


def run_files(root: Path) -> list[Path]:
    """The files that make ``root`` a run: its records and checkpoints (Hydra's log and config
    copies do not)."""
    folder = RunFolder(root)
    found = [folder.results] if folder.results.exists() else []
    return found + (sorted(folder.checkpoints.glob("*.pt")) if folder.checkpoints.is_dir() else [])


def check_writable(root: Path) -> None:
    """``root`` is, or can be made, a folder this process may write (ConfigError otherwise): the
    nearest existing folder on its path must be a writable folder, not a file."""
    existing = root.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == root.absolute() else f": {existing} on its path"
        raise ConfigError(f"out_dir={root} is a file, not a folder{where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == root.absolute() else f" ({existing}, where it would be made)"
        raise ConfigError(f"out_dir={root} is not writable{where}: choose another out_dir")


def accept_run_folder(cfg: DictConfig, root: Path) -> str:
    """May this run use ``root``?  Before anything is written there: ``"new"`` (start),
    ``"resume"`` (continue its checkpoints) or ``"overwrite"`` (replace the run it holds);
    otherwise ConfigError, so a finished run is never overwritten by accident and a mistyped
    ``out_dir`` never silently starts from scratch.  ``resume=auto`` resumes when there is a
    checkpoint, else starts (requeued cluster jobs)."""
    resume = cfg.get("resume", False)
    if resume not in RESUME_CHOICES:
        raise ConfigError(f"resume must be true, false or auto, got {resume!r}")
    check_writable(root)
    found = run_files(root)
    checkpoints = [f for f in found if f.suffix == ".pt"]
    if resume is True and not checkpoints:
        raise ConfigError(f"resume=true but {root} holds no checkpoint to resume (checkpoints/stage*.pt): check "
                          "out_dir, or use resume=auto to start when there is nothing to resume")
    if resume and checkpoints:
        return "resume"
    if found:
        if cfg.get("overwrite", False):
            return "overwrite"
        names = ", ".join(str(f.relative_to(root)) for f in found)
        raise ConfigError(f"out_dir={root} already holds a run ({names}): resume=true continues it, "
                          "overwrite=true replaces it, or choose another out_dir")
    return "new"


def _drop(container: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        container = container.get(p, {})
        if not isinstance(container, dict):
            return
    container.pop(leaf, None)


def config_hash(cfg: DictConfig, exclude: tuple[str, ...] = ()) -> str:
    """sha256 (first 16 hex digits) of the resolved config without its runtime keys: two
    runs with the same hash train the same thing.  ``exclude=("seed",)`` gives the hash
    shared by the seeds of one setup."""
    container = OmegaConf.to_container(cfg, resolve=True)
    container.pop("hydra", None)
    for key in RUNTIME_KEYS + tuple(exclude):
        _drop(container, key)
    blob = json.dumps(container, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
