"""Learning-rate schedules."""
import math

import pytest

from lt_bench.stages.schedule import lr_factor


def test_warmup_then_multistep_at_recipe_milestones():
    f = lambda epoch: lr_factor(epoch * 10, 10, epochs=240, schedule="multistep", warmup_epochs=5,  # noqa: E731
                                milestones=[200, 220], gamma=0.01, reference_epochs=240)
    assert lr_factor(0, 10, epochs=240, schedule="multistep", warmup_epochs=5) == pytest.approx(1 / 50)
    assert f(2.5) == pytest.approx(26 / 50)      # step 25 of a 50-step linear warm-up
    assert f(5) == 1.0 and f(199.9) == 1.0
    assert f(200) == pytest.approx(0.01) and f(220) == pytest.approx(1e-4)


def test_milestones_scale_with_shortened_runs():
    f = lambda epoch: lr_factor(epoch * 10, 10, epochs=24, schedule="multistep", milestones=[200, 220],  # noqa: E731
                                gamma=0.1, reference_epochs=240)
    assert f(19.9) == 1.0 and f(20) == pytest.approx(0.1) and f(22) == pytest.approx(0.01)


def test_cosine_and_constant():
    assert lr_factor(50, 10, epochs=10, schedule="cosine") == pytest.approx(0.5)
    assert lr_factor(25, 10, epochs=10, schedule="cosine") == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_factor(99, 10, epochs=10, schedule="constant") == 1.0
