"""lt_bench as users install it: a wheel (not the editable checkout) runs the demo from any
folder with the configs inside the package; runs that produce nothing leave no folder."""
import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}


def _setuptools_builds_here() -> bool:
    if importlib.util.find_spec("setuptools") is None:
        return False
    import setuptools
    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The wheel of this checkout, installed into a folder of its own (not site-packages)."""
    tmp = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if _setuptools_builds_here() else []
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation,
                            "--disable-pip-version-check", str(ROOT), "-w", str(tmp / "dist")],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp / "dist").glob("lt_bench-*.whl"))
    target = tmp / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                           "--target", str(target), str(wheel)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return wheel, target


def test_the_wheel_holds_every_package_and_the_configs(installed):
    from setuptools import find_packages
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in find_packages(str(ROOT), include=["lt_bench", "lt_bench.*"]):
        assert f"{package.replace('.', '/')}/__init__.py" in names, f"{package} is not in the wheel"
    configs = sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*")
                     if p.is_file() and p.suffix in (".yaml", ".py"))
    missing = [str(c) for c in configs if f"lt_bench/configs/{c.as_posix()}" not in names]
    assert not missing, f"configs missing from the wheel: {missing}"
    assert {"lt_bench/data_splits/manifest.json", "lt_bench/reference_results.json"} <= names
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_the_installed_package_runs_the_demo_from_another_folder(installed, tmp_path):
    _, target = installed
    env = {**ENV, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import lt_bench, lt_bench.run_folder as r; "
                            "print(lt_bench.__file__); print(r.CONFIG_DIR)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True)
    module, configs = where.stdout.split()
    assert Path(module).is_relative_to(target) and Path(configs) == target / "lt_bench" / "configs"
    version = subprocess.run([sys.executable, "-m", "lt_bench.cli", "--version"], cwd=tmp_path, env=env,
                             capture_output=True, text=True)
    from lt_bench import __version__
    assert version.stdout.strip() == f"lt-bench {__version__}"
    run = subprocess.run([sys.executable, "-m", "lt_bench.cli", "train", "task=digits_lt", "stage1.epochs=1",
                          "stage2.epochs=1", "progress=false", "plots=false"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    records = list((tmp_path / "runs" / "digits_lt").glob("*/results.json"))
    assert len(records) == 1 and (records[0].parent / "run.log").is_file()


@pytest.mark.parametrize("overrides", [
    ["mode=check_data", "task=placeslt", f"data.splits_dir={ROOT.parent / 'shared' / 'data' / 'splits'}",
     "check_data.images=false"],
    ["mode=leaderboard", f"leaderboard.paths=[{ROOT / 'benchmarks' / 'results'}]"],
    ["seed=-1"],                         # refused by the config check
    ["imbalance=500"],                   # refused when the data is built
])
def test_runs_that_produce_nothing_leave_no_folder(tmp_path, overrides):
    if overrides[0] == "mode=check_data" and not (ROOT.parent / "shared" / "data" / "splits").is_dir():
        pytest.skip("../shared/data/splits is absent")
    (tmp_path / "kept").mkdir()
    proc = subprocess.run([sys.executable, str(ROOT / "run.py"), *overrides], cwd=tmp_path, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == (0 if overrides[0].startswith("mode=") else 2), proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]      # no runs/<task>/<date_time>/
