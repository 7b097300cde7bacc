"""Metrics against hand-computed values."""
import math

import numpy as np
import pytest
import torch

from lt_bench.activations import build_activation
from lt_bench.evaluation import (compute_metrics, expected_calibration_error, per_class_accuracy,
                                 shot_groups, top_k_accuracy)


def test_shot_groups_use_training_counts_and_strict_bounds():
    groups = shot_groups([500, 101, 100, 20, 19, 1])
    assert groups == {"many": [0, 1], "medium": [2, 3], "few": [4, 5]}


def test_per_class_accuracy_and_missing_class():
    predicted = torch.tensor([0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 0, 1, 2, 2, 0])
    acc = per_class_accuracy(predicted, labels, 4)
    np.testing.assert_allclose(acc[:3], [1 / 3, 1.0, 1.0])
    assert math.isnan(acc[3])


def test_top_k():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]])
    labels = torch.tensor([2, 2])
    assert top_k_accuracy(scores, labels, 1) == 0.0
    assert top_k_accuracy(scores, labels, 2) == 0.5
    assert top_k_accuracy(scores, labels, 5) == 1.0      # k capped at the class count


def test_ece_hand_computed():
    # bins of width 0.5: (0, .5] holds 0.2, 0.4 (acc 1/2); (.5, 1] holds 0.6, 0.9, 1.0 (acc 2/3)
    conf = torch.tensor([0.2, 0.4, 0.6, 0.9, 1.0])
    correct = torch.tensor([True, False, True, False, True])
    expected = 2 / 5 * abs(0.5 - 0.3) + 3 / 5 * abs(2 / 3 - (0.6 + 0.9 + 1.0) / 3)
    assert expected_calibration_error(conf, correct, bins=2) == pytest.approx(expected)
    assert expected_calibration_error(torch.ones(4), torch.ones(4, dtype=torch.bool)) == pytest.approx(0.0)


def test_compute_metrics_on_crafted_logits():
    # 4 classes, training counts -> many: 0, medium: 1, 2, few: 3
    train_counts = [200, 50, 30, 5]
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    predicted = torch.tensor([0, 0, 1, 0, 2, 2, 0, 3])
    logits = torch.full((8, 4), -2.0)
    logits[torch.arange(8), predicted] = 3.0
    m = compute_metrics(logits, labels, build_activation("softmax"), train_counts)
    assert m["top1"] == pytest.approx(75.0)
    assert m["many"] == pytest.approx(100.0) and m["medium"] == pytest.approx(75.0)
    assert m["few"] == pytest.approx(50.0)
    assert m["shot_classes"] == {"many": 1, "medium": 2, "few": 1}
    assert m["per_class_top1"] == [100.0, 50.0, 100.0, 50.0]
    confidence = math.exp(3) / (math.exp(3) + 3 * math.exp(-2))
    assert m["ece"] == pytest.approx(100 * abs(0.75 - confidence), rel=1e-6)
    assert m["num_eval"] == 8
    low = math.exp(-2) / (math.exp(3) + 3 * math.exp(-2))
    assert m["nll"] == pytest.approx(-(6 * math.log(confidence) + 2 * math.log(low)) / 8, rel=1e-6)
    right = (confidence - 1) ** 2 + 3 * low ** 2
    wrong = (low - 1) ** 2 + (confidence ** 2) + 2 * low ** 2
    assert m["brier"] == pytest.approx((6 * right + 2 * wrong) / 8, rel=1e-6)
    assert m["calibration_by_shot"]["many"]["ece"] == pytest.approx(100 * (1 - confidence), rel=1e-5)


def test_binary_activations_are_calibrated_on_their_own_scores():
    """ECE uses the raw max score of a binary activation, not scores renormalised to sum to 1
    (an independent score of 0.9 next to others of 0.5 is 0.9 confident, not 0.9/2.4)."""
    from lt_bench.evaluation import classwise_calibration_error
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0]] * 4)     # sigmoid: 0.881 and three 0.5
    labels = torch.tensor([0, 0, 0, 1])
    m = compute_metrics(logits, labels, build_activation("sigmoid"), [10, 10, 10, 10])
    p = 1 / (1 + math.exp(-2))
    assert m["ece"] == pytest.approx(100 * abs(0.75 - p), rel=1e-5)
    assert m["ece_normalised"] == pytest.approx(100 * abs(0.75 - p / (p + 1.5)), rel=1e-5)
    assert m["nll"] == pytest.approx(-(3 * math.log(p) + math.log(0.5)) / 4, rel=1e-5)
    # classwise: class 0 scores 0.881 (3 of 4 are class 0), class 1 0.5 (1 of 4), others 0.5 (0 of 4)
    expected = (abs(0.75 - p) + abs(0.25 - 0.5) + 0.5 + 0.5) / 4
    assert m["ece_classwise"] == pytest.approx(100 * expected, rel=1e-5)
    assert classwise_calibration_error(torch.eye(3), torch.arange(3)) == pytest.approx(0.0)


def test_predictions_rank_logits_where_gumbel_scores_saturate():
    """Gumbel scores are 1.0 in float32 above z ~ 17: logits [105, 120, -1] must predict class 1."""
    m = compute_metrics(torch.tensor([[105.0, 120.0, -1.0]]), torch.tensor([1]), build_activation("gumbel"), [5, 5, 5])
    assert m["top1"] == 100.0


def test_empty_shot_group_is_none():
    m = compute_metrics(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]), build_activation("gumbel"), [10, 5])
    assert m["many"] is None and m["medium"] is None and m["few"] is not None


def test_best_epoch_is_chosen_on_the_select_split():
    """best_* are the test metrics of the epoch best on the select split (the first of equals)."""
    from lt_bench.pipeline import best_epoch
    history = [{"epoch": 1, "test_top1": 50.0, "test_many": 60.0, "select_top1": 40.0},
               {"epoch": 2, "test_top1": 55.0, "test_many": 70.0, "select_top1": 45.0},
               {"epoch": 3, "test_top1": 58.0, "test_many": 65.0, "select_top1": 45.0},
               {"epoch": 4, "test_top1": 52.0, "test_many": 62.0, "select_top1": 41.0}]
    on_val = best_epoch({"history": history}, "val")
    assert (on_val["best_epoch"], on_val["best_top1"], on_val["best_many"], on_val["best_select"]) == (2, 55.0, 70.0,
                                                                                                       "val")
    on_test = best_epoch({"history": history}, "test")
    assert (on_test["best_epoch"], on_test["best_top1"]) == (3, 58.0)
    assert best_epoch({"history": history}, None) == {} and best_epoch({"history": []}, "test") == {}
