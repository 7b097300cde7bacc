"""forked_map, Once and no_gc: the parts' results in order from forked processes, ``meanwhile``
run once in this process while they work (their errors before its own), a callable run at most
once that keeps its value or its error, and the cyclic GC paused and put back as it was."""
from __future__ import annotations

import gc
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from lt_bench.detection import forked
from lt_bench.detection.forked import Once, forked_map, no_gc

needs_fork = pytest.mark.skipif(not forked.can_fork(), reason="the 'fork' start method is not available here")
WAIT_S = 30.0        # how long a child waits for the parent's flag before giving up (never on a working map)


# ---- what the forked processes run (module level: pickled by name) ---------------------------
def wait_for_flag(shared: dict, part: int) -> tuple:
    """Blocks until the flag file (written by the parent's meanwhile) exists; gives back what it
    computed from ``shared``, whether it saw the flag, and its pid."""
    deadline = time.monotonic() + WAIT_S
    flag = Path(shared["flag"])
    while not flag.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return shared["values"][part], flag.exists(), os.getpid()


def fail_on_odd(shared: dict, part: int) -> int:
    if part % 2:
        raise ValueError(f"child part {part}")
    return part * shared["factor"]


def times(shared: dict, part: int) -> int:
    return part * shared["factor"]


class Recorder:
    """A meanwhile that counts its calls, notes its pid and the children alive then, writes the
    flag the children wait for, and raises ``error`` if given."""

    def __init__(self, flag: Path | None = None, error: BaseException | None = None):
        self.flag, self.error = flag, error
        self.calls, self.pids, self.children = 0, [], set()

    def __call__(self):
        self.calls += 1
        self.pids.append(os.getpid())
        self.children |= {p.pid for p in multiprocessing.active_children()}
        if self.flag is not None:
            self.flag.write_text("go")
        if self.error is not None:
            raise self.error
        return "meanwhile's value"


# ---- forked_map ---------------------------------------------------------------------------------
@needs_fork
def test_results_in_part_order_and_meanwhile_once_in_this_process_while_the_children_wait(tmp_path):
    """The children block until meanwhile's flag exists, so meanwhile ran while they were alive
    (a map that awaited them first would leave them to time out without the flag); it ran here,
    once, and the results are in the parts' order (not completion order), computed from shared."""
    parts = [3, 0, 4, 1, 2]
    shared = {"flag": str(tmp_path / "flag"), "values": {p: f"value {p}" for p in parts}}
    meanwhile = Recorder(tmp_path / "flag")
    out = forked_map(wait_for_flag, parts, shared, meanwhile)
    assert [value for value, _, _ in out] == [f"value {p}" for p in parts]
    assert all(saw for _, saw, _ in out), "a child never saw the flag: meanwhile did not run while it waited"
    assert meanwhile.calls == 1 and meanwhile.pids == [os.getpid()]
    child_pids = {pid for _, _, pid in out}
    assert os.getpid() not in child_pids                   # the parts ran in other processes
    assert child_pids <= meanwhile.children                # ... alive when meanwhile ran
    assert forked._SHARED is None                          # nothing left for a later fork to inherit


@needs_fork
def test_without_meanwhile(tmp_path):
    assert forked_map(times, [5, 1, 7], {"factor": 3}) == [15, 3, 21]
    assert forked._SHARED is None


@needs_fork
def test_a_childs_error_is_raised_before_meanwhiles():
    """Parts 1 and 3 fail, meanwhile fails too: the first failing part's error is raised (and
    meanwhile still ran, once)."""
    meanwhile = Recorder(error=RuntimeError("meanwhile failed"))
    with pytest.raises(ValueError, match=r"^child part 1$"):
        forked_map(fail_on_odd, [0, 1, 2, 3], {"factor": 2}, meanwhile)
    assert meanwhile.calls == 1 and meanwhile.pids == [os.getpid()]
    assert forked._SHARED is None


@needs_fork
def test_a_childs_error_without_meanwhile_failing():
    meanwhile = Recorder()
    with pytest.raises(ValueError, match=r"^child part 3$"):
        forked_map(fail_on_odd, [0, 2, 3], {"factor": 2}, meanwhile)
    assert meanwhile.calls == 1


@needs_fork
def test_meanwhiles_error_is_raised_when_the_children_succeed():
    meanwhile = Recorder(error=RuntimeError("meanwhile failed"))
    with pytest.raises(RuntimeError, match=r"^meanwhile failed$"):
        forked_map(fail_on_odd, [0, 2, 4], {"factor": 2}, meanwhile)
    assert meanwhile.calls == 1 and meanwhile.pids == [os.getpid()]
    assert forked._SHARED is None
    # and the map still works afterwards
    assert forked_map(times, [2, 4], {"factor": 5}) == [10, 20]


# ---- Once ---------------------------------------------------------------------------------------
def test_once_runs_once_across_calls_and_keeps_the_value():
    calls = []
    once = Once(lambda: calls.append(1) or ["the value"])
    assert once() is None and once() is None
    assert calls == [1]
    first = once.result()
    assert first == ["the value"] and once.result() is first
    assert calls == [1]


def test_once_result_runs_it_when_nobody_has():
    calls = []
    once = Once(lambda: calls.append(1) or 42)
    assert calls == []
    assert once.result() == 42 and once.result() == 42
    once()
    assert calls == [1]


@pytest.mark.parametrize("called_first", [True, False])
def test_once_keeps_the_error_and_raises_it_on_every_result(called_first):
    """Called first, the error is kept, not raised; result() raises it (running the function
    if nobody has), the same exception object every time, and the function runs once."""
    calls = []

    def failing():
        calls.append(1)
        raise KeyError("broken")
    once = Once(failing)
    if called_first:
        once()                           # the error is kept, not raised by the call
        once()
        assert calls == [1]
    with pytest.raises(KeyError, match="broken") as first:
        once.result()
    with pytest.raises(KeyError, match="broken") as second:
        once.result()
    assert first.value is second.value
    assert calls == [1]


# ---- no_gc --------------------------------------------------------------------------------------
@pytest.fixture
def gc_state():
    """The GC put back as it was before the test, whatever the test did."""
    enabled = gc.isenabled()
    yield
    (gc.enable if enabled else gc.disable)()


@pytest.mark.parametrize("before", [True, False])
def test_no_gc_pauses_and_puts_back(gc_state, before):
    (gc.enable if before else gc.disable)()
    with no_gc():
        assert not gc.isenabled()
    assert gc.isenabled() is before


@pytest.mark.parametrize("before", [True, False])
def test_no_gc_puts_back_when_the_body_raises(gc_state, before):
    (gc.enable if before else gc.disable)()
    with pytest.raises(ZeroDivisionError):
        with no_gc():
            assert not gc.isenabled()
            1 / 0
    assert gc.isenabled() is before


def test_no_gc_nested(gc_state):
    gc.enable()
    with no_gc():
        with no_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()          # the inner one found it disabled: leaves it so
    assert gc.isenabled()
