"""Many-, medium- and few-shot classes: the one definition the metrics, the plots and
check-data use.  A class is many-shot with more than ``many_above`` training images, few-shot
with fewer than ``few_below`` (the field's 100 and 20, ``eval.shot_thresholds``)."""
from __future__ import annotations

import numpy as np

SHOT_GROUPS = ("many", "medium", "few")
DEFAULT_THRESHOLDS = (100, 20)


def shot_groups(train_counts, many_above: int = DEFAULT_THRESHOLDS[0],
                few_below: int = DEFAULT_THRESHOLDS[1]) -> dict[str, list[int]]:
    """Classes by training images: many (> many_above), medium, few (< few_below)."""
    counts = np.asarray(train_counts)
    return {
        "many": np.flatnonzero(counts > many_above).tolist(),
        "medium": np.flatnonzero((counts >= few_below) & (counts <= many_above)).tolist(),
        "few": np.flatnonzero(counts < few_below).tolist(),
    }


def thresholds_of(cfg) -> tuple[int, int]:
    """(many_above, few_below) of a config (``eval.shot_thresholds``), else the field's."""
    values = (cfg.get("eval") or {}).get("shot_thresholds") if cfg is not None else None
    return tuple(int(v) for v in values) if values else DEFAULT_THRESHOLDS


def describe(many_above: int, few_below: int) -> str:
    return f"many > {many_above}, medium {few_below}-{many_above}, few < {few_below} training images"
