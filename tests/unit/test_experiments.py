"""The experiment configs (configs/experiment/): every job of each multirun composes, passes the
checks, and is the cell or baseline it claims, with its recipe."""
import pytest
from hydra import compose, initialize_config_dir

from lt_bench.compose import check_composed, sweep_jobs
from lt_bench.leaderboard_table import load_references
from lt_bench.run_folder import CONFIG_DIR
from lt_bench.validate import validate


def jobs_of(*overrides):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        configs = []
        for job in sweep_jobs(list(overrides)):
            cfg = compose("config", overrides=[*job, "out_dir=/tmp/never-written"])
            check_composed(cfg, job)
            validate(cfg)
            configs.append(cfg)
        return configs


def test_gol_table4_runs_every_cell_of_the_paper_with_the_authors_loss():
    configs = jobs_of("+experiment=gol_table4")
    cells = [(c.task.name, c.imbalance, c.model.name) for c in configs]
    assert cells == [("cifar100lt", 50, "resnet32"), ("cifar100lt", 100, "resnet32"), ("cifar100lt", 200, "resnet32"),
                     ("imagenetlt", None, "resnet50"), ("imagenetlt", None, "seresnet50"),
                     ("placeslt", None, "resnet152")]
    for cfg in configs:
        assert cfg.stage == "all" and cfg.stage1.loss == "activation" and cfg.stage1.activation == "softmax"
        assert cfg.stage2.method == "retrain" and cfg.stage2.activation == "gumbel"
        assert cfg.activations.gumbel.gradient == "authors" and cfg.eval.select == "test"
    # each cell keeps its task's GOL recipe (Table 4's stage-2 lr: 1e-4 CIFAR, 1e-5 ImageNet-LT / Places-LT)
    assert [c.stage2.lr for c in configs] == [1e-4, 1e-4, 1e-4, 1e-5, 1e-5, 1e-5]
    assert configs[-1].model.pretrained == "torchvision"
    # the paper has a Gumbel number, of the same protocol, for every cell: the leaderboard's delta
    paper = {(e["task"], e["imbalance"], e["model"]) for e in load_references()
             if e["kind"] == "classification" and e["method"] == "gumbel" and e["protocol"] == "best@test"}
    assert set(cells) == paper
    assert len(jobs_of("+experiment=gol_table4", "seed=0,1,2")) == 18


def test_decoupled_baselines_each_with_its_recipe():
    configs = jobs_of("+experiment=decoupled_baselines")
    assert [c.stage2.method for c in configs] == ["crt", "lws", "tau_norm", "logit_adjust", "retrain", "retrain"]
    crt, lws = configs[0].stage2, configs[1].stage2
    assert (crt.epochs, crt.batch_size, crt.lr, crt.schedule, crt.sampler) == (10, 128, 0.1, "cosine", "class_balanced")
    assert "MiSLAS" in crt.source and "MiSLAS" in lws.source
    assert configs[5].stage2.lr == 1e-4                       # Gumbel keeps GOL's recipe
    imagenet = jobs_of("+experiment=decoupled_baselines", "task=imagenetlt")
    crt, lws = imagenet[0].stage2, imagenet[1].stage2
    assert (crt.epochs, crt.batch_size, crt.lr, crt.weight_decay) == (10, 512, 0.2, 5e-4)
    assert (lws.epochs, lws.batch_size, lws.lr) == (5, 512, 0.2) and "cls_lws.yaml" in lws.source
    places = jobs_of("+experiment=decoupled_baselines", "task=placeslt")
    assert (places[0].stage2.lr, places[0].stage2.batch_size, places[1].stage2.epochs) == (0.1, 256, 5)


def test_one_stage_baselines_share_ldam_drws_schedule():
    configs = jobs_of("+experiment=one_stage_baselines", "task=cifar10lt")
    assert [c.stage1.loss for c in configs] == ["activation", "ldam", "drw", "balanced_softmax", "logit_adjusted",
                                                "cb_focal"]
    for cfg in configs:
        assert cfg.stage == 1 and cfg.task.name == "cifar10lt" and cfg.eval.select == "test"
    for cfg in configs[1:]:
        assert (cfg.stage1.epochs, list(cfg.stage1.milestones), cfg.stage1.batch_size) == (200, [160, 180], 128)
    assert configs[5].stage1.activation == "sigmoid"


def test_a_typo_in_any_job_is_reported_before_the_first_starts():
    from lt_bench.compose import check_sweep
    from lt_bench.errors import ConfigError
    with pytest.raises(ConfigError, match=r"multirun job #0 .*stage2.lr"):
        check_sweep(["-m", "+experiment=decoupled_baselines", "stage2.lr=-1"])


def test_gol_table7_runs_each_detector_with_softmax_and_gumbel_on_the_random_sampler():
    configs = jobs_of("+experiment=gol_table7")
    cells = sorted((c.detector.name, c.activation) for c in configs)
    assert cells == sorted((d, a) for d in ("mask_rcnn_r50", "mask_rcnn_r101", "mask_rcnn_x101_64x4d",
                                            "cascade_mask_rcnn_r101", "htc_r101") for a in ("softmax", "gumbel"))
    for cfg in configs:
        assert cfg.task.name == "lvis" and cfg.detection.sampler == "random" and cfg.detector.loss == "activation_ce"


def test_gol_table6_pairs_each_loss_with_the_sigmoid_and_gumbel():
    configs = jobs_of("+experiment=gol_table6")
    cells = sorted((c.detector.loss, c.activation) for c in configs)
    assert cells == sorted((loss, a) for loss in ("eql", "drop", "acsl", "federated") for a in ("sigmoid", "gumbel"))
    for cfg in configs:
        assert cfg.task.name == "lvis" and cfg.detector.name == "mask_rcnn_r50" and cfg.detection.sampler is None


def test_gol_ablation_is_every_combination_of_the_papers_components_at_2x():
    configs = jobs_of("+experiment=gol_ablation")
    cells = {(c.detection.sampler, c.detector.loss, c.activation, c.detection.enh) for c in configs}
    assert len(configs) == len(cells) == 24
    assert cells == {(s, loss, a, e) for s in ("random", "rfs") for loss in ("activation_ce", "eql", "drop")
                     for a in ("sigmoid", "gumbel") for e in (False, True)}
    assert all(c.detector.name == "mask_rcnn_r50" and c.detection.schedule == "2x" for c in configs)
    assert ("rfs", "drop", "gumbel", True) in cells                  # GOL (gol_r50's config, test_runner.py)
    softmax = jobs_of("+experiment=gol_ablation", "detector.loss=activation_ce", "activation=softmax")
    assert len(softmax) == 4 and {c.activation for c in softmax} == {"softmax"}
