"""The one compatibility shim of the detection track: lvis 0.5.3 on current NumPy.

lvis 0.5.3 (the official LVIS API, last released 2020) calls ``np.float``, which NumPy
removed in 1.24, so ``LVISEval.accumulate`` crashes on any current NumPy.  Rather than
putting ``float`` back into NumPy for every library of the process, the ``np`` that
``lvis.eval`` sees is replaced by a view of NumPy that also has ``float`` (the builtin,
which is what ``np.float`` always was).  Nothing else changes.
"""
from __future__ import annotations

import types

import numpy


class _NumpyWithFloat(types.ModuleType):
    """NumPy, plus the removed alias ``float`` (= the builtin float)."""

    float = float

    def __getattr__(self, name: str):
        return getattr(numpy, name)


def patch_lvis() -> None:
    """Make ``lvis.eval`` work on NumPy >= 1.24 (idempotent; no-op on old NumPy)."""
    import lvis.eval as lvis_eval
    if hasattr(numpy, "float") or isinstance(lvis_eval.np, _NumpyWithFloat):
        return
    lvis_eval.np = _NumpyWithFloat("numpy")
