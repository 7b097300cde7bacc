"""SLURM's warning before the time limit (SIGUSR1; SIGUSR2 from submitit) is saved like SIGTERM,
and is then passed on to the handler that was there before (submitit's: requeue the job)."""
import os
import signal

import pytest

from lt_bench.distributed import DistContext
from lt_bench.errors import LtBenchError
from lt_bench.signals import STOP_SIGNALS, GracefulStop, TrainingInterrupted, quiet_worker

USR = (signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture(autouse=True)
def handlers_restored():
    before = {signum: signal.getsignal(signum) for signum in (*STOP_SIGNALS, *USR)}
    yield
    for signum, handler in before.items():
        signal.signal(signum, handler)


@pytest.mark.parametrize("signum,status", [(signal.SIGUSR1, 138), (signal.SIGUSR2, 140)])
def test_slurms_warning_is_a_stop_request(signum, status):
    signal.signal(signum, signal.SIG_DFL)    # unhandled, SIGUSR1/2 would end the process unsaved
    with GracefulStop(DistContext()) as stop:
        assert not stop.agreed()
        os.kill(os.getpid(), signum)
        assert stop.agreed() and stop.signal_name == signal.Signals(signum).name
        assert TrainingInterrupted("x", stop.signum).exit_status == status
    assert signal.getsignal(signum) is signal.SIG_DFL


class Requeue(Exception):
    pass


def test_the_previous_handler_gets_the_signal_once_the_checkpoint_is_saved():
    """Hydra's submitit launcher installs a SIGUSR2 handler that requeues the job and exits;
    during training ours holds the signal, saves, and hands it on when training stops."""
    calls = []

    def submitit_requeue(signum, frame):
        calls.append(("requeue", signum))
        raise Requeue                            # submitit: scontrol requeue, then sys.exit

    signal.signal(signal.SIGUSR2, submitit_requeue)
    with pytest.raises(Requeue):
        with GracefulStop(DistContext()) as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert calls == [] and stop.agreed()   # not yet: training saves first
            calls.append(("saved", 0))
            raise TrainingInterrupted("stage1: SIGUSR2, checkpoint saved", stop.signum)
    assert calls == [("saved", 0), ("requeue", signal.SIGUSR2)]
    assert signal.getsignal(signal.SIGUSR2) is submitit_requeue


def test_a_handler_that_returns_leaves_the_interruption_to_propagate():
    """Ranks other than 0: submitit's handler only logs; the rank exits with 128 + signal."""
    calls = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))   # submitit's "bypass"
    with pytest.raises(TrainingInterrupted) as err:
        with GracefulStop(DistContext()) as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            os.kill(os.getpid(), signal.SIGTERM)
            stop.agreed()
            raise TrainingInterrupted("saved", stop.signum)
    assert calls == [signal.SIGUSR2, signal.SIGTERM] and isinstance(err.value, LtBenchError)


def test_a_request_that_arrives_as_training_ends_is_not_lost():
    """The last step was already taken: no interruption, but the requeue still happens."""
    calls = []
    signal.signal(signal.SIGUSR2, lambda signum, frame: calls.append(signum))
    with GracefulStop(DistContext()):
        os.kill(os.getpid(), signal.SIGUSR2)
    assert calls == [signal.SIGUSR2]


@pytest.mark.parametrize("previous", [signal.SIG_DFL, signal.SIG_IGN])
def test_nothing_is_passed_on_to_a_default_disposition(previous):
    signal.signal(signal.SIGUSR1, previous)
    with pytest.raises(TrainingInterrupted):
        with GracefulStop(DistContext()) as stop:
            os.kill(os.getpid(), signal.SIGUSR1)
            raise TrainingInterrupted("saved", stop.signum)
    assert signal.getsignal(signal.SIGUSR1) == previous


def test_ctrl_c_is_not_passed_on():
    """Python's own SIGINT handler would raise KeyboardInterrupt after the save: status 130 stays."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(TrainingInterrupted) as err:
        with GracefulStop(DistContext()) as stop:
            os.kill(os.getpid(), signal.SIGINT)
            raise TrainingInterrupted("saved", stop.signum)
    assert err.value.exit_status == 130


def test_loader_workers_leave_slurms_warning_to_the_main_process():
    """SLURM signals every process of the job step, DataLoader workers included."""
    quiet_worker(0)
    for signum in (signal.SIGINT, *USR):
        assert signal.getsignal(signum) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN
