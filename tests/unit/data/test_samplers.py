"""Samplers: class-balanced and square-root sampling draw their distributions, replayably, per rank."""
import numpy as np
import pytest

from lt_bench.data.samplers import build_sampler, sampling_weights


def test_class_balanced_and_sqrt_samplers_match_their_distributions():
    targets = [0] * 900 + [1] * 90 + [2] * 10
    weights = sampling_weights(targets, 1.0)
    assert weights[0] == pytest.approx(1 / 900) and weights[-1] == pytest.approx(1 / 10)
    draws = []
    sampler = build_sampler("class_balanced", targets, world_size=1, rank=0, seed=0)
    for epoch in range(30):
        sampler.set_epoch(epoch)
        draws += [targets[i] for i in sampler]
    shares = np.bincount(draws) / len(draws)
    np.testing.assert_allclose(shares, [1 / 3] * 3, atol=0.02)
    sqrt = build_sampler("sqrt", targets, world_size=1, rank=0, seed=0)
    draws = [targets[i] for epoch in range(30) for i in (sqrt.set_epoch(epoch) or sqrt)]
    expected = np.sqrt([900, 90, 10]) / np.sqrt([900, 90, 10]).sum()
    np.testing.assert_allclose(np.bincount(draws) / len(draws), expected, atol=0.02)
    sampler.set_epoch(3)
    first = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == first and len(first) == 1000          # replayable epochs
    ranks = [build_sampler("class_balanced", targets, world_size=2, rank=r, seed=0) for r in (0, 1)]
    assert len(list(ranks[0])) == 500 and list(ranks[0]) != list(ranks[1])
