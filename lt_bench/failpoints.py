"""Named points where a test can make the process die as a crash would (SIGKILL).

``LT_BENCH_FAILPOINT=stage1.epoch_end:2`` kills the process right after stage 1 has
saved the checkpoint of its second epoch.  Interruption tests use this to stop a run at
an exact place instead of racing a timer; unset, a failpoint costs one dict lookup.
"""
from __future__ import annotations

import os
import signal

ENV = "LT_BENCH_FAILPOINT"


def failpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
