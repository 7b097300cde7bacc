"""Work split over forked processes that inherit what they need instead of receiving it: the
evaluator's runs of categories, the results reader's runs of spans.

``forked_map(function, parts, shared)`` calls ``function(shared, part)`` for each part in a
process of its own, forked after ``shared`` is in place, so ``shared`` (the detection columns,
the evaluator, the file's bytes) is read copy-on-write, never pickled; only the parts and the
results travel.  ``runs(items, weights, count)`` cuts items into that many contiguous runs of
about equal weight.
"""
from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

_SHARED: Any = None       # what the forked processes inherit (set only while forked_map runs)


@contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused (and resumed if it ran) around work that makes
    millions of short-lived containers freed by reference counting (decoded detections, the
    mask dicts pycocotools takes): each collection would walk every container alive, the
    annotations' too, and in a forked process touch the parent's pages.  Measured: 300,000
    mask dicts in 0.57-0.82 s with it, 0.15 s without."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _call(job: tuple[Callable, Any]) -> Any:
    function, part = job
    return function(_SHARED, part)


def forked_map(function: Callable[[Any, Any], Any], parts: Sequence, shared: Any,
               meanwhile: Callable[[], Any] | None = None) -> list:
    """``[function(shared, part) for part in parts]``, each in a forked process, in order; an
    exception raised for a part is raised here (the first part's, in order, first).
    ``function`` is a module-level function (it is pickled by name).  ``meanwhile``: called
    here once the processes are forked and before their results are awaited (this process
    would otherwise sit idle); what it raises is raised after theirs."""
    global _SHARED
    _SHARED = shared
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(parts), mp_context=context) as pool:
            futures = [pool.submit(_call, (function, part)) for part in parts]   # forks them all
            _SHARED = None          # the children have it; nothing forked later may inherit it
            failed = None
            if meanwhile is not None:
                try:
                    meanwhile()
                except BaseException as err:       # their errors first: they come first in the run
                    failed = err
            out = [future.result() for future in futures]
            if failed is not None:
                raise failed
            return out
    finally:
        _SHARED = None


class Once:
    """A callable run at most once (later calls do nothing); ``result()`` gives what it
    returned, or raises what it raised, running it first if no one has."""

    def __init__(self, function: Callable[[], Any]):
        self._function, self._done, self._value, self._error = function, False, None, None

    def __call__(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._value = self._function()
        except Exception as err:          # kept for result(): the caller decides which error comes first
            self._error = err

    def result(self) -> Any:
        self()
        if self._error is not None:
            raise self._error
        return self._value


def runs(items: np.ndarray, weights: np.ndarray, count: int) -> list[np.ndarray]:
    """``items`` cut into at most ``count`` contiguous, non-empty runs of about equal total weight."""
    total = np.cumsum(weights)
    if not len(total):
        return []
    cuts = np.searchsorted(total, total[-1] * np.arange(1, count) / count, side="right")
    return [r for r in np.split(items, cuts) if len(r)]
