"""Configuration (lt_bench/validate.py): typos fail at start, naming the valid values; the global
batch over the ranks; the config hash."""
import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException

from lt_bench.run_folder import config_hash
from lt_bench.validate import validate
from lt_bench.errors import ConfigError


def test_default_config_is_the_digits_demo_and_valid(make_cfg):
    cfg = make_cfg()
    validate(cfg)
    assert cfg.task.name == "digits_lt" and cfg.model.name == "resnet8"
    assert cfg.stage2.activation == "gumbel" and list(cfg.activations.gumbel.clamp) == [-4.0, 10.0]


def test_task_recipe_and_top_level_imbalance(make_cfg):
    cfg = make_cfg("task=cifar100lt", "imbalance=200")
    assert cfg.imbalance == 200 and cfg.model.name == "resnet32"
    assert (cfg.stage1.epochs, cfg.stage1.batch_size, cfg.stage1.lr) == (240, 64, 0.1)
    assert list(cfg.stage1.milestones) == [200, 220] and cfg.stage1.gamma == 0.01
    assert (cfg.stage2.epochs, cfg.stage2.lr) == (15, 1e-4)
    assert make_cfg("task=cifar100lt", "model=resnet20").model.name == "resnet20"


@pytest.mark.parametrize("override,match", [
    ("stage2.activation=gumble", "unknown stage2.activation 'gumble'; valid: gumbel, sigmoid, softmax"),
    ("stage1.activation=sigmod", "unknown stage1.activation 'sigmod'"),
    ("model.name=resnet33", "unknown model 'resnet33'"),
    ("stage=3", "unknown stage '3'; valid: all, 1, 2"),
    ("stage1.schedule=step", "unknown stage1.schedule 'step'; valid: constant, cosine, multistep"),
    ("train.amp=fp16", "train.amp=fp16 needs a CUDA device"),
    ("imbalance=0.5", "imbalance must be a number >= 1"),
    ("stage=2", "stage=2 retrains the classifier of a stage-1 model: pass stage1.checkpoint=PATH"),
    ("stage2.loss_scale=per_sample", "stage2.loss_scale must be 'per_class' or a positive number"),
    ("activations.gumbel.clamp=[10,-4]", "gumbel clamp must be"),
    ("+activations.gumbel.temprature=2", "activations.gumbel:.*temprature"),
])
def test_bad_values_fail_before_any_data_is_read(make_cfg, override, match):
    with pytest.raises(ConfigError, match=match):
        validate(make_cfg(override, "device=cpu"))


def test_misspelt_key_and_unknown_task_fail_in_hydra(make_cfg):
    with pytest.raises(ConfigCompositionException, match="stage2.actvation"):
        make_cfg("stage2.actvation=gumbel")
    with pytest.raises((MissingConfigException, ConfigCompositionException), match="cifar100t"):
        make_cfg("task=cifar100t")


def test_config_hash_ignores_runtime_keys_only(make_cfg, tmp_path):
    base = config_hash(make_cfg())
    assert config_hash(make_cfg("resume=true", "data.num_workers=7", out_dir=tmp_path / "x")) == base
    assert config_hash(make_cfg("stage2.lr=0.2")) != base
    assert config_hash(make_cfg("seed=1")) != base
    assert config_hash(make_cfg("seed=1"), exclude=("seed",)) == config_hash(make_cfg(), exclude=("seed",))


def test_global_batch_must_divide_over_ranks(make_cfg):
    from lt_bench.validate import check_batch_sizes
    check_batch_sizes(make_cfg("stage1.batch_size=64"), 4)
    with pytest.raises(ConfigError, match="stage1.batch_size=30 is the global batch: .* over 4 ranks"):
        check_batch_sizes(make_cfg("stage1.batch_size=30"), 4)


def test_tau_norm_without_val_split_needs_tau(make_cfg):
    with pytest.raises(ConfigError, match="tau_norm chooses tau on a val split.*stage2.tau"):
        validate(make_cfg("stage2=tau_norm"))
    with pytest.raises(ConfigError, match="unknown stage2.method 'tau'; valid: crt, logit_adjust, lws, "
                                          "retrain, tau_norm"):
        validate(make_cfg("stage2=tau_norm", "stage2.method=tau"))


@pytest.mark.parametrize("override,match", [
    ("stage1.lr=nan", "stage1.lr must be a positive number"),
    ("stage2.lr=inf", "stage2.lr must be a positive number"),
    ("stage1.momentum=1.5", r"stage1.momentum must be in \[0, 1\)"),
    ("stage1.weight_decay=-1e-4", "stage1.weight_decay must be a finite number >= 0"),
    ("eval.shot_thresholds=[20,100]", "eval.shot_thresholds must be"),
    ("eval.shot_thresholds=[100]", "eval.shot_thresholds must be"),
    ("eval.ece_bins=0", "eval.ece_bins"),
    ("seed=-1", "seed must be an integer >= 0"),
    ("data.num_workers=-1", "data.num_workers must be an integer >= 0"),
    ("model.pretrained=[1]", "model.pretrained must be a path"),
])
def test_silently_wrong_settings_are_refused(make_cfg, override, match):
    """Issue 15: values that gave wrong numbers (NaN lr, overlapping shot groups, ECE over 0 bins)
    or a traceback are named at start."""
    with pytest.raises(ConfigError, match=match):
        validate(make_cfg(override))
