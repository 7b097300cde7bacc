"""Hydra composition helpers that run before any heavy import.

run.py, the ``lt-bench`` commands and the tests call ``setup_hydra`` before Hydra composes
the config: it registers the resolvers and the typed recipes (Hydra's ConfigStore), and
imports nothing but OmegaConf, Hydra and lt_bench's import-light modules.  A misspelt task,
key or value is then reported in about a second, instead of after torch, torchvision and timm
have loaded (about 8 s on a 2-core CPU).
"""
from __future__ import annotations

import os

from omegaconf import OmegaConf


def register_resolvers() -> None:
    """``${lt_bench.if_null:a,b}``: a unless it is null, else b (Hydra's run.dir uses it)."""
    if not OmegaConf.has_resolver("lt_bench.if_null"):
        OmegaConf.register_new_resolver("lt_bench.if_null", lambda value, default: default if value is None else value)


def register_schemas() -> None:
    """The typed recipes as ``schema/stage1/<loss>`` and ``schema/stage2/<method>`` in Hydra's
    ConfigStore; the config files extend them (``defaults: [/schema/stage2/crt@_here_]``)."""
    from hydra.core.config_store import ConfigStore

    from lt_bench.registries import STAGE1_LOSSES, STAGE2_METHODS
    store = ConfigStore.instance()
    for name in STAGE1_LOSSES.names():
        store.store(group="schema/stage1", name=name, node=STAGE1_LOSSES.get(name).cls.Settings(loss=name))
    for name in STAGE2_METHODS.names():
        store.store(group="schema/stage2", name=name, node=STAGE2_METHODS.get(name).cls.Settings(method=name))


def setup_hydra() -> None:
    register_resolvers()
    register_schemas()


def hydra_overrides_for_rank(argv: list[str]) -> list[str]:
    """Extra Hydra overrides for torchrun ranks other than 0.

    Every rank composes the same config, but only rank 0 owns the run folder: the others
    must not create timestamped folders of their own (the second may differ) nor write
    Hydra's files and logs there.  They log to the console only; rank 0 broadcasts the
    output folder once the process group is up.
    """
    if int(os.environ.get("RANK", "0")) == 0:
        return []
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv}
    extra = {"hydra.run.dir": "hydra.run.dir=.", "hydra.output_subdir": "hydra.output_subdir=null",
             "hydra/job_logging": "hydra/job_logging=stdout"}
    return [override for key, override in extra.items() if key not in given]


def unknown_key_message(cfg, key: str, added: bool = False) -> str:
    """``unknown key stage1.epoch: stage1 has batch_size, epochs, lr, ...; did you mean
    stage1.epochs?``: the keys of the deepest existing node on the key's path."""
    import difflib

    from omegaconf import DictConfig, OmegaConf
    parts = key.split(".")
    depth = len(parts) - 1
    while depth > 0 and not isinstance(OmegaConf.select(cfg, ".".join(parts[:depth])), DictConfig):
        depth -= 1
    parent = ".".join(parts[:depth])
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = sorted(k for k in node.keys() if not (not parent and k == "hydra")
                  and not (added and depth == len(parts) - 1 and k == parts[-1]))   # the '+' key itself
    close = difflib.get_close_matches(parts[depth], keys, n=1)
    where = parent or "the config"
    guess = f"; did you mean {'.'.join([*parts[:depth], close[0]])}?" if close else ""
    return f"unknown key {key}: {where} has {', '.join(keys)}{guess}"


def compose_explained(overrides: list[str]):
    """``compose("config", overrides)``; an override of a key the config does not have is a
    ConfigError listing the keys that exist (Hydra's own message suggests ``+key=...``, which
    would add the typo as a new key).  Other composition errors are Hydra's to report."""
    import re

    from hydra import compose
    from hydra.errors import ConfigCompositionException

    from lt_bench.errors import ConfigError
    try:
        return compose("config", overrides=list(overrides))
    except ConfigCompositionException as err:
        match = re.match(r"Could not override '([^']+)'", str(err))
        if match is None:
            raise
        key = match.group(1)
        rest = [o for o in overrides if o.split("=", 1)[0].lstrip("~+") != key]
        try:
            cfg = compose("config", overrides=rest)
        except ConfigCompositionException:
            raise err from None
        raise ConfigError(unknown_key_message(cfg, key)) from None


def check_overrides(argv: list[str]) -> None:
    """Before Hydra starts a single run: an unknown key is a ConfigError naming the valid ones."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if args.multirun or args.config_path or args.config_dir or args.config_name or args.cfg or args.help:
        return
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    from lt_bench.run_folder import CONFIG_DIR
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        try:
            compose_explained(list(args.overrides))
        except HydraException:
            return       # reported by Hydra itself, in its words, when run.py composes


def check_additions(overrides: list[str], cfg=None) -> None:
    """Refuse ``+key=value`` overrides that add a key the config does not have: a typo such as
    ``+stage1.epoch=2`` would otherwise run with the key ignored (and, as a different config,
    land as a separate leaderboard row).  Adding a config group (``+experiment=NAME``) is fine.
    Call it while Hydra is initialised (in the task function, or after ``compose``)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lt_bench.errors import ConfigError
    loader = GlobalHydra.instance().config_loader()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if not override.is_add() or key.startswith("hydra") or loader.get_group_options(key.replace(".", "/")):
            continue
        if cfg is not None:
            raise ConfigError(f"{unknown_key_message(cfg, key, added=True)} ('+' adds keys this config does not "
                              "have)")
        raise ConfigError(f"unknown key {key}: '+' adds keys this config does not have (see the keys with: "
                          "python run.py --cfg job)")


def check_composed(cfg, overrides: list[str]) -> None:
    """The checks of a freshly composed config that need no heavy import."""
    from lt_bench.validate import check_config
    check_additions(overrides, cfg)
    check_config(cfg)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """Every job of a multirun, as Hydra's basic sweeper makes them: the config's own sweep
    (``hydra.sweeper.params``, e.g. an experiment's cells) crossed with the command line's.
    Call it while Hydra is initialised."""
    from hydra import compose
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    primary = compose("config", overrides=fixed, return_hydra_config=True)
    params = primary.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(overrides)
    return [job for batch in BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
            for job in batch]


def check_sweep(argv: list[str]) -> None:
    """Before a multirun launches any job, compose and check every job's config (Hydra's basic
    sweeper composes each job only when it starts, so a typo in the last one would surface
    after the first ones have trained).  Other sweepers and config paths are left to Hydra."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if not args.multirun or args.config_path or args.config_dir or args.config_name:
        return
    overrides = [o for o in args.overrides if not o.startswith("hydra/sweeper=")]
    if len(overrides) != len(args.overrides):
        return
    from hydra import compose, initialize_config_dir

    from lt_bench.errors import ConfigError
    from lt_bench.run_folder import CONFIG_DIR
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        jobs = sweep_jobs(overrides)
        for number, job in enumerate(jobs):
            try:
                check_composed(compose_explained(job), job)
            except ConfigError as err:
                raise ConfigError(f"multirun job #{number} ({' '.join(job)}): {err}; no job was started") from None


def check_run_folder(argv: list[str]) -> None:
    """Before Hydra writes its files (``.hydra/``, ``run.log``) into ``out_dir``: may this run use
    it?  A folder holding a finished run is refused unless resumed or overwritten, a resume
    with nothing to resume is an error, and a resume of another configuration's checkpoints is
    refused, all with the folder untouched (``run_folder.accept_run_folder``).  Single
    classification runs with an explicit ``out_dir``, rank 0; the pipeline checks again."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if args.multirun or args.config_path or args.config_dir or args.config_name or os.environ.get("RANK", "0") != "0":
        return
    from hydra import compose, initialize_config_dir

    from lt_bench.run_folder import CONFIG_DIR, accept_run_folder, check_writable, run_files, training_hash
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("config", overrides=list(args.overrides))
    except Exception:   # noqa: BLE001 - composition errors are Hydra's to report, in its own words
        return
    if cfg.mode != "train" or not cfg.out_dir:
        return
    from pathlib import Path
    root = Path(cfg.out_dir)
    check_writable(root)
    if cfg.task.get("kind") == "detection":
        return
    if accept_run_folder(cfg, root) == "resume":
        from lt_bench.checkpoint import check_resumable
        check_resumable([f for f in run_files(root) if f.suffix == ".pt"], training_hash(cfg))
