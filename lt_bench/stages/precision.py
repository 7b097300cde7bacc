"""Mixed precision (``train.amp``): the registered autocast modes.  Losses are always float32
(the activations compute them with autocast off)."""
from __future__ import annotations

import torch

from lt_bench.registries import AMP_MODES


class Precision:
    dtype: torch.dtype | None = None      # autocast dtype; None: float32 throughout
    needs_cuda = False
    grad_scaling = False                  # fp16 gradients need a GradScaler


@AMP_MODES.register("none")
class Float32(Precision):
    pass


@AMP_MODES.register("bf16")
class BFloat16(Precision):
    dtype = torch.bfloat16


@AMP_MODES.register("fp16")
class Float16(Precision):
    dtype = torch.float16
    needs_cuda = True
    grad_scaling = True


def amp_dtype(mode: str) -> torch.dtype | None:
    return AMP_MODES.get(mode).cls.dtype
