"""What the ``lt-bench det-*`` analysis commands share: their output files (checked before any
work and again before writing; pictures drawn without pyplot and written atomically) and how an
error ends a command (one line naming the file or value, exit status 2)."""
from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from lt_bench.errors import ConfigError, LtBenchError


def check_outputs(outputs: Sequence[Path], inputs: Sequence[str | os.PathLike], overwrite: bool) -> None:
    """ConfigError when an output is a folder, an input, named twice, or exists without ``--overwrite``."""
    if len({p.resolve() for p in outputs}) != len(outputs):
        raise ConfigError(f"the outputs {', '.join(map(str, outputs))} must be different files")
    for out in outputs:
        if out.is_dir():
            raise ConfigError(f"{out} is a folder; name the file to write")
        if any(out.exists() and Path(p).exists() and out.samefile(p) for p in inputs):
            raise ConfigError(f"{out} is one of the input files")
        if out.exists() and not overwrite:
            raise ConfigError(f"{out} exists; --overwrite replaces it")


def save_png(fig, path: str | os.PathLike) -> Path:
    """Draw ``fig`` on the Agg canvas (no pyplot, no global state) and write it atomically, as an
    RGB PNG (the figure is opaque: no alpha channel, a tenth smaller)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    from lt_bench.fileio import atomic_write
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    buf = io.BytesIO()
    Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB").save(buf, format="png", optimize=True)
    return atomic_write(path, lambda f: f.write(buf.getvalue()))


def run_command(prog: str, body: Callable[[], None]) -> int:
    """``body()``, then 0; an LtBenchError is one line ``Type: message`` on stderr and status 2, a
    missing library (the detection extra) likewise."""
    try:
        body()
    except LtBenchError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 2
    except ImportError as err:         # torch / msgspec / matplotlib: the detection extra
        print(f"{prog} needs the detection extra (pip install 'lt_bench[det]'): {err}", file=sys.stderr)
        return 2
    return 0
