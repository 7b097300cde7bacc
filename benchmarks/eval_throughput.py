"""Evaluation throughput, single process against exact (non-duplicating) DDP evaluation.

    python benchmarks/eval_throughput.py                 # CPU: 1 process vs torchrun with 2 gloo ranks
    python benchmarks/eval_throughput.py --nproc 4 --device cuda

Evaluates a ResNet-32 on a 10,000-image CIFAR-sized test set (synthetic pickles in the real
format) with lt_bench.evaluation.run_inference: once in this process, then under torchrun
where every rank predicts its strided shard and the shards are gathered back in dataset
order.  Reports images/s (medians over --repeats) and how long the gather itself takes.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from lt_bench import distributed  # noqa: E402
from lt_bench.data.cifar import load_cifar_pickles  # noqa: E402
from lt_bench.data.long_tail import SubsetView  # noqa: E402
from lt_bench.data.synthetic import write_cifar  # noqa: E402
from lt_bench.data.transforms import cifar_transform  # noqa: E402
from lt_bench.evaluation import gather_in_order, predict_shard  # noqa: E402
from lt_bench.models import build_model  # noqa: E402


def measure(root: Path, device_name: str, repeats: int, batch: int, workers: int) -> dict:
    """Run in every process (rank 0 alone, or each torchrun rank)."""
    ctx = distributed.setup(device_name)
    _, test_base, _ = load_cifar_pickles("cifar10", root, download=False, verify_md5=False)
    test = SubsetView(test_base, range(len(test_base)), test_base.targets, cifar_transform(False))
    torch.manual_seed(0)
    model = build_model("resnet32", 10).to(ctx.device).eval()
    rates, gathers = [], []
    for _ in range(repeats):
        ctx.barrier()
        start = time.perf_counter()
        outputs, labels, indices = predict_shard(model, test, ctx, batch_size=batch, num_workers=workers)
        gather_start = time.perf_counter()
        logits, _ = gather_in_order(ctx, outputs, labels, indices)
        end = time.perf_counter()
        assert logits.shape[0] == len(test)            # every image exactly once
        rates.append(len(test) / (end - start))
        gathers.append(end - gather_start)
    result = {"world_size": ctx.world_size, "images_per_s": statistics.median(rates),
              "gather_seconds": statistics.median(gathers), "images": len(test)}
    distributed.teardown(ctx)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--worker-root", type=Path, help=argparse.SUPPRESS)   # internal: a torchrun rank
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_root:
        result = measure(args.worker_root, args.device, args.repeats, args.batch, args.workers)
        if int(os.environ.get("RANK", "0")) == 0:
            args.worker_out.write_text(json.dumps(result))
        return

    with tempfile.TemporaryDirectory(prefix="lt_bench_eval_") as tmp:
        tmp = Path(tmp)
        write_cifar(tmp, "cifar10", train_per_class=1, test_per_class=1000)
        single = measure(tmp, args.device, args.repeats, args.batch, args.workers)
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        f"--nproc_per_node={args.nproc}", __file__, "--worker-root", str(tmp),
                        "--worker-out", str(tmp / "ddp.json"), "--device", args.device,
                        "--repeats", str(args.repeats), "--batch", str(args.batch), "--workers", str(args.workers)],
                       check=True)
        ddp = json.loads((tmp / "ddp.json").read_text())
    print(f"\nevaluation of ResNet-32 on {single['images']} CIFAR-sized images, batch {args.batch}, "
          f"device {args.device}; medians of {args.repeats}")
    print(f"{'setting':<24}{'images/s':>10}{'gather s':>10}")
    print(f"{'1 process':<24}{single['images_per_s']:>10.1f}{'-':>10}")
    ddp_label = f"DDP, {ddp['world_size']} ranks (exact)"
    print(f"{ddp_label:<24}{ddp['images_per_s']:>10.1f}{ddp['gather_seconds']:>10.3f}")
    print(f"DDP / single: {ddp['images_per_s'] / single['images_per_s']:.2f}x; the gather is "
          f"{100 * ddp['gather_seconds'] * ddp['images_per_s'] / ddp['images']:.1f}% of the DDP evaluation")


if __name__ == "__main__":
    main()
