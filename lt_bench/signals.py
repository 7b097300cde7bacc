"""SIGTERM as cluster schedulers send it, or Ctrl-C: finish the current step, save, exit.

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
    """Training stopped on SIGTERM, SIGINT (Ctrl-C) or SIGUSR1 after saving a checkpoint
    (resume=true continues); the exit status is 128 + the signal's number, as a shell reports it."""

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.exit_status = 128 + int(signum)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class GracefulStop:
    """SIGTERM or a first Ctrl-C (SIGINT): finish the step, save, stop.  A second Ctrl-C stops
    at once (KeyboardInterrupt, no checkpoint of the current epoch)."""

    def __init__(self, ctx: DistContext):
        self.ctx, self.requested, self.signum, self._previous = ctx, False, 0, {}

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else "a stop request"

    def _on_signal(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt      # Ctrl-C twice: stop now
        if not self.requested:
            hint = " (Ctrl-C again stops at once, unsaved)" if signum == signal.SIGINT else ""
            log.warning("%s: stopping after the current step, saving a checkpoint%s", signal.Signals(signum).name,
                        hint)
        self.requested, self.signum = True, max(self.signum, int(signum))

    def agreed(self) -> bool:
        """Should every rank stop now?  (A collective under DDP: call it on all ranks; the ranks
        agree on the signal too.)"""
        if not self.ctx.is_distributed:
            return self.requested
        flag = torch.tensor([self.signum if self.requested else 0], device=self.ctx.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item():
            self.requested, self.signum = True, int(flag.item())
        return bool(flag.item())


def quiet_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a terminal's Ctrl-C reaches every process of the group;
    the workers leave it to the main process, which saves and then shuts them down (no worker
    tracebacks, no "worker exited unexpectedly" mid-save).  SIGTERM keeps its default: it is
    how multiprocessing ends the workers at exit."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
