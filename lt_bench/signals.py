"""SIGTERM as cluster schedulers send it, SLURM's warning before the time limit (SIGUSR1, or
SIGUSR2 from submitit), or Ctrl-C: finish the current step, save, exit.

Training checks ``GracefulStop.agreed()`` after every optimizer step.  Under DDP the ranks
may receive the signal at different steps, so they agree by an all-reduce (MAX) of the flag:
all stop after the same step, none waits forever in a gradient all-reduce of the others.

A handler that was there before (Hydra's submitit launcher installs one for SIGUSR2 that
requeues the job, and one for SIGTERM) is called once the checkpoint is saved: the job is
requeued after the save, and resumes with ``resume=auto``.
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


# SIGUSR1: what `sbatch --signal=USR1@120` sends before the time limit (without a handler it would
# end the process unsaved); SIGUSR2: what submitit asks SLURM for (--signal=USR2@signal_delay_s).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def _chainable(handler) -> bool:
    """A Python handler installed before ours (submitit's requeue), not a default or Ctrl-C's."""
    return callable(handler) and handler is not signal.default_int_handler


class GracefulStop:
    """SIGTERM, SIGUSR1, SIGUSR2 or a first Ctrl-C (SIGINT): finish the step, save, stop.  A
    second Ctrl-C stops at once (KeyboardInterrupt, no checkpoint of the current epoch).  On
    leaving, a stop request other than Ctrl-C is passed on to the Python handler that the
    signal had before (``_chainable``), once the checkpoint is written."""

    def __init__(self, ctx: DistContext):
        self.ctx, self.requested, self.signum, self._previous = ctx, False, 0, {}
        self.received: set[int] = set()      # this process's own signals (agreed() adds the ranks')

    def __enter__(self) -> "GracefulStop":
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        previous_handlers, self._previous = self._previous, {}
        for signum, previous in previous_handlers.items():
            signal.signal(signum, previous)
        if not self.requested:
            return
        chained = [(signum, previous_handlers.get(signum)) for signum in sorted(self.received | {self.signum})
                   if signum != signal.SIGINT and _chainable(previous_handlers.get(signum))]
        if chained and isinstance(exc, LtBenchError):
            log.warning("%s", exc)          # where the checkpoint is, before the handler may exit
        for signum, previous in chained:    # submitit's SIGUSR2 handler requeues the job (rank 0) and exits
            log.info("%s: passed on to %s", signal.Signals(signum).name, getattr(previous, "__qualname__", previous))
            previous(signum, None)

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
        self.received.add(int(signum))

    def agreed(self) -> bool:
        """Should every rank stop now?  (A collective under DDP: call it on all ranks; the ranks
        agree on the signal too.)"""
        if not self.ctx.is_distributed:
            return self.requested
        flag = torch.tensor([self.signum if self.requested else 0], device=self.ctx.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        signum = int(flag.item())          # one host sync per call
        if signum:
            self.requested, self.signum = True, signum
        return bool(signum)


def quiet_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a terminal's Ctrl-C reaches every process of the group,
    and SLURM sends its time-limit warning (SIGUSR1/SIGUSR2) to every process of the job step;
    the workers leave them to the main process, which saves and then shuts them down (no worker
    tracebacks, no "worker exited unexpectedly" mid-save; SIGUSR1/2 would otherwise end them).
    SIGTERM keeps its default: it is how multiprocessing ends the workers at exit."""
    for signum in (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
