"""Entry point: compose the Hydra config, check it, then hand over to lt_bench.cli (the code is
lt_bench/main.py, which an installed package runs as ``lt-bench train`` or ``python -m lt_bench.main``).

    python run.py task=cifar100lt imbalance=100
    torchrun --nproc_per_node=4 run.py task=cifar100lt imbalance=100
    srun --ntasks-per-node=4 python run.py task=cifar100lt imbalance=100
    python run.py -m hydra/launcher=slurm task=imagenetlt seed=0,1,2 resume=auto
"""
from lt_bench.main import entry

if __name__ == "__main__":
    entry()
