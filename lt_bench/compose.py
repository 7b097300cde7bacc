"""Hydra composition helpers that run before any heavy import.

run.py calls these before Hydra composes the config, so this module imports nothing but
OmegaConf: a misspelt task or key is then reported by Hydra in about a second, instead of
after torch, torchvision and timm have loaded (about 8 s on a 2-core CPU).
"""
from __future__ import annotations

import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${lt_bench.if_null:a,b}``: a unless it is null, else b (Hydra's run.dir uses it)."""
    if not OmegaConf.has_resolver("lt_bench.if_null"):
        OmegaConf.register_new_resolver("lt_bench.if_null", lambda value, default: default if value is None else value)


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
