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


@pytest.fixture
def tree(tmp_path):
    """A tiny ImageNet-LT-style tree: Tiny_LT_{train,val,test}.txt and their JPEGs (6 classes);
    tests.helpers.splits.tiny_overrides points a config at it."""
    from lt_bench.data.synthetic import write_split_tree
    return write_split_tree(tmp_path / "tree", prefix="Tiny_LT")


@pytest.fixture(scope="module")
def v1_stats(tmp_path_factory):
    """LVIS v1 category statistics (1,203 categories) and their summary file, as run.py writes it."""
    from lt_bench.detection.categories import load_category_stats, save_category_stats
    from tests.helpers.lvis import SHARED_LVIS
    stats = load_category_stats(SHARED_LVIS / "lvis_v1_categories_with_counts.json", num_images=99_388)
    return stats, str(save_category_stats(stats, tmp_path_factory.mktemp("cats") / "lvis_categories.json"))
