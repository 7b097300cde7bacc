"""Long-tailed subsets: counts against the imbalance formula and the field's published
numbers, subsets against LDAM-DRW's own draw (the loaders: test_cifar.py, test_digits.py)."""
import numpy as np
import pytest

from lt_bench.data import long_tail_counts, long_tail_indices
from lt_bench.errors import ConfigError, DataError


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
