"""Exact evaluation under DDP: each item once, in dataset order, whatever the shard sizes."""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from lt_bench.distributed import DistContext
from lt_bench.evaluation import run_inference


def _worker(rank: int, world: int, port: int, n: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ctx = DistContext(rank=rank, world_size=world, backend="gloo")
    data = TensorDataset(torch.arange(n, dtype=torch.float32).reshape(n, 1) * 10, torch.arange(n) % 3)
    outputs, labels = run_inference(lambda x: torch.cat([x, x + 1], dim=1), data, ctx, batch_size=2)
    queue.put((rank, outputs.tolist(), labels.tolist()))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("world,n", [(2, 7), (3, 2)])   # uneven shards; a rank with none
def test_gathered_predictions_cover_each_item_once(world, n):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = 29500 + (os.getpid() % 1000) + world
    procs = [ctx.Process(target=_worker, args=(r, world, port, n, queue)) for r in range(world)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    expected = [[10.0 * i, 10.0 * i + 1] for i in range(n)]
    for _, outputs, labels in results:
        assert outputs == expected and labels == [i % 3 for i in range(n)]
