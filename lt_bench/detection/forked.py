"""Work split over forked processes that inherit what they need instead of receiving it: the
evaluator's image shards, the results reader's runs of spans.

``forked_map(function, parts, shared)`` calls ``function(shared, part)`` for each part in a
process of its own, forked after ``shared`` is in place, so ``shared`` (the detection columns,
the evaluator, the file's bytes) is read copy-on-write, never pickled; only the parts and the
results travel.  ``runs(items, weights, count)`` cuts items into that many contiguous runs of
about equal weight.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

_SHARED: Any = None       # what the forked processes inherit (set only while forked_map runs)


def can_fork() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def _call(job: tuple[Callable, Any]) -> Any:
    function, part = job
    return function(_SHARED, part)


def forked_map(function: Callable[[Any, Any], Any], parts: Sequence, shared: Any) -> list:
    """``[function(shared, part) for part in parts]``, each in a forked process, in order; an
    exception raised for a part is raised here (the first part's, in order, first).
    ``function`` is a module-level function (it is pickled by name)."""
    global _SHARED
    _SHARED = shared
    try:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(parts), mp_context=context) as pool:
            return list(pool.map(_call, [(function, part) for part in parts]))
    finally:
        _SHARED = None


def runs(items: np.ndarray, weights: np.ndarray, count: int) -> list[np.ndarray]:
    """``items`` cut into at most ``count`` contiguous, non-empty runs of about equal total weight."""
    total = np.cumsum(weights)
    if not len(total):
        return []
    cuts = np.searchsorted(total, total[-1] * np.arange(1, count) / count, side="right")
    return [r for r in np.split(items, cuts) if len(r)]
