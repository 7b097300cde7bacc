"""ImageNet-LT and Places-LT: fixed long-tailed splits given by the OLTR split files."""
from __future__ import annotations

import logging
from pathlib import Path

from lt_bench.data.bundle import DATASETS, DataBundle, DatasetBuilder
from lt_bench.data.long_tail import SubsetView, class_counts
from lt_bench.data.split_file import (SplitFileDataset, load_manifest, read_split_file, scan_images,
                                      sha256_file)
from lt_bench.data.transforms import build_transform
from lt_bench.errors import DataError

log = logging.getLogger(__name__)


def split_file_path(cfg, split: str) -> Path:
    """``data.splits_dir``/<the task's file for ``split``>."""
    return Path(cfg.data.splits_dir).expanduser() / cfg.task.split_files[split]


def _warn_if_not_official(path: Path) -> None:
    known = load_manifest().get(path.name)
    if known is not None and sha256_file(path) != known["sha256"]:
        log.warning("%s differs from the official %s (sha256); results will not be comparable. "
                    "`python run.py mode=check_data` shows the differences.", path, path.name)


def _load_split(cfg, split: str, ctx, scan: bool = True) -> tuple[SplitFileDataset, list[str]]:
    path = split_file_path(cfg, split)
    entries = read_split_file(path, int(cfg.task.num_classes))
    _warn_if_not_official(path)
    root = Path(cfg.data.root).expanduser()
    if not root.is_dir():
        raise DataError(f"image root {root} (data.root) does not exist; {path} lists images relative to it")
    skipped = []
    if cfg.data.skip_bad and scan:
        # Every rank checks a strided share of the images; all ranks drop the same ones.
        rank, world = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
        mine = scan_images(root, path, entries[rank::world], show_progress=bool(cfg.progress) and rank == 0)
        shares = ctx.all_gather_object(mine) if ctx is not None else [mine]
        problems = sorted(p for share in shares for p in share)
        bad_lines = {p.line for p in problems}
        entries = [e for e in entries if e.line not in bad_lines]
        skipped = [str(p) for p in problems]
        if problems:
            log.warning("data.skip_bad: %d unreadable image(s) in %s skipped (listed in the records)",
                        len(problems), path)
    return SplitFileDataset(root, path, entries, decoder=str(cfg.data.get("decoder", "pil"))), skipped


def build_split_file_lt(cfg, ctx=None) -> DataBundle:
    task, data, num_classes = cfg.task, cfg.data, int(cfg.task.num_classes)
    eval_split = cfg.eval.split
    train_base, train_skipped = _load_split(cfg, "train", ctx)
    eval_base, eval_skipped = _load_split(cfg, eval_split, ctx)
    counts = class_counts(train_base.targets, num_classes)
    empty = [c for c, n in enumerate(counts) if n == 0]
    if empty:
        raise DataError(f"{train_base.split_file}: {len(empty)} class(es) without training images "
                        f"(first: {empty[:5]}); task {task.name} has {num_classes} classes")
    options = dict(image_size=int(data.image_size), resize=int(data.resize))
    eval_transform = build_transform(task.transform, False, **options)
    val = None
    if eval_split != "val" and "val" in task.split_files and split_file_path(cfg, "val").is_file():
        val_base, _ = _load_split(cfg, "val", ctx, scan=False)   # read when used (tau_norm's tau)
        val = SubsetView(val_base, range(len(val_base)), val_base.targets, eval_transform)
    train = SubsetView(train_base, range(len(train_base)), train_base.targets,
                       build_transform(task.transform, True, autoaugment=bool(data.autoaugment), **options))
    test = SubsetView(eval_base, range(len(eval_base)), eval_base.targets, eval_transform)
    return DataBundle(train=train, test=test, num_classes=num_classes, train_counts=counts,
                      class_names=[str(c) for c in range(num_classes)], eval_split=eval_split,
                      info={"source": str(Path(data.root)), "format": "split_file",
                            "split_files": {"train": str(train_base.split_file), eval_split: str(eval_base.split_file)},
                            "skipped_files": train_skipped + eval_skipped}, val=val)


@DATASETS.register("imagenet_lt")
class ImageNetLT(DatasetBuilder):
    """ImageNet-LT from the OLTR split files."""

    def build(self, cfg, ctx=None) -> DataBundle:
        return build_split_file_lt(cfg, ctx)


@DATASETS.register("places_lt")
class PlacesLT(ImageNetLT):
    """Places-LT from the OLTR split files."""
