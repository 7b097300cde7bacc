"""CIFAR-LT loaders on real on-disk formats: the pickles (full size), their checks, the
image-folder layout."""
import numpy as np
import pytest
from PIL import Image

from lt_bench.data import build_data, long_tail_counts
from lt_bench.errors import DataError
from lt_bench.evaluation import shot_groups
from lt_bench.data.synthetic import write_cifar


@pytest.fixture(scope="module")
def full_size_cifar(tmp_path_factory):
    """CIFAR-10 and CIFAR-100 pickles with the real sizes (500 / 5,000 per class)."""
    root = tmp_path_factory.mktemp("cifar_full")
    write_cifar(root, "cifar100", train_per_class=500, test_per_class=2, learnable=False)
    write_cifar(root, "cifar10", train_per_class=5000, test_per_class=2, learnable=False)
    return root


@pytest.mark.parametrize("task,imbalance,total,shots", [
    ("cifar100lt", 100, 10847, (35, 35, 30)),
    ("cifar100lt", 50, 12608, (41, 41, 18)),
    ("cifar100lt", 200, 9502, (30, 31, 39)),
    ("cifar10lt", 100, 12406, None),
])
def test_cifar_lt_from_real_format_pickles(make_cfg, full_size_cifar, task, imbalance, total, shots):
    cfg = make_cfg(f"task={task}", f"imbalance={imbalance}", f"data.root={full_size_cifar}",
                   "data.verify_md5=false")
    bundle = build_data(cfg)
    assert len(bundle.train) == total == sum(bundle.train_counts)
    assert np.bincount(bundle.train.targets).tolist() == bundle.train_counts
    assert len(bundle.test) == 2 * cfg.task.num_classes
    if shots:
        groups = shot_groups(bundle.train_counts)
        assert tuple(len(groups[g]) for g in ("many", "medium", "few")) == shots
    image, label = bundle.train[0]
    assert tuple(image.shape) == (3, 32, 32) and label == bundle.train.targets[0]


def test_md5_check_names_the_folder_and_the_switch(make_cfg, tmp_path):
    write_cifar(tmp_path, "cifar10", train_per_class=3, test_per_class=1)
    cfg = make_cfg("task=cifar10lt", f"data.root={tmp_path}")
    with pytest.raises(DataError, match="cifar-10-batches-py.*verify_md5=false"):
        build_data(cfg)


def test_missing_cifar_names_files_and_download(make_cfg, tmp_path):
    cfg = make_cfg("task=cifar100lt", f"data.root={tmp_path}")
    with pytest.raises(DataError, match=r"missing train, test, meta in .*cifar-100-python.*data.download=true"):
        build_data(cfg)


def test_imagefolder_layout(make_cfg, tmp_path):
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 20), ("test", 3)):
        for c in range(10):
            folder = tmp_path / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    cfg = make_cfg("task=cifar10lt", "imbalance=10", "data.format=imagefolder", f"data.root={tmp_path}")
    bundle = build_data(cfg)
    assert bundle.train_counts == long_tail_counts(20, 10, 10)
    assert np.bincount(bundle.train.targets).tolist() == bundle.train_counts
    assert len(bundle.test) == 30 and bundle.class_names[0] == "c0"
    assert tuple(bundle.train[len(bundle.train) - 1][0].shape) == (3, 32, 32)
