"""The Hydra entry point of every run: compose the config, check it (before torch is imported),
hand over to lt_bench.cli.  ``python run.py ...`` (the repository's script), ``lt-bench train ...``
and ``python -m lt_bench.main ...`` (an installed package, from any folder) all come here.

    python run.py task=cifar100lt imbalance=100
    torchrun --nproc_per_node=4 run.py task=cifar100lt imbalance=100
    srun --ntasks-per-node=4 python run.py task=cifar100lt imbalance=100
    python run.py -m hydra/launcher=slurm task=imagenetlt seed=0,1,2 resume=auto
"""

import logging
import os
import sys

# Spinning OpenMP threads make a second busy process (DataLoader worker, another rank)
# slow training steps down many times on a small CPU; passive waiting costs nothing on GPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _slurm_tasks() -> bool:
    """Started by srun as one of several tasks (or holding variables derived for one)?"""
    ntasks = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS") or "1"
    return (ntasks.isdigit() and int(ntasks) > 1) or "LT_BENCH_DDP_FROM_SLURM" in os.environ


# srun's tasks get torchrun's RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT from SLURM's variables
# before anything reads RANK (hydra_overrides_for_rank, check_run_folder); lt_bench.distributed
# imports torch, so only then.
if _slurm_tasks():
    from lt_bench.distributed import apply_slurm_env
    from lt_bench.errors import ConfigError as _ConfigError
    try:
        apply_slurm_env()
    except _ConfigError as err:
        print(f"ConfigError: {err}", file=sys.stderr)
        sys.exit(2)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from lt_bench.compose import (check_composed, check_overrides, check_run_folder, check_sweep,  # noqa: E402
                              hydra_overrides_for_rank, setup_hydra)
from lt_bench.errors import CheckpointError, ConfigError  # noqa: E402

from lt_bench.run_folder import CONFIG_DIR  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        _run(cfg)
    finally:
        _drop_folder_without_a_run()


def _run(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    try:   # names, values and added keys, before torch is imported: a typo fails in a second
        check_composed(cfg, list(HydraConfig.get().overrides.task))
    except ConfigError as err:
        logging.getLogger("lt_bench").error("ConfigError: %s", err)
        sys.exit(2)
    if _slurm_tasks():   # Hydra's submitit launcher calls main() in each srun task, past the start above
        from lt_bench.distributed import apply_slurm_env
        apply_slurm_env()
    from lt_bench.cli import run_from_config
    run_from_config(cfg)


# What Hydra and a run write before its first result: a folder holding only these is no run.
SCAFFOLD = {".hydra", "run.log", "config.yaml", ".lock", "tensorboard", "metrics.csv", "trackers.json", "wandb",
            "mlruns"}


def _drop_folder_without_a_run() -> None:
    """A check_data or leaderboard run, or a run that failed before its first checkpoint, leaves
    no run folder behind (Hydra makes one for every start): removed when it holds nothing but
    Hydra's files and the run's scaffolding (no records, no checkpoints).  Rank 0 only."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    from lt_bench.run_folder import run_files
    if os.environ.get("RANK", "0") != "0":
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    if not folder.is_dir() or run_files(folder) or any(p.name not in SCAFFOLD for p in folder.iterdir()):
        return
    for handler in logging.getLogger().handlers[:]:     # Hydra's file handler holds run.log open
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == folder:
            logging.getLogger().removeHandler(handler)
            handler.close()
    shutil.rmtree(folder, ignore_errors=True)
    cwd, parent = Path.cwd().resolve(), folder.resolve().parent
    while parent != cwd and cwd in parent.parents and not any(parent.iterdir()):   # runs/<task>/ if now empty
        parent.rmdir()
        parent = parent.parent


def entry() -> None:
    """The command line's checks that need no Hydra run folder, then Hydra's run."""
    setup_hydra()
    sys.argv += hydra_overrides_for_rank(sys.argv[1:])
    try:
        check_overrides(sys.argv[1:])       # an unknown key, with the valid ones
        check_sweep(sys.argv[1:])
        check_run_folder(sys.argv[1:])      # before Hydra writes into out_dir
    except (ConfigError, CheckpointError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2)
    main()


if __name__ == "__main__":
    entry()
