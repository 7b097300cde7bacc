"""Entry point: compose the Hydra config, then hand over to lt_bench.cli.

    python run.py task=cifar100lt imbalance=100
    torchrun --nproc_per_node=4 run.py task=cifar100lt imbalance=100
"""
import os
import sys

# Spinning OpenMP threads make a second busy process (DataLoader worker, another rank)
# slow training steps down many times on a small CPU; passive waiting costs nothing on GPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from lt_bench.compose import hydra_overrides_for_rank, register_resolvers  # noqa: E402

register_resolvers()
sys.argv += hydra_overrides_for_rank(sys.argv[1:])


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from lt_bench.cli import run_from_config   # after composition: Hydra's own errors come at once
    run_from_config(cfg)


if __name__ == "__main__":
    main()
