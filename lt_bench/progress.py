"""Progress bars: shown on rank 0 when asked for and stderr is a terminal (logs stay clean)."""
from __future__ import annotations

from typing import Iterable

from tqdm import tqdm


def progress_bar(iterable: Iterable, show: bool, desc: str, total: int | None = None) -> tqdm:
    # disable=None lets tqdm switch itself off when stderr is not a TTY.
    return tqdm(iterable, desc=desc, total=total, disable=None if show else True, leave=False,
                dynamic_ncols=True)
