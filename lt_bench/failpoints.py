"""Named points where a test can make the process fail as a real fault would.

``LT_BENCH_FAILPOINT=NAME[@RANK][!ACTION]``:

- ``NAME``: where, e.g. ``stage1.epoch_end:2`` (after stage 1 saved its epoch-2 checkpoint),
  ``stage2.step:1:5`` (after step 5 of stage 2's first epoch), ``checkpoint.write:stage1:2``
  (half-way through writing stage 1's checkpoint after epoch 2);
- ``@RANK``: only on that torchrun rank (default: every rank);
- ``!ACTION``: ``kill`` (SIGKILL, the default: a crash, an OOM kill), ``term`` (SIGTERM, a
  scheduler's preemption notice), ``int`` (SIGINT, Ctrl-C), ``usr1``/``usr2`` (SLURM's warning), ``raise`` (a Python exception in that
  rank), ``enospc`` (the OSError of a full disk).

Interruption tests use this to stop a run at an exact place instead of racing a timer; when
unset, a failpoint costs one dictionary lookup.
"""
from __future__ import annotations

import errno
import os
import signal

ENV = "LT_BENCH_FAILPOINT"


class InjectedFault(RuntimeError):
    """The ``raise`` action of a failpoint."""


def failpoint(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    spec, _, action = spec.partition("!")
    spec, _, rank = spec.partition("@")
    if spec != name or (rank and int(rank) != int(os.environ.get("RANK", "0"))):
        return
    action = action or "kill"
    if action == "raise":
        raise InjectedFault(f"failpoint {name} (rank {os.environ.get('RANK', '0')})")
    if action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    signals = {"term": signal.SIGTERM, "int": signal.SIGINT, "usr1": signal.SIGUSR1, "usr2": signal.SIGUSR2,
               "kill": signal.SIGKILL}
    os.kill(os.getpid(), signals.get(action, signal.SIGKILL))
