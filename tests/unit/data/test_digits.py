"""digits-LT: the bundled digits split long-tailed, disjoint from the test images, a fixed draw."""
import numpy as np

from lt_bench.data import build_data


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
