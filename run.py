"""Entry point: compose the Hydra config, check it, then hand over to lt_bench.cli.

    python run.py task=cifar100lt imbalance=100
    torchrun --nproc_per_node=4 run.py task=cifar100lt imbalance=100
"""
import logging
import os
import sys

# Spinning OpenMP threads make a second busy process (DataLoader worker, another rank)
# slow training steps down many times on a small CPU; passive waiting costs nothing on GPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from lt_bench.compose import (check_composed, check_run_folder, check_sweep, hydra_overrides_for_rank,  # noqa: E402
                              setup_hydra)
from lt_bench.errors import CheckpointError, ConfigError  # noqa: E402

setup_hydra()
sys.argv += hydra_overrides_for_rank(sys.argv[1:])


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    try:   # names, values and added keys, before torch is imported: a typo fails in a second
        check_composed(cfg, list(HydraConfig.get().overrides.task))
    except ConfigError as err:
        logging.getLogger("lt_bench").error("ConfigError: %s", err)
        sys.exit(2)
    from lt_bench.cli import run_from_config
    run_from_config(cfg)


if __name__ == "__main__":
    try:
        check_sweep(sys.argv[1:])
        check_run_folder(sys.argv[1:])      # before Hydra writes into out_dir
    except (ConfigError, CheckpointError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2)
    main()
