"""SIGTERM as cluster schedulers send it: finish the current step, save, exit.

Training checks ``GracefulStop.agreed()`` after every optimizer step.  Under DDP the ranks
may receive the signal at different steps, so they agree by an all-reduce (MAX) of the flag:
all stop after the same step, none waits forever in a gradient all-reduce of the others.
"""
from __future__ import annotations

import logging
import signal
import threading

import torch

from lt_bench.distributed import DistContext
from lt_bench.errors import LtBenchError

log = logging.getLogger(__name__)


class TrainingInterrupted(LtBenchError):
    """Training stopped on SIGTERM after saving a checkpoint (resume=true continues)."""

    exit_status = 143   # 128 + SIGTERM, what a terminated process reports


class GracefulStop:
    def __init__(self, ctx: DistContext):
        self.ctx, self.requested, self._previous = ctx, False, None

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _on_signal(self, signum, frame) -> None:
        if not self.requested:
            log.warning("SIGTERM: stopping after the current step, saving a checkpoint")
        self.requested = True

    def agreed(self) -> bool:
        """Should every rank stop now?  (A collective under DDP: call it on all ranks.)"""
        if not self.ctx.is_distributed:
            return self.requested
        flag = torch.tensor([int(self.requested)], device=self.ctx.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())
