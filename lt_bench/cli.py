"""Dispatch by mode, and the ``lt-bench`` console script."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from omegaconf import DictConfig

from lt_bench.errors import LtBenchError, error_text
from lt_bench.run_folder import CONFIG_DIR

log = logging.getLogger("lt_bench")


def dispatch(cfg: DictConfig) -> int:
    """Run the configured mode; returns the process exit status."""
    from lt_bench.validate import validate
    validate(cfg)
    if cfg.mode == "check_data":
        from lt_bench.data.checks import run_check_data
        return run_check_data(cfg)
    if cfg.mode == "leaderboard":
        from lt_bench.leaderboard import run_leaderboard
        return run_leaderboard(cfg)
    if cfg.task.get("kind") == "detection":
        from lt_bench.detection.runner import run_detection
        run_detection(cfg)
        return 0
    from lt_bench.pipeline import run_training
    run_training(cfg)
    return 0


def run_from_config(cfg: DictConfig) -> None:
    """run.py's hand-over: errors the user can fix are one line, not a traceback."""
    if int(os.environ.get("RANK", "0")) != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        status = dispatch(cfg)
    except LtBenchError as err:
        log.error("%s: %s", type(err).__name__, error_text(err))
        status = getattr(err, "exit_status", 2)
    except KeyboardInterrupt:       # Ctrl-C outside training steps, or twice: nothing more is saved
        log.error("interrupted (Ctrl-C): the last saved checkpoint, if any, continues with resume=true")
        status = 130
    if status:
        sys.exit(status)


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from lt_bench.compose import setup_hydra
    if not CONFIG_DIR.is_dir():
        sys.exit(f"lt-bench needs its configs (not found at {CONFIG_DIR}); "
                 "install with pip install -e .")
    setup_hydra()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=overrides)


def package_version() -> str:
    """The installed distribution's version, else the package's own ``__version__``."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("lt_bench")
    except PackageNotFoundError:
        from lt_bench import __version__
        return __version__


# commands with their own parser (``lt-bench COMMAND --help``): module, help line
DELEGATED = {"leaderboard": ("lt_bench.leaderboard", "tables from results.json records"),
             "eval": ("lt_bench.eval_checkpoint", "evaluate a run's checkpoint again (record in <run>/eval.json)"),
             "compare": ("lt_bench.compare", "config and metric differences between runs, side by side"),
             "lvis-eval": ("lt_bench.detection.lvis_eval_cli",
                           "evaluate a detection results file exactly as lvis-api (LVIS AP, AR)"),
             "det-ap-vs-frequency": ("lt_bench.detection.analysis.ap_vs_frequency",
                                     "per-category AP of detection runs against training frequency (plot)"),
             "det-weight-norms": ("lt_bench.detection.analysis.weight_norms",
                                  "box-classifier weight norms per category from detector checkpoints (plot)"),
             "det-gradients": ("lt_bench.detection.analysis.positive_gradients",
                               "mean positive gradient per category of runs with detection.grad_stats=true (plot)"),
             "det-distributions": ("lt_bench.detection.analysis.distributions",
                                   "object-centre distributions, ground truth against detections, and their KL")}


def _train(overrides: list[str]) -> None:
    """``python -m lt_bench.main`` (what run.py runs) in this process (exec), so that every
    option is Hydra's own: ``--help``, ``--cfg job``, ``-m`` behave exactly as with
    ``python run.py``; it needs no repository (an installed wheel has its configs inside)."""
    os.execv(sys.executable, [sys.executable, "-m", "lt_bench.main", *overrides])


def main(argv: list[str] | None = None) -> None:
    """``lt-bench train|check-data|leaderboard|eval|compare|lvis-eval [options] [key=value ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["train"]:       # before argparse, which would take --help for itself
        _train(argv[1:])
    if argv[:1] and argv[0] in DELEGATED:
        import importlib
        sys.exit(importlib.import_module(DELEGATED[argv[0]][0]).main(argv[1:]))
    parser = argparse.ArgumentParser(prog="lt-bench", description="long-tailed recognition benchmarks")
    parser.add_argument("--version", action="version", version=f"lt-bench {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", add_help=False,
                        help="train and evaluate: python run.py [key=value ...] (lt-bench train --help: Hydra's help)")
    check = commands.add_parser("check-data", help="check split files and images of a task")
    check.add_argument("--sample", type=int, default=None, help="check a random N images per split")
    check.add_argument("--no-images", action="store_true", help="check the split files only")
    for name, (_, text) in DELEGATED.items():
        commands.add_parser(name, add_help=False, help=f"{text} (lt-bench {name} --help)")
    args, overrides = parser.parse_known_args(argv)
    extra = ["mode=check_data", "check_data.images=" + ("false" if args.no_images else "true")]
    if args.sample is not None:
        extra.append(f"check_data.sample={args.sample}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sys.exit(dispatch(_compose(extra + overrides)))
    except LtBenchError as err:
        sys.exit(f"{type(err).__name__}: {error_text(err)}")


if __name__ == "__main__":
    main()
