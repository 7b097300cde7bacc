"""Dispatch by mode, and the ``lt-bench`` console script."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from omegaconf import DictConfig

from lt_bench.errors import LtBenchError

log = logging.getLogger("lt_bench")


def hydra_overrides_for_rank(argv: list[str]) -> list[str]:
    """Extra Hydra overrides for torchrun ranks other than 0.

    Every rank composes the same config, but only rank 0 owns the run folder: the others
    must not create timestamped folders of their own (the second may differ) nor write
    Hydra's files and logs there.  They log to the console only; rank 0 broadcasts the
    output folder once the process group is up.
    """
    if int(os.environ.get("RANK", "0")) == 0:
        return []
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv}
    extra = {"hydra.run.dir": "hydra.run.dir=.", "hydra.output_subdir": "hydra.output_subdir=null",
             "hydra/job_logging": "hydra/job_logging=stdout"}
    return [override for key, override in extra.items() if key not in given]


def run_from_config(cfg: DictConfig) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        if cfg.mode == "train":
            from lt_bench.pipeline import run_training
            run_training(cfg)
        else:
            from lt_bench.config import validate
            validate(cfg)  # raises, naming the valid modes
    except LtBenchError as err:
        log.error("%s: %s", type(err).__name__, err)
        sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """``lt-bench train [overrides]``: the same as ``python run.py [overrides]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: lt-bench train [key=value ...]   (Hydra overrides, as for run.py)")
        return
    command, rest = argv[0], argv[1:]
    if command != "train":
        sys.exit(f"lt-bench: unknown command {command!r}; valid: train")
    run_py = Path(__file__).resolve().parent.parent / "run.py"
    if not run_py.is_file():
        sys.exit(f"lt-bench train needs the repository's run.py and configs/ (not found at {run_py}); "
                 "install with pip install -e .")
    os.execv(sys.executable, [sys.executable, str(run_py), *rest])
