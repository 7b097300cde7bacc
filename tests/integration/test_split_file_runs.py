"""ImageNet-LT / Places-LT: whole training runs on the tiny split-file tree (the `tree` fixture,
tests/conftest.py); the split files' unit tests are in tests/unit/data/test_split_file.py."""
import pytest

from lt_bench.data import build_data
from lt_bench.errors import DataError
from lt_bench.pipeline import run_training
from lt_bench.records import read_records
from lt_bench.data.synthetic import TRAIN_COUNTS

from tests.helpers.splits import tiny_overrides


@pytest.mark.parametrize("cache", ["false", "true"])
def test_tiny_tree_end_to_end(tree, make_cfg, tmp_path, cache):
    out = tmp_path / f"run_{cache}"
    records = run_training(make_cfg(*tiny_overrides(tree, f"stage2.cache_features={cache}", "stage2.bn=frozen", "eval.split=val"),
                                    out_dir=out))
    assert [(r["stage"], r["method"], r["eval_split"]) for r in read_records(out / "results.json")] == [
        (1, "softmax", "val"), (2, "gumbel", "val")]
    assert records[0]["imbalance"] == 6.0 and records[0]["num_train"] == sum(TRAIN_COUNTS)
    assert records[0]["num_eval"] == 18 and records[0]["skipped_files"] == []
    assert (out / "cache" / "stage2_features.npy").exists() == (cache == "true")


def test_missing_and_corrupt_images_are_named_and_can_be_skipped(tree, make_cfg, tmp_path):
    splits_dir, images = tree
    train = (splits_dir / "Tiny_LT_train.txt").read_text().splitlines()
    missing, corrupt = train[3].split()[0], train[7].split()[0]
    (images / missing).unlink()
    data = (images / corrupt).read_bytes()
    (images / corrupt).write_bytes(data[: len(data) // 3])       # a truncated JPEG
    cfg = make_cfg(*tiny_overrides(tree))
    bundle = build_data(cfg)
    with pytest.raises(DataError, match=rf"Tiny_LT_train.txt:4: cannot read image .*{missing}"):
        bundle.train[3]
    with pytest.raises(DataError, match=rf"Tiny_LT_train.txt:8: cannot read image .*{corrupt}"):
        bundle.train[7]
    out = tmp_path / "skip"
    records = run_training(make_cfg(*tiny_overrides(tree, "data.skip_bad=true", "stage2.epochs=1"), out_dir=out))
    skipped = records[0]["skipped_files"]
    assert len(skipped) == 2 and ":4: cannot read image" in skipped[0] and ":8: cannot read image" in skipped[1]
    assert records[0]["num_train"] == sum(TRAIN_COUNTS) - 2
