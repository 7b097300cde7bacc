"""The layering of the house (import-linter contracts in pyproject.toml) and the import-light
path that checks a config before torch is imported."""
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.exists() and shutil.which("lint-imports") is None:
        pytest.skip("import-linter is not installed (the dev extra has it)")
    out = subprocess.run([str(lint) if lint.exists() else "lint-imports"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


CHECK = """
import sys, time
started = time.perf_counter()
from lt_bench.compose import check_composed, setup_hydra
setup_hydra()
from hydra import compose, initialize_config_dir
from lt_bench.errors import ConfigError
overrides = sys.argv[1:]
with initialize_config_dir(config_dir={configs!r}, version_base="1.3"):
    try:
        check_composed(compose("config", overrides=overrides), overrides)
        print("accepted")
    except ConfigError as err:
        print("refused:", err)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm", "mmdet"))
print("heavy:", heavy[:3])
print("seconds: %.2f" % (time.perf_counter() - started))
"""


@pytest.mark.parametrize("overrides,refusal", [
    (["stage2.activation=gumbal"], "unknown stage2.activation 'gumbal'; valid: gumbel, sigmoid, softmax"),
    (["device=gpu"], "unknown device 'gpu'; valid: auto, cpu, cuda"),
    (["+stage1.epoch=2"], "unknown key stage1.epoch: stage1 has activation, batch_size, checkpoint, "
                          "classifier_init, epochs, gamma, loss, loss_scale, lr, milestones, momentum, nesterov, "
                          "reference_epochs, schedule, source, warmup_epochs, weight_decay; did you mean "
                          "stage1.epochs? ('+' adds keys"),
    (["stage2=crt", "stage2.sampler=balanced"], "unknown stage2.sampler 'balanced'"),
    (["task=lvis", "detector=gol_r50", "detector.loss=focl"], "unknown detector.loss 'focl'; valid: acsl, activation_ce, drop, eql, federated, focal"),
    (["stage2=tau_norm", "+stage2.activation=softmax"], "unknown key stage2.activation"),
    (["task=cifar100lt", "stage2=crt"], None),
])
def test_config_checked_without_torch(overrides, refusal):
    """Each refusal names the bad value; nothing heavy is imported to say so."""
    code = CHECK.replace("{configs!r}", repr(str(ROOT / "configs")))
    out = subprocess.run([sys.executable, "-c", code, *overrides], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[-2] == "heavy: []"
    if refusal is None:
        assert lines[0] == "accepted"
    else:
        assert lines[0].startswith("refused:") and refusal in lines[0], lines[0]


def test_a_misspelt_value_fails_before_torch_through_run_py(tmp_path):
    """run.py end to end: the error, exit status 2, in well under the time torch takes to import."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "stage1.epochs=two", f"out_dir={tmp_path / 'a'}"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0 and "stage1.epochs" in out.stdout + out.stderr
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "stage2.activation=gumbal",
                          f"out_dir={tmp_path / 'b'}"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and "unknown stage2.activation 'gumbal'" in out.stdout + out.stderr
    assert not (tmp_path / "b" / "results.json").exists()
    print(f"two refusals in {time.perf_counter() - started:.1f} s")


@pytest.mark.parametrize("override,message", [
    ("stage1.epoch=2", "ConfigError: unknown key stage1.epoch: stage1 has activation, batch_size, "),
    ("stag1.lr=0.1", "ConfigError: unknown key stag1.lr: the config has activations, check_data, data, "),
    ("data.nm_workers=2", "did you mean data.num_workers?"),
])
def test_an_unknown_key_lists_the_valid_ones_through_run_py(tmp_path, override, message):
    """Hydra alone would answer 'To append to your config use +stage1.epoch=2': adding the typo."""
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), override, f"out_dir={tmp_path / 'a'}"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr and "+stage1" not in out.stderr, out.stderr[-2000:]
    assert "did you mean stage1" in out.stderr or override.startswith("data")
    assert not (tmp_path / "a").exists()


def test_multirun_checks_every_job_before_the_first_starts(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "stage1.epochs=1", "stage2.epochs=1",
                          "stage2.activation=softmax,gumbal", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode != 0
    assert "multirun job #1 (stage1.epochs=1 stage2.epochs=1 stage2.activation=gumbal " in out.stderr
    assert "no job was started" in out.stderr and not (tmp_path / "sweep").exists()
