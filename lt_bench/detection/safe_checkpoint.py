"""Reading detector checkpoints without running code: for ``lt-bench det-weight-norms`` and for
every local checkpoint mmengine loads in a run (``detection.load_from``, a backbone file), through
the loader ``lt_bench.detection.registry`` puts in place of mmengine's ``torch.load``.

Loading safely.  Unpickling can run any code the pickle names, so checkpoints are read by
torch's ``weights_only`` unpickler (tensors, numbers, strings, containers), extended by a fixed
allowlist: numpy's array, dtype and scalar rebuilders (mmengine's ``message_hub`` and ``meta``
hold numpy values), and inert stand-ins (``Unread``) for the two other globals that an mmengine
runner's checkpoint holds: ``mmengine.logging.history_buffer.HistoryBuffer`` and the
``getattr`` that its pickled statistics methods use.  The stand-ins are never the real thing: no
module is imported for them and they call nothing, they only keep the pickled state.  Any other
global is refused before anything is built, naming the file and the global.
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lt_bench.errors import DataError


class Unread:
    """Stands in for a class or function that a checkpoint names (``pickled_as``) but that the
    loader never imports: it keeps the pickled arguments and state and runs nothing."""

    pickled_as = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "Unread":
        obj = object.__new__(cls)
        obj.args, obj.state = args, None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.pickled_as}{self.args if self.args else ''}, not loaded>"


STAND_INS = tuple(type(name.rsplit(".", 1)[1], (Unread,), {"pickled_as": name, "__module__": __name__})
                  for name in ("mmengine.logging.history_buffer.HistoryBuffer", "builtins.getattr"))


def _allowlist() -> list:
    """What the loader accepts beyond torch's own ``weights_only`` set: numpy's rebuilders (under
    the names numpy 1 and numpy 2 pickle them with) and the inert stand-ins."""
    core = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    items: list = [np.ndarray, np.dtype]
    items += [t for t in vars(np.dtypes).values() if isinstance(t, type) and issubclass(t, np.dtype)]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        items += [(core._reconstruct, f"{module}._reconstruct"), (core.scalar, f"{module}.scalar")]
    return items + [(cls, cls.pickled_as) for cls in STAND_INS]


def load_checkpoint(path: str | os.PathLike) -> tuple[Mapping[str, Any], Mapping[str, Any] | None]:
    """(state dict, ``meta`` or None) of a checkpoint: a dict with ``state_dict`` (mmengine,
    mmdet) or a bare state dict, read without running code (see the module doc).  DataError
    naming the file (and the global it would have to import) when it cannot be read safely."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise DataError(f"checkpoint not found: {path}" if not path.exists() else f"{path} is not a file")
    with torch.serialization.safe_globals(_allowlist()):
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise DataError(_refusal(path, err)) from None
        except Exception as err:          # a damaged file: torch raises many types
            raise DataError(f"cannot read the checkpoint {path}: {str(err).splitlines()[0] if str(err) else err!r}") \
                from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        meta = obj.get("meta")
        return obj["state_dict"], meta if isinstance(meta, Mapping) else None
    if isinstance(obj, Mapping) and any(torch.is_tensor(v) for v in obj.values()):
        return obj, None
    raise DataError(f"{path}: neither a checkpoint with a 'state_dict' nor a state dict of tensors "
                    f"(a {type(obj).__name__}" + (f" with keys {', '.join(map(str, list(obj)[:8]))})"
                                                  if isinstance(obj, Mapping) else ")"))


def _refusal(path: Path, err: Exception) -> str:
    """The refusal's message: the globals the file would import (read from its pickle without
    running it), else the unpickler's own reason.  Called inside the allowlist's context."""
    import torch
    try:
        offending = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:                    # not a zip checkpoint: the unpickler's message names one
        offending = sorted(set(re.findall(r"GLOBAL (\S+)", str(err))))
    if offending:
        return (f"{path}: refused, reading it would import {', '.join(offending)}, which the safe loader does not "
                "allow (a pickle can run any code it imports). If you trust the file, re-save its weights alone: "
                f"torch.save(torch.load('{path}', weights_only=False)['state_dict'], 'weights.pth')")
    found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", str(err), re.S)
    reason = " ".join((found.group(1) if found else str(err)[:300]).split())
    return f"cannot read the checkpoint {path} with the safe loader: {reason}"
