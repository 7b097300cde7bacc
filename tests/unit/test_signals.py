"""Ctrl-C and SIGTERM stop training after the current step (lt_bench.signals): the flag, the
signal it names, the exit status, and a second Ctrl-C that stops at once."""
import os
import signal

import pytest

from lt_bench.distributed import DistContext
from lt_bench.signals import GracefulStop, TrainingInterrupted, quiet_worker


def single() -> DistContext:
    return DistContext()


@pytest.mark.parametrize("signum,status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_signal_is_a_request_not_an_exit(signum, status):
    before = signal.getsignal(signum)
    with GracefulStop(single()) as stop:
        assert not stop.agreed()
        os.kill(os.getpid(), signum)           # handled at once in the main thread
        assert stop.agreed() and stop.signal_name == signal.Signals(signum).name
        assert TrainingInterrupted("x", stop.signum).exit_status == status
    assert signal.getsignal(signum) is before  # the previous handler is back


def test_a_second_ctrl_c_stops_at_once():
    with GracefulStop(single()) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested


def test_a_second_sigterm_is_not_an_abort():
    with GracefulStop(single()) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.agreed() and stop.signal_name == "SIGTERM"


def test_loader_workers_leave_ctrl_c_to_the_main_process():
    quieted = (signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
    before = {s: signal.getsignal(s) for s in quieted}
    try:
        quiet_worker(0)
        assert all(signal.getsignal(s) is signal.SIG_IGN for s in quieted)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN   # multiprocessing ends workers so
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
