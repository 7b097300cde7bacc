"""Overrides that point a config at the tiny split-file tree of the `tree` fixture (tests/conftest.py)."""


def tiny_overrides(tree, *extra):
    splits_dir, images = tree
    files = [f"task.split_files.{s}=Tiny_LT_{s}.txt" for s in ("train", "val", "test")]
    return ("task=imagenetlt", "model=resnet8", "task.num_classes=6", *files, f"data.splits_dir={splits_dir}",
            f"data.root={images}", "data.image_size=32", "data.resize=36", "data.num_workers=0",
            "stage1.epochs=2", "stage2.epochs=2", "stage1.batch_size=8", "stage2.batch_size=8",
            "stage1.lr=0.05", "stage2.lr=0.01", "device=cpu", *extra)
