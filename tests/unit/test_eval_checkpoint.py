"""lt-bench eval's checks before anything is evaluated: which checkpoint and config, which
overrides, where the record goes.  (Evaluating a real run: tests/integration/test_eval_checkpoint.py.)"""
import pytest
from omegaconf import OmegaConf

from lt_bench.errors import CheckpointError, ConfigError
from lt_bench.eval_checkpoint import apply_overrides, eval_target, locate, main

CONFIG = {"stage": "all", "seed": 0, "device": "auto", "task": {"name": "digits_lt", "eval_splits": ["test"]},
          "model": {"name": "resnet8"}, "eval": {"split": "test", "ece_bins": 15, "shot_thresholds": [100, 20]},
          "data": {"eval_batch_size": 256, "root": "data"}, "stage2": {"method": "retrain", "lr": 0.1},
          "train": {"amp": "none"}}


@pytest.fixture
def run(tmp_path):
    root = tmp_path / "run"
    (root / "checkpoints").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(CONFIG), root / "config.yaml")
    for stage in (1, 2):
        (root / "checkpoints" / f"stage{stage}.pt").write_bytes(b"weights")
    return root


def test_locate_a_checkpoint_or_a_run_folder(run, tmp_path):
    assert locate(run / "checkpoints" / "stage1.pt") == (run / "checkpoints" / "stage1.pt", run / "config.yaml")
    assert locate(run) == (run / "checkpoints" / "stage2.pt", run / "config.yaml")       # its last stage
    OmegaConf.save(OmegaConf.create({**CONFIG, "stage": "1"}), run / "config.yaml")
    assert locate(run) == (run / "checkpoints" / "stage1.pt", run / "config.yaml")
    (run / "checkpoints" / "stage1.pt").unlink()
    with pytest.raises(CheckpointError, match=r"last stage is stage 1 .*\(checkpoints there: stage2.pt\)"):
        locate(run)
    loose = tmp_path / "loose.pt"
    loose.write_bytes(b"weights")
    with pytest.raises(ConfigError, match="no config.yaml of its run"):
        locate(loose)
    assert locate(loose, config=run / "config.yaml") == (loose, run / "config.yaml")
    with pytest.raises(CheckpointError, match="no such checkpoint or run folder"):
        locate(tmp_path / "nowhere.pt")


def test_only_evaluation_settings_may_be_overridden(run):
    cfg = OmegaConf.load(run / "config.yaml")
    changed = apply_overrides(cfg, ["eval.split=val", "data.eval_batch_size=64", "device=cpu",
                                    "eval.shot_thresholds=[50,10]", "data.root=/data/x"])
    assert (changed.eval.split, changed.data.eval_batch_size, changed.device) == ("val", 64, "cpu")
    assert list(changed.eval.shot_thresholds) == [50, 10] and changed.data.root == "/data/x"
    assert cfg.eval.split == "test"                                       # the run's config is untouched
    for bad, message in (("seed=1", "would change what the checkpoint is"),
                         ("stage2.lr=0.5", "would change what the checkpoint is"),
                         ("model.name=resnet32", "would change what the checkpoint is"),
                         ("eval.nope=1", "no such key"), ("+eval.extra=1", "key=value"), ("eval.split", "key=value")):
        with pytest.raises(ConfigError, match=message):
            apply_overrides(cfg, [bad])


def test_the_record_never_goes_to_a_results_file(run, tmp_path):
    assert eval_target(run, None) == run / "eval.json"
    assert eval_target(run, tmp_path / "evals" / "mine.json") == tmp_path / "evals" / "mine.json"
    with pytest.raises(ConfigError, match="results.json holds the runs' own records"):
        eval_target(run, run / "results.json")
    with pytest.raises(ConfigError, match="is a folder"):
        eval_target(run, tmp_path)


def test_command_line_errors_are_one_line(run, capsys):
    (run / "results.json").write_text("[]")
    assert main([str(run / "checkpoints" / "stage2.pt"), "--out", str(run / "results.json")]) == 2
    assert capsys.readouterr().err.startswith("ConfigError: --out")
    assert main([str(run), "seed=3"]) == 2
    assert "seed: would change what the checkpoint is" in capsys.readouterr().err
    assert main([str(run / "checkpoints" / "stage2.pt")]) == 2           # not a torch file
    assert capsys.readouterr().err.startswith("CheckpointError: cannot read checkpoint")
    assert (run / "results.json").read_text() == "[]" and not (run / "eval.json").exists()
