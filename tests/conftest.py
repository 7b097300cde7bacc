import os

# Before torch is imported anywhere: passive OpenMP waiting (see ../shared/README.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from lt_bench.compose import setup_hydra  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
setup_hydra()


@pytest.fixture
def make_cfg(tmp_path):
    """Compose the project's Hydra config with overrides, as run.py would."""
    def make(*overrides: str, out_dir: Path | None = None):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            return compose("config", overrides=[f"out_dir={out_dir or tmp_path / 'run'}", "progress=false",
                                                *overrides])
    return make
