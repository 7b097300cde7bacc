"""DDP from SLURM's environment (lt_bench.distributed): srun's tasks get torchrun's variables.

The environments below are what `srun` (directly, or through Hydra's submitit launcher) gives
its tasks; SLURM's own tools are not needed (``scontrol`` is used where installed)."""
import os
import stat

import pytest

from lt_bench import distributed
from lt_bench.distributed import (SLURM_MARK, apply_slurm_env, expand_hostlist, first_host, tasks_on_node,
                                  torchrun_env_from_slurm)
from lt_bench.errors import ConfigError


@pytest.fixture(autouse=True)
def no_scontrol(monkeypatch):
    """The parser, not a SLURM installation this machine may have."""
    monkeypatch.setattr(distributed.shutil, "which", lambda name: None)


@pytest.mark.parametrize("nodelist,hosts", [
    ("localhost", ["localhost"]),
    ("node1,node2", ["node1", "node2"]),
    ("gpu[01-04,07]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]),
    ("a[1-2],b3", ["a1", "a2", "b3"]),
    ("node[9-11]", ["node9", "node10", "node11"]),
    ("gpu-a100-[001-002],cpu7", ["gpu-a100-001", "gpu-a100-002", "cpu7"]),
    ("n[1,3-4]", ["n1", "n3", "n4"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("c[098-101]", ["c098", "c099", "c100", "c101"]),
])
def test_compressed_host_lists_expand_as_scontrol_prints_them(nodelist, hosts):
    assert expand_hostlist(nodelist) == hosts
    assert first_host(nodelist) == hosts[0]


@pytest.mark.parametrize("nodelist", ["gpu[a-b]", "", "n[1-]"])
def test_an_unreadable_host_list_is_named(nodelist):
    with pytest.raises(ConfigError, match="node list"):
        expand_hostlist(nodelist)


def test_scontrol_is_asked_where_it_is_installed(tmp_path, monkeypatch):
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\n[ \"$1 $2\" = 'show hostnames' ] && printf 'from-scontrol\\nsecond\\n'\n")
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(distributed.shutil, "which", lambda name: str(scontrol) if name == "scontrol" else None)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert first_host("gpu[01-02]") == "from-scontrol"
    scontrol.write_text("#!/bin/sh\nexit 1\n")       # failing: the parser answers
    assert first_host("gpu[01-02]") == "gpu01"


@pytest.mark.parametrize("spec,node,count", [
    ("4", 0, 4), ("2(x3)", 2, 2), ("2(x3),1", 3, 1), ("2(x3),1", 0, 2), ("8(x2)", 1, 8), ("3,1", 1, 1),
])
def test_tasks_per_node_formats(spec, node, count):
    assert tasks_on_node(spec, node) == count


def test_an_unreadable_tasks_per_node_is_named():
    with pytest.raises(ConfigError, match="tasks per node"):
        tasks_on_node("2(3)", 0)


# What a task of `srun` (sbatch --nodes=1 --ntasks-per-node=4 --gpus-per-node=4, as submitit
# writes it) sees, for rank 2.
ONE_NODE = {
    "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu017", "SLURM_NODELIST": "gpu017", "SLURM_NNODES": "1",
    "SLURM_NTASKS": "4", "SLURM_NTASKS_PER_NODE": "4", "SLURM_TASKS_PER_NODE": "4", "SLURM_NODEID": "0",
    "SLURM_PROCID": "2", "SLURM_LOCALID": "2", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "4",
    "SLURM_STEP_NODELIST": "gpu017", "SLURM_STEP_TASKS_PER_NODE": "4", "SLURM_JOB_NAME": "run",
    "SUBMITIT_EXECUTOR": "slurm",
}
# rank 9 of 2 nodes x 8 GPUs: second node, its local rank 1
TWO_NODES = {
    "SLURM_JOB_ID": "7000001", "SLURM_JOB_NODELIST": "gpu[01-02]", "SLURM_NNODES": "2", "SLURM_NTASKS": "16",
    "SLURM_NTASKS_PER_NODE": "8", "SLURM_TASKS_PER_NODE": "8(x2)", "SLURM_NODEID": "1", "SLURM_PROCID": "9",
    "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "gpu[01-02]",
    "SLURM_STEP_TASKS_PER_NODE": "8(x2)", "SLURM_STEP_NUM_TASKS": "16",
}
# 5 tasks on 3 nodes (sbatch --ntasks=5), the last node holds one; an array job's task
UNEVEN = {
    "SLURM_JOB_ID": "88", "SLURM_ARRAY_JOB_ID": "80", "SLURM_ARRAY_TASK_ID": "8", "SLURM_JOB_NODELIST": "a[1-2],b3",
    "SLURM_NTASKS": "5", "SLURM_TASKS_PER_NODE": "2(x2),1", "SLURM_NODEID": "2", "SLURM_PROCID": "4",
    "SLURM_LOCALID": "0",
}


def _derived(rank, world, local_rank, local_world, addr, port, task):
    return {"RANK": rank, "WORLD_SIZE": world, "LOCAL_RANK": local_rank, "LOCAL_WORLD_SIZE": local_world,
            "MASTER_ADDR": addr, "MASTER_PORT": port, SLURM_MARK: task}


@pytest.mark.parametrize("environ,expected", [
    (ONE_NODE, _derived("2", "4", "2", "4", "gpu017", "23456", "123456.0.2")),
    (TWO_NODES, _derived("9", "16", "1", "8", "gpu01", "20001", "7000001.0.9")),
    (UNEVEN, _derived("4", "5", "0", "1", "a1", "20088", "88..4")),
    # the job step is smaller than the allocation (sbatch --ntasks=8, srun --ntasks=2)
    ({**ONE_NODE, "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "2",
      "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}, _derived("1", "2", "1", "2", "gpu017", "23456", "123456.0.1")),
    # MASTER_ADDR / MASTER_PORT chosen by the user are kept
    ({**ONE_NODE, "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29511"},
     {k: v for k, v in _derived("2", "4", "2", "4", "", "", "123456.0.2").items() if not k.startswith("MASTER")}),
])
def test_slurm_tasks_get_torchruns_variables(environ, expected):
    assert torchrun_env_from_slurm(environ) == expected


@pytest.mark.parametrize("environ", [
    {**ONE_NODE, "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"},   # one task: one process
    {k: v for k, v in ONE_NODE.items() if k != "SLURM_PROCID"},     # not a task of a job step
    {**ONE_NODE, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "x"},  # torchrun wins
    {**ONE_NODE, "RANK": "0", "WORLD_SIZE": "4"},                    # set by hand: kept
    {**ONE_NODE, "LT_BENCH_SLURM_DDP": "0"},                         # switched off
    {"HOME": "/root"},                                               # no SLURM at all
])
def test_nothing_to_do(environ):
    assert torchrun_env_from_slurm(environ) == {}


def test_torchrun_under_srun_wins_even_over_an_inherited_mark():
    environ = {**ONE_NODE, "RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x", SLURM_MARK: "1.0.0"}
    assert torchrun_env_from_slurm(environ) == {}


def test_applied_once_per_task():
    environ = dict(ONE_NODE)
    assert apply_slurm_env(environ)["RANK"] == "2" and environ["RANK"] == "2" and environ["MASTER_PORT"] == "23456"
    assert apply_slurm_env(environ) == {}            # run.py's start, then distributed.setup: the same


def test_variables_derived_for_another_task_are_not_torchruns():
    """A sweep submitted from inside a job step passes its derived RANK... on to the jobs it submits
    (sbatch exports the environment): each job's tasks derive their own, or drop them."""
    submitter = dict(UNEVEN)
    apply_slurm_env(submitter)
    job = {**submitter, **ONE_NODE}                  # srun overrides SLURM_*, not RANK or MASTER_ADDR
    apply_slurm_env(job)
    assert (job["RANK"], job["WORLD_SIZE"], job["MASTER_ADDR"], job["MASTER_PORT"]) == ("2", "4", "gpu017", "23456")
    single = {**submitter, "SLURM_JOB_ID": "99", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_STEP_ID": "0",
              "SLURM_TASKS_PER_NODE": "1", "SLURM_JOB_NODELIST": "cpu1"}
    apply_slurm_env(single)
    assert not {"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", SLURM_MARK} & set(single)


@pytest.mark.parametrize("environ,message", [
    ({**ONE_NODE, "SLURM_PROCID": "4"}, "SLURM_PROCID=4 but 4 tasks"),
    ({k: v for k, v in UNEVEN.items() if k != "SLURM_JOB_NODELIST"}, "no SLURM_JOB_NODELIST"),
])
def test_an_inconsistent_slurm_environment_is_named(environ, message):
    with pytest.raises(ConfigError, match=message):
        torchrun_env_from_slurm(environ)


def test_setup_maps_slurm_for_the_submitit_launcher(monkeypatch):
    """The submitit launcher calls the task function in each task, past run.py's start:
    distributed.setup maps SLURM's variables itself (a single task stays single)."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", SLURM_MARK,
                "TORCHELASTIC_RUN_ID"):
        monkeypatch.delenv(key, raising=False)
    for key, value in {**ONE_NODE, "SLURM_NTASKS": "1", "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}.items():
        monkeypatch.setenv(key, value)
    ctx = distributed.setup("cpu")
    assert not ctx.is_distributed and ctx.world_size == 1 and "RANK" not in os.environ
