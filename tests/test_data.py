"""Long-tailed datasets: counts against the imbalance formula and the field's published
numbers, subsets against LDAM-DRW's own draw, loaders on real on-disk formats."""
import numpy as np
import pytest
from PIL import Image

from lt_bench.data import build_data, long_tail_counts, long_tail_indices
from lt_bench.errors import ConfigError, DataError
from lt_bench.evaluation import shot_groups
from lt_bench.data.synthetic import write_cifar


@pytest.mark.parametrize("n_max,classes,imbalance,total", [
    (500, 100, 10, 19573), (500, 100, 50, 12608), (500, 100, 100, 10847), (500, 100, 200, 9502),
    (5000, 10, 100, 12406),
])
def test_counts_match_published_totals(n_max, classes, imbalance, total):
    counts = long_tail_counts(n_max, classes, imbalance)
    assert sum(counts) == total
    assert counts[0] == n_max and counts[-1] == int(n_max / imbalance)
    assert counts == sorted(counts, reverse=True)


def test_counts_follow_the_exponential_formula():
    counts = long_tail_counts(500, 100, 100)
    for i in (0, 1, 37, 50, 98, 99):
        assert counts[i] == int(500 * 0.01 ** (i / 99))


def test_bad_imbalance_is_a_config_error():
    with pytest.raises(ConfigError, match="imbalance must be a number >= 1"):
        long_tail_counts(500, 100, 0.5)


def ldam_reference_indices(targets, counts):
    """LDAM-DRW's IMBALANCECIFAR gen_imbalanced_data, written the way its code does it."""
    np.random.seed(0)
    targets_np = np.array(targets, dtype=np.int64)
    selected = []
    for the_class, the_img_num in zip(np.unique(targets_np), counts):
        idx = np.where(targets_np == the_class)[0]
        np.random.shuffle(idx)
        selected.extend(idx[:the_img_num])
    return np.array(selected)


def test_indices_equal_ldam_drw_draw():
    targets = np.random.default_rng(3).permutation(np.repeat(np.arange(20), 50))
    counts = long_tail_counts(50, 20, 25)
    np.testing.assert_array_equal(long_tail_indices(targets, counts, seed=0),
                                  ldam_reference_indices(targets, counts))


def test_indices_refuse_a_class_too_small():
    with pytest.raises(DataError, match="class 1 has 2 images"):
        long_tail_indices([0, 0, 0, 1, 1], [3, 3])


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


def test_digits_lt_split(make_cfg):
    cfg = make_cfg("task=digits_lt", "imbalance=50")
    bundle = build_data(cfg)
    assert bundle.train_counts == [120, 77, 50, 32, 21, 13, 8, 5, 3, 2]
    assert np.bincount(bundle.train.targets).tolist() == bundle.train_counts
    assert np.bincount(bundle.test.targets).tolist() == [50] * 10
    assert not set(bundle.train.indices) & set(bundle.test.indices)   # disjoint images
    image, _ = bundle.test[0]
    assert tuple(image.shape) == (1, 8, 8)
    again = build_data(cfg)
    np.testing.assert_array_equal(again.train.indices, bundle.train.indices)   # fixed draw
