"""Stage-2 baselines and samplers on tiny problems whose effect is known."""
import numpy as np
import pytest
import torch
from torch import nn

from lt_bench.validate import validate
from lt_bench.data.samplers import build_sampler, sampling_weights
from lt_bench.data.synthetic import write_split_tree
from lt_bench.errors import ConfigError
from lt_bench.pipeline import run_training
from lt_bench.stages.classifier_ops import ScaledLinear, adjust_logits, choose_tau, tau_normalise

torch.manual_seed(0)


def linear(c=4, d=6):
    layer = nn.Linear(d, c)
    with torch.no_grad():
        layer.weight.mul_(torch.arange(1, c + 1, dtype=torch.float32)[:, None])   # uneven norms
    return layer


def test_tau_zero_is_the_identity_and_tau_one_normalises():
    layer = linear()
    before = layer.weight.clone()
    tau_normalise(layer, 0.0)
    assert torch.equal(layer.weight, before)
    tau_normalise(layer, 1.0)
    torch.testing.assert_close(layer.weight.norm(dim=1), torch.ones(4))
    torch.testing.assert_close(layer.weight, before / before.norm(dim=1, keepdim=True))


def test_logit_adjustment_uniform_prior_is_the_identity():
    layer, x = linear(), torch.randn(10, 6)
    probs_before = torch.softmax(layer(x), 1)
    adjust_logits(layer, [50, 50, 50, 50], tau=1.0)
    torch.testing.assert_close(torch.softmax(layer(x), 1), probs_before)


def test_logit_adjustment_subtracts_tau_log_prior():
    layer, x = linear(), torch.randn(3, 6)
    before = layer(x)
    adjust_logits(layer, [70, 20, 8, 2], tau=0.5)
    expected = before - 0.5 * torch.log(torch.tensor([0.7, 0.2, 0.08, 0.02]))
    torch.testing.assert_close(layer(x), expected)


def test_lws_initialised_to_one_is_the_identity_and_learns_only_scales():
    layer, x = linear(), torch.randn(5, 6)
    scaled = ScaledLinear.scaling(layer)
    torch.testing.assert_close(scaled(x), layer(x))
    assert [n for n, p in scaled.named_parameters() if p.requires_grad] == ["scales"]
    with torch.no_grad():
        scaled.scales.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0]))
    torch.testing.assert_close(scaled(x), layer(x) * torch.tensor([1.0, 2.0, 0.5, 1.0]))


def test_choose_tau_fixes_a_norm_biased_classifier():
    # class 3's weight is 4x longer: at tau = 0 it wins everywhere; normalising fixes it
    layer = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(4) * torch.tensor([1.0, 1.0, 1.0, 4.0])[:, None])
    labels = torch.arange(4).repeat(25)
    features = torch.eye(4)[labels] * 0.6 + 0.4 * torch.eye(4)[3]   # every sample leans to class 3
    tau, scores = choose_tau(features, labels, layer)
    # class k < 3 wins when 0.6 > 1.6 * 4^-tau, i.e. tau > log(1.6 / 0.6) / log 4 = 0.708;
    # ties go to the smaller tau, so the grid's answer is 0.8
    threshold = np.log(1.6 / 0.6) / np.log(4)
    assert len(scores) == 21 and scores[0.0] == pytest.approx(0.25)
    assert tau == min(t for t in scores if t > threshold) == 0.8 and scores[tau] == pytest.approx(1.0)


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


@pytest.fixture(scope="module")
def stage1_checkpoint(tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from tests.conftest import ROOT
    out = tmp_path_factory.mktemp("s1")
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"out_dir={out}", "progress=false", "stage=1", "stage1.epochs=3",
                                           "device=cpu", "plots=false"])
    run_training(cfg)
    return out / "checkpoints" / "stage1.pt"


@pytest.mark.parametrize("method,extra,expected", [
    ("crt", [], "crt"), ("lws", [], "lws"), ("logit_adjust", [], "logit_adjust"),
    ("tau_norm", ["stage2.tau=1.0"], "tau_norm"), ("gumbel", ["stage2.sampler=sqrt"], "gumbel"),
    ("softmax", [], "softmax"),
])
def test_each_method_runs_and_is_recorded(stage1_checkpoint, make_cfg, method, extra, expected):
    cfg = make_cfg("stage=2", f"stage1.checkpoint={stage1_checkpoint}", f"stage2={method}",
                   "stage2.epochs=1", "device=cpu", "plots=false", *extra)
    [record] = run_training(cfg)
    assert record["method"] == expected and record["stage2_method"] == cfg.stage2.method
    if method in ("crt", "lws"):
        assert record["sampler"] == "class_balanced"
    if method == "logit_adjust":
        assert record["tau"] == 1.0


def test_tau_norm_without_val_split_needs_tau(make_cfg):
    with pytest.raises(ConfigError, match="tau_norm chooses tau on a val split.*stage2.tau"):
        validate(make_cfg("stage2=tau_norm"))
    with pytest.raises(ConfigError, match="unknown stage2.method 'tau'; valid: crt, logit_adjust, lws, "
                                          "retrain, tau_norm"):
        validate(make_cfg("stage2=tau_norm", "stage2.method=tau"))


def test_tau_norm_chooses_tau_on_the_val_split(make_cfg, tmp_path):
    splits_dir, images = write_split_tree(tmp_path / "tree", prefix="Tiny_LT")
    files = [f"task.split_files.{s}=Tiny_LT_{s}.txt" for s in ("train", "val", "test")]
    cfg = make_cfg("task=imagenetlt", "model=resnet8", "task.num_classes=6", *files, f"data.splits_dir={splits_dir}",
                   f"data.root={images}", "data.image_size=32", "data.resize=36", "data.num_workers=0",
                   "stage1.epochs=1", "stage1.batch_size=8", "stage1.lr=0.05", "stage2=tau_norm",
                   "device=cpu", "plots=false")
    records = run_training(cfg)
    assert records[1]["method"] == "tau_norm" and 0.0 <= records[1]["tau"] <= 2.0
    assert len(records[1]["val_balanced_top1_by_tau"]) == 21
