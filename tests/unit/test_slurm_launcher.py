"""hydra/launcher=slurm (configs/hydra/launcher/slurm.yaml): the sbatch script that Hydra's
submitit launcher would submit for each point of a multirun, rendered without a cluster."""
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lt_bench.compose import check_sweep
from tests.conftest import ROOT

submitit = pytest.importorskip("submitit")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def sbatch_script(tmp_path, monkeypatch, *overrides: str) -> tuple[str, object]:
    """Run the launcher's own launch() up to the submission; return the batch script and executor."""
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", f"hydra.sweep.dir={tmp_path}", *overrides],
                      return_hydra_config=True)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=lambda cfg: None, config=cfg)
    captured = {}

    def map_array(executor, fn, *args):
        captured["executor"], captured["jobs"] = executor, list(zip(*args))
        return []

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 2))   # no srun here
    launcher.launch([["seed=0"], ["seed=1"]], initial_job_idx=0)
    executor = captured["executor"]
    assert [job[0] for job in captured["jobs"]] == [["seed=0"], ["seed=1"]]   # one job per point
    return executor._executor._make_submission_file_text("python -m submitit.core._submit X", "uid"), executor


def test_one_multi_gpu_ddp_job_per_point(tmp_path, monkeypatch):
    script, executor = sbatch_script(tmp_path, monkeypatch)
    lines = set(script.splitlines())
    for flag in ("--nodes=1", "--gpus-per-node=8", "--ntasks-per-node=8", "--cpus-per-task=10", "--time=1440",
                 "--requeue", f"--signal={submitit.JobEnvironment.USR_SIG}@120"):
        assert f"#SBATCH {flag}" in lines, flag
    assert not any(line.startswith(("#SBATCH --partition", "#SBATCH --mem=")) for line in lines)
    assert any(line.startswith("srun ") for line in lines)          # srun starts the 8 ranks
    assert executor._executor.max_num_timeout == 20
    assert str(tmp_path / ".submitit") in script


def test_tasks_follow_the_gpus_and_cluster_settings_pass_through(tmp_path, monkeypatch):
    script, _ = sbatch_script(tmp_path, monkeypatch, "hydra.launcher.gpus_per_node=4", "hydra.launcher.nodes=2",
                              "hydra.launcher.partition=gpu", "hydra.launcher.mem_gb=256",
                              "hydra.launcher.timeout_min=60")
    lines = set(script.splitlines())
    for flag in ("--nodes=2", "--gpus-per-node=4", "--ntasks-per-node=4", "--partition=gpu", "--mem=256GB",
                 "--time=60"):
        assert f"#SBATCH {flag}" in lines, flag


@pytest.mark.parametrize("launcher", ["slurm", "submitit_local", "submitit_slurm"])
def test_multirun_jobs_are_checked_with_a_submitit_launcher(launcher):
    check_sweep(["-m", f"hydra/launcher={launcher}", "seed=0,1", "resume=auto", "stage1.epochs=1"])
