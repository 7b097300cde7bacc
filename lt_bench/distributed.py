"""DistributedDataParallel: setup, teardown, collectives we need.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and the rendezvous for one node or many.  SLURM's
``srun`` (directly, or through Hydra's submitit launcher: ``hydra/launcher=slurm``) starts one
task per GPU with SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and the job's node list instead;
``torchrun_env_from_slurm`` turns those into torchrun's variables (``apply_slurm_env`` sets
them), so the rest of the code knows only torchrun's.  Without either, everything runs as a
single process.
"""
from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from lt_bench.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")

# The variables torchrun sets that SLURM's environment stands in for.
TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
# Set beside them when they come from SLURM: which SLURM task they describe, so that variables
# inherited from another task (a sweep submitted from inside a job step) are not taken as torchrun's.
SLURM_MARK = "LT_BENCH_DDP_FROM_SLURM"
# LT_BENCH_SLURM_DDP=0 keeps a process single even where SLURM_NTASKS > 1 (a batch script that
# runs python directly, without srun, in an allocation of several tasks).
SLURM_SWITCH = "LT_BENCH_SLURM_DDP"


def expand_hostlist(nodelist: str) -> list[str]:
    """SLURM's compressed host list in full: ``gpu[01-03,07]`` -> gpu01 gpu02 gpu03 gpu07;
    ``a[1-2],b3`` -> a1 a2 b3; ``rack[1-2]-n[1-2]`` -> rack1-n1 rack1-n2 rack2-n1 rack2-n2
    (zero padding kept, as ``scontrol show hostnames`` prints them)."""
    hosts: list[str] = []
    for group in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", nodelist.strip()):
        names = [""]
        for text, ranges in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", group):
            names = [name + text for name in names]
            if ranges:
                names = [name + suffix for name in names for suffix in _expand_ranges(ranges, nodelist)]
        hosts.extend(name for name in names if name)
    if not hosts:
        raise ConfigError(f"SLURM node list {nodelist!r} names no host")
    return hosts


def _expand_ranges(ranges: str, nodelist: str) -> list[str]:
    out = []
    for part in ranges.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ConfigError(f"SLURM node list {nodelist!r}: cannot read the range {part!r}")
        if not dash:
            out.append(low)
            continue
        width = len(low) if low.startswith("0") else 0
        out.extend(f"{number:0{width}d}" for number in range(int(low), int(high) + 1))
    return out


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``scontrol show hostnames`` where SLURM's tools are
    installed (it knows every syntax), else ``expand_hostlist``."""
    if shutil.which("scontrol"):
        try:
            out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                                 timeout=30)
            if out.returncode == 0 and out.stdout.split():
                return out.stdout.split()[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return expand_hostlist(nodelist)[0]


def tasks_on_node(spec: str, node: int) -> int:
    """Tasks on node ``node`` from SLURM_TASKS_PER_NODE's format: ``4``, ``2(x3)``, ``2(x3),1``."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if not match:
            raise ConfigError(f"cannot read SLURM's tasks per node {spec!r}")
        counts += [int(match.group(1))] * int(match.group(2) or 1)
    return counts[min(node, len(counts) - 1)]


def _slurm_task(environ: Mapping[str, str]) -> str:
    """Which SLURM task this is: job id, step id, task id."""
    step = environ.get("SLURM_STEP_ID", environ.get("SLURM_STEPID", ""))
    return f"{environ.get('SLURM_JOB_ID', '')}.{step}.{environ.get('SLURM_PROCID', '')}"


def torchrun_env_from_slurm(environ: Mapping[str, str]) -> dict[str, str | None]:
    """torchrun's variables for a task that ``srun`` started: what to set (``None``: to unset),
    ``{}`` where there is nothing to do.

    Nothing when torchrun launched this process (its RANK and WORLD_SIZE win, also under
    srun), when there is a single task (SLURM_NTASKS=1: one process, as without SLURM), when
    SLURM_PROCID is not set (not a task of a job step) or when LT_BENCH_SLURM_DDP=0.  Otherwise
    RANK is SLURM_PROCID, WORLD_SIZE SLURM_NTASKS, LOCAL_RANK SLURM_LOCALID, LOCAL_WORLD_SIZE
    this node's count in SLURM_TASKS_PER_NODE / SLURM_NTASKS_PER_NODE (``2(x3)`` is 2 on each of
    3 nodes), MASTER_ADDR the first host of SLURM_JOB_NODELIST and MASTER_PORT 20000 + job id %
    20000 (the same on every task of a job, another for the next job on that node);
    MASTER_ADDR and MASTER_PORT set by the user are kept.  The job step's own variables
    (SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE) come first where
    srun set them.  Variables this function derived for another task (inherited by a job that
    a sweep submitted from inside a job step) are replaced, or removed where there is no
    SLURM DDP now.
    """
    if "TORCHELASTIC_RUN_ID" in environ:
        return {}                                   # started by torchrun: its variables win
    derived = environ.get(SLURM_MARK)
    if derived is not None and derived == _slurm_task(environ):
        return {}                                   # done already in this task (run.py, then setup)
    if derived is None and "RANK" in environ and "WORLD_SIZE" in environ:
        return {}                                   # set by hand or by another launcher
    stale: dict[str, str | None] = dict.fromkeys((*TORCHRUN_KEYS, SLURM_MARK)) if derived is not None else {}
    ntasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS") or "1"
    if (environ.get(SLURM_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")
            or "SLURM_PROCID" not in environ or int(ntasks) <= 1):
        return stale
    world_size, rank = int(ntasks), int(environ["SLURM_PROCID"])
    if not 0 <= rank < world_size:
        raise ConfigError(f"SLURM environment: SLURM_PROCID={rank} but {world_size} tasks")
    per_node = next((environ[key] for key in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE",
                                               "SLURM_NTASKS_PER_NODE") if environ.get(key)), None)
    nodelist = next((environ[key] for key in ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST", "SLURM_NODELIST")
                     if environ.get(key)), None)
    if nodelist is None:
        raise ConfigError(f"SLURM environment: {world_size} tasks but no SLURM_JOB_NODELIST to take the "
                          "master host from (start the tasks with srun, or set LT_BENCH_SLURM_DDP=0)")
    env: dict[str, str | None] = {**stale, "RANK": str(rank), "WORLD_SIZE": str(world_size),
           "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
           "LOCAL_WORLD_SIZE": str(tasks_on_node(per_node, int(environ.get("SLURM_NODEID", "0")))
                                   if per_node else world_size),
           SLURM_MARK: _slurm_task(environ)}
    if derived is not None or "MASTER_ADDR" not in environ:
        env["MASTER_ADDR"] = first_host(nodelist)
    if derived is not None or "MASTER_PORT" not in environ:
        job_id = re.sub(r"\D", "", environ.get("SLURM_JOB_ID", ""))
        env["MASTER_PORT"] = str(20000 + int(job_id) % 20000) if job_id else "29500"
    return env


def apply_slurm_env(environ: MutableMapping[str, str] | None = None) -> dict[str, str | None]:
    """Set (and unset) torchrun's variables from SLURM's (``torchrun_env_from_slurm``); returns
    the changes."""
    environ = os.environ if environ is None else environ
    changes = torchrun_env_from_slurm(environ)
    for key, value in changes.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return changes


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.backend is not None

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.is_distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, obj) -> list:
        if not self.is_distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.is_distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_buffers(self, module: torch.nn.Module) -> None:
        """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

        DDP syncs buffers at the start of each forward, so after the last training step
        every rank holds statistics updated by its own batch; evaluation and checkpoints
        need the replicas identical.
        """
        if self.is_distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def gather_uneven(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's ``tensor`` (first dimensions may differ), in rank order."""
        if not self.is_distributed:
            return tensor
        local = tensor.to(self.device)
        sizes = torch.tensor([local.shape[0]], device=self.device)
        all_sizes = [torch.zeros_like(sizes) for _ in range(self.world_size)]
        dist.all_gather(all_sizes, sizes)
        all_sizes = [int(s.item()) for s in all_sizes]
        padded = local.new_zeros((max(all_sizes), *local.shape[1:]))
        padded[: local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:n] for p, n in zip(parts, all_sizes)]).to(tensor.device)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name not in DEVICES:
        raise ConfigError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=cpu or device=auto")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    # a scheduler that binds one GPU to each task (srun --gpus-per-task=1, --gpu-bind) shows
    # each task its own GPU only, as cuda:0
    return torch.device("cuda", 0 if torch.cuda.device_count() == 1 else local_rank)


def setup(device: str = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group if launched by torchrun or as srun tasks (NCCL on CUDA, gloo on CPU).

    SLURM's variables are mapped here too: Hydra's submitit launcher runs the task function in
    each task without going through run.py's start."""
    apply_slurm_env()
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistContext(device=resolve_device(device))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes),
                            **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistContext(rank, world_size, local_rank, dev, backend)


def teardown(ctx: DistContext) -> None:
    """Leave the process group.  Callers drop their DDP models first: on CPU/gloo a live DDP
    model at destroy_process_group() intermittently aborts the process."""
    gc.collect()
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()
