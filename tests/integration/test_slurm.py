"""Scale-out through SLURM without a cluster: Hydra's submitit launcher with its local executor
(a real launcher: pickled jobs, a controller process, its preemption signal and requeue), and
two run.py processes whose environment is what srun gives its tasks."""
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.helpers.runs import TORCHRUN, comparable, results, run_py

submitit = pytest.importorskip("submitit")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")

# long enough for a signal to land in stage 1 after its first checkpoint
SWEPT = ["stage1.epochs=12", "stage2.epochs=2", "device=cpu", "progress=false", "plots=false", "resume=auto"]
LOCAL = ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15"]


def multirun(*overrides: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    return run_py("-m", *LOCAL, *overrides, *SWEPT, cwd=cwd, timeout=timeout)


def job_folders(cwd: Path) -> list[Path]:
    return sorted(p.parent for p in cwd.glob("runs/multirun/*/*/.hydra"))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """python run.py -m hydra/launcher=submitit_local seed=0,1 ...: two jobs, run by submitit."""
    cwd = tmp_path_factory.mktemp("sweep")
    started = time.perf_counter()
    proc = multirun("seed=0,1", cwd=cwd)
    print(f"2-job submitit_local multirun: {time.perf_counter() - started:.0f} s")
    return cwd, proc


def test_submitit_local_multirun_writes_one_record_set_per_point(sweep):
    cwd, proc = sweep
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in proc.stdout
    folders = job_folders(cwd)
    assert len(folders) == 2 and folders[0] != folders[1] and folders[0].parent == folders[1].parent
    seeds = []
    for folder in folders:
        records = results(folder)
        assert [(r["stage"], r["method"]) for r in records] == [(1, "softmax"), (2, "gumbel")]
        assert all(r["world_size"] == 1 and r["epochs"] > 0 for r in records)
        seeds.append({r["seed"] for r in records})
    assert seeds == [{0}, {1}]
    assert len(list(cwd.glob("runs/multirun/*/.submitit/*/*_result.pkl"))) == 2   # submitit ran them


def _job_tasks(cwd: Path) -> list[int]:
    """The processes submitit's local controller started for jobs of this sweep (and their
    DataLoader workers, forked with the same command line): SLURM too signals the whole step."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            same_cwd = os.readlink(entry / "cwd") == str(cwd)
        except OSError:
            continue
        if same_cwd and b"submitit.core._submit" in cmdline:
            pids.append(int(entry.name))
    return pids


def test_slurms_warning_saves_requeues_and_the_job_resumes(sweep, tmp_path):
    """The time-limit warning (submitit's signal, SIGUSR2) mid-way through stage 1: training saves
    after the current step, submitit's handler requeues the job, and the requeued job resumes in
    the same folder (resume=auto) and ends with the records of the uninterrupted job."""
    usr_sig = submitit.JobEnvironment._usr_sig()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("LT_BENCH_FAILPOINT", None)
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-m", *LOCAL, "seed=0", *SWEPT], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not list(tmp_path.glob("runs/multirun/*/*/checkpoints/stage1.pt")):
            assert proc.poll() is None and time.monotonic() < deadline, "no stage-1 checkpoint"
            time.sleep(0.05)
        tasks = _job_tasks(tmp_path)
        assert tasks
        for pid in tasks:
            try:
                os.kill(pid, usr_sig)
            except ProcessLookupError:
                pass
        stdout, stderr = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
    [folder] = job_folders(tmp_path)                 # requeued into the same folder
    log = (folder / "run.log").read_text()
    name = signal.Signals(usr_sig).name
    assert f"stage1: {name}, checkpoint saved at epoch" in log and "passed on to" in log
    assert "stage1: resumed from" in log
    submitit_logs = "".join(p.read_text() for p in tmp_path.glob("runs/multirun/*/.submitit/*/*_log.*"))
    assert "Requeued job" in submitit_logs
    uninterrupted = job_folders(sweep[0])[0]
    assert comparable(results(folder)) == comparable(results(uninterrupted))


def _free_job_id() -> int:
    """A SLURM job id whose derived MASTER_PORT (20000 + id % 20000) is free here."""
    for _ in range(100):
        job_id = random.randrange(1_000_000, 10_000_000)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", 20000 + job_id % 20000))
                return job_id
            except OSError:
                continue
    raise RuntimeError("no free port")


QUICK2 = ["stage1.epochs=2", "stage2.epochs=1", "device=cpu", "progress=false", "plots=false"]


def test_two_tasks_with_slurms_environment_train_as_torchrun_ranks(tmp_path):
    """run.py started twice as srun would start two tasks of one job on one node: DDP over gloo,
    one record set of world size 2, the same as torchrun's."""
    out = tmp_path / "slurm"
    job_id = _free_job_id()
    base = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "SLURM_JOB_ID": str(job_id), "SLURM_JOB_NAME": "run",
            "SLURM_JOB_NODELIST": "localhost", "SLURM_NODELIST": "localhost", "SLURM_NNODES": "1",
            "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2", "SLURM_TASKS_PER_NODE": "2", "SLURM_NODEID": "0",
            "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "localhost",
            "SLURM_STEP_TASKS_PER_NODE": "2",
            "OMP_NUM_THREADS": "1"}   # as torchrun sets it for each of its processes: the same float sums
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
                "TORCHELASTIC_RUN_ID", "LT_BENCH_DDP_FROM_SLURM", "LT_BENCH_FAILPOINT"):
        base.pop(key, None)
    started = time.perf_counter()
    tasks = [subprocess.Popen([sys.executable, str(ROOT / "run.py"), f"out_dir={out}", *QUICK2], cwd=tmp_path,
                              env={**base, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    try:
        outputs = [task.communicate(timeout=600) for task in tasks]
    finally:
        for task in tasks:
            if task.poll() is None:
                task.kill()
                task.communicate()
    print(f"two SLURM-like tasks: {time.perf_counter() - started:.0f} s")
    for task, (stdout, stderr) in zip(tasks, outputs):
        assert task.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert not (tmp_path / "runs").exists()          # rank 1 made no run folder of its own
    records = results(out)
    assert [r["stage"] for r in records] == [1, 2]
    for r in records:
        assert r["world_size"] == 2 and r["num_eval"] == 500
        assert len(r["rank_param_checksums"]) == 2 and r["rank_param_checksums"][0] == r["rank_param_checksums"][1]
    # torchrun sets OMP_NUM_THREADS=1 only where it is unset: set here, so a caller's value cannot differ
    torchrun = run_py(f"out_dir={tmp_path / 'torchrun'}", *QUICK2, cwd=tmp_path, launcher=TORCHRUN,
                      env={"OMP_NUM_THREADS": "1"})
    assert torchrun.returncode == 0, torchrun.stderr[-3000:]
    assert comparable(records) == comparable(results(tmp_path / "torchrun"))
