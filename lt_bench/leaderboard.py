"""The leaderboard commands: ``lt-bench leaderboard``, ``run.py mode=leaderboard`` (tables from
``leaderboard_table``, text from ``leaderboard_render``)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

from lt_bench.errors import ConfigError, LtBenchError
from lt_bench.fileio import atomic_write
from lt_bench.records import RESULTS_FILE
from lt_bench.leaderboard_render import FORMATS, render
from lt_bench.leaderboard_table import (EPOCHS, KINDS, METRICS, Cell, Column, Row, Table,  # noqa: F401
                                        build_leaderboard, collect_records, load_references, parse_same_setup, protocol,
                                        split_metrics)


def leaderboard_text(paths: Iterable[str | os.PathLike], fmt: str = "md",
                     metrics: Sequence[str] | str | None = None, epoch: str = "auto",
                     same_setup: Iterable[str] | None = None) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown leaderboard format {fmt!r}; valid: {', '.join(FORMATS)}")
    return render(build_leaderboard(list(paths), metrics, epoch=epoch, same_setup=parse_same_setup(same_setup)), fmt)


def write_leaderboard(paths: Sequence[str | os.PathLike], fmt: str = "md", out: str | os.PathLike | None = None,
                      metrics: Sequence[str] | str | None = None, epoch: str = "auto",
                      same_setup: Iterable[str] | None = None) -> int:
    """Print the leaderboard, or write it atomically to ``out`` and print where.  ``out`` may be
    neither a folder nor a records file: the leaderboard never replaces its own input."""
    if out is not None:
        target = Path(out)
        if target.is_dir():
            raise ConfigError(f"--out {target}: is a folder; name the file to write")
        if target.name == RESULTS_FILE or target.resolve() in {Path(r["source"]).resolve()
                                                                for r in collect_records(paths)}:
            raise ConfigError(f"--out {target}: would replace run records ({RESULTS_FILE}); write the table "
                              "to another file")
    text = leaderboard_text(paths, fmt, metrics, epoch, same_setup)
    if out is None:
        print(text, end="")
    else:
        print(f"leaderboard ({fmt}) -> {atomic_write(out, lambda f: f.write(text.encode()))}")
    return 0


def run_leaderboard(cfg) -> int:
    """``python run.py mode=leaderboard leaderboard.paths=[runs] leaderboard.format=md ...``."""
    lb = cfg.leaderboard
    paths = list(lb.paths or [])
    if not paths:
        raise ConfigError("leaderboard.paths is empty: name run folders, e.g. leaderboard.paths=[runs]")
    metrics = lb.get("metrics")
    return write_leaderboard(paths, str(lb.get("format") or "md"), lb.get("out"),
                             metrics if metrics is None or isinstance(metrics, str) else list(metrics),
                             str(lb.get("epoch") or "auto"))


def main(argv: list[str] | None = None) -> int:
    """``lt-bench leaderboard PATH [PATH ...] [--format F] [--out FILE] [--metrics a,b | a b]``."""
    parser = argparse.ArgumentParser(prog="lt-bench leaderboard",
                                     description="results.json files gathered into tables beside the paper")
    parser.add_argument("paths", nargs="*", help="run folders (searched recursively) or results.json files")
    parser.add_argument("--format", default="md", choices=FORMATS)
    parser.add_argument("--out", default=None, help="write to this file (atomically) instead of stdout")
    parser.add_argument("--metrics", nargs="+", action="extend", default=None,
                        help="comma- or space-separated, e.g. top1,many,medium,few,ece (classification; "
                             "default top1)")
    parser.add_argument("--epoch", default="auto", choices=EPOCHS,
                        help="classification: the epoch reported: auto (the best epoch where the run picked one, "
                             "else the last), last, best, both (two rows); each row names its protocol")
    parser.add_argument("--same-setup", action="append", default=None, metavar="OLD=NEW",
                        help="count the runs of setup OLD as setup NEW (setup_hash prefixes, >= 6 hex digits, as "
                             "the rows' [cfg ...] show): the same experiment hashed differently, e.g. run before "
                             "the config gained a key; noted under the table")
    args = parser.parse_args(argv)
    paths, metrics = list(args.paths), None
    if args.metrics is not None:
        # ``--metrics top1 many runs/``: a space-separated list also takes the paths after it
        names = [m.strip() for item in args.metrics for m in item.split(",") if m.strip()]
        known = {m for kind in KINDS for m in METRICS[kind]}
        metrics = [m for m in names if m in known or not os.path.exists(m)]
        paths += [m for m in names if m not in known and os.path.exists(m)]
    if not paths:
        parser.error("name at least one run folder or results.json")
    try:
        return write_leaderboard(paths, args.format, args.out, metrics, args.epoch, args.same_setup)
    except LtBenchError as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
