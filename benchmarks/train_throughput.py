"""Stage-1 training throughput: our loop (lt_bench.stages.fit) against a peer's, alternating in
one process.

    python benchmarks/train_throughput.py --peer --repeats 3     # against LDAM-DRW's loop shape
    python benchmarks/train_throughput.py                         # against a minimal plain loop
    python benchmarks/train_throughput.py --device cuda --amp bf16 --channels-last --workers 8

Each measurement is one epoch over 12,406 images (CIFAR-10-LT at imbalance 100: the real
construction over synthetic CIFAR pickles, random crop + flip (+ AutoAugment unless
--no-autoaugment), batch 128).  Reports images/s of both loops (medians over --repeats
alternating pairs), the ratio, and where our loop's time goes (waiting for data vs the rest,
and a profiler's top operators).

``--peer`` is the loop of LDAM-DRW's ``cifar_train.py`` and classifier-balancing's ``run_networks``
written out (not imported): the long-tailed CIFAR subset as a uint8 array in memory
(torchvision's CIFAR dataset shape: ``Image.fromarray`` then torchvision's v1 transforms),
``DataLoader(shuffle=True)``, forward, cross-entropy, top-1/top-5 and ``loss.item()`` per
step into running averages, backward, SGD step.  Our loop runs as ``run.py`` would: its
dataset (the v2 transforms), sampler, schedule, NaN check, checkpoint, logs, SIGTERM hook.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from lt_bench.activations import build_activation  # noqa: E402
from lt_bench.compose import setup_hydra  # noqa: E402
from lt_bench.data import build_data  # noqa: E402
from lt_bench.data.synthetic import write_cifar  # noqa: E402
from lt_bench.distributed import DistContext, resolve_device  # noqa: E402
from lt_bench.models import build_model  # noqa: E402
from lt_bench.stages.loop import StageJob, TrainOptions, fit  # noqa: E402
from lt_bench.stages.precision import amp_dtype  # noqa: E402
from lt_bench.registries import AMP_MODES  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def plain_epoch(model, dataset, args, device) -> float:
    """The reference: the loop a PyTorch tutorial would write.  Returns images/s."""
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda", drop_last=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    amp = amp_dtype(args.amp)
    model.train()
    start, seen = time.perf_counter(), 0
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += labels.numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


class PeerCIFAR(Dataset):
    """LDAM-DRW's IMBALANCECIFAR10: torchvision's CIFAR10 (uint8 HWC array in memory) reduced to
    the long-tailed indices; ``__getitem__`` as torchvision's: ``Image.fromarray``, transform."""

    def __init__(self, folder: Path, indices, transform):
        import pickle
        data, labels = [], []
        for name in [f"data_batch_{i}" for i in range(1, 6)]:
            with open(folder / "cifar-10-batches-py" / name, "rb") as f:
                entry = pickle.load(f, encoding="latin1")           # our own synthetic file
            data.append(entry["data"])
            labels.extend(entry["labels"])
        data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.data = data[np.asarray(indices)]
        self.targets = [labels[i] for i in indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index):
        from PIL import Image
        img, target = Image.fromarray(self.data[index]), self.targets[index]
        return self.transform(img), target


def peer_transform(autoaugment: bool):
    """LDAM-DRW's CIFAR training transform (torchvision v1); AutoAugment where ours has it."""
    from torchvision import transforms
    steps = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    if autoaugment:
        steps.append(transforms.AutoAugment(transforms.AutoAugmentPolicy.CIFAR10))
    return transforms.Compose(steps + [transforms.ToTensor(),
                                       transforms.Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))])


def peer_epoch(model, dataset, args, device) -> float:
    """LDAM-DRW's ``train()`` for one epoch (its meters, per-step .item() and accuracy included,
    printing every 10 steps replaced by nothing).  Returns images/s."""
    loader = DataLoader(dataset, batch_size=args.batch, shuffle=True, num_workers=args.workers,
                        pin_memory=True if device.type == "cuda" else False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=2e-4)
    criterion = torch.nn.CrossEntropyLoss().to(device)
    amp = amp_dtype(args.amp)
    model.train()
    losses, top1, top5, seen = 0.0, 0.0, 0.0, 0
    start = time.perf_counter()
    for inputs, target in loader:
        inputs, target = inputs.to(device, non_blocking=True), target.to(device, non_blocking=True)
        if args.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            output = model(inputs)
        loss = criterion(output.float(), target)
        _, pred = output.topk(5, 1, True, True)
        correct = pred.t().eq(target.view(1, -1).expand_as(pred.t()))
        n = inputs.size(0)
        losses += loss.item() * n
        top1 += correct[:1].reshape(-1).float().sum(0).item()
        top5 += correct[:5].reshape(-1).float().sum(0).item()
        seen += n
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def our_epoch(model, dataset, recipe, args, device, out: Path, repeat: int) -> tuple[float, float]:
    """One epoch of the real loop (checkpoint, logs and all).  Returns (images/s, data-wait share)."""
    opts = TrainOptions(seed=repeat, amp=args.amp, channels_last=args.channels_last, num_workers=args.workers)
    job = StageJob(name="stage1", index=1, model=model, trainable=model, dataset=dataset,
                   loss_fn=build_activation("softmax").loss, recipe=recipe,
                   checkpoint_path=out / f"ckpt_{repeat}.pt", log_dir=out / f"tb_{repeat}",
                   train_mode=model.train)
    start = time.perf_counter()
    progress = fit(job, DistContext(device=device), opts)
    seconds = time.perf_counter() - start       # the whole epoch, checkpoint included
    stats = progress["history"][0]
    return stats["items"] / seconds, stats["data_seconds"] / stats["seconds"]


def profile_ours(model, dataset, recipe, args, device, out: Path, steps: int = 30) -> str:
    from torch.profiler import ProfilerActivity, profile
    subset = torch.utils.data.Subset(dataset, range(steps * args.batch))
    subset.targets = [dataset.targets[i] for i in range(steps * args.batch)]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        our_epoch(model, subset, recipe, args, device, out / "profile", 0)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    return prof.key_averages().table(sort_by=sort, row_limit=12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="none", choices=AMP_MODES.names())
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also print a profiler table of our loop")
    parser.add_argument("--peer", action="store_true", help="the other loop is LDAM-DRW's (else a plain loop)")
    parser.add_argument("--no-autoaugment", action="store_true")
    args = parser.parse_args()
    device = resolve_device(args.device)
    setup_hydra()
    with tempfile.TemporaryDirectory(prefix="lt_bench_train_") as tmp:
        tmp = Path(tmp)
        write_cifar(tmp / "cifar", "cifar10", train_per_class=5000, test_per_class=1)
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose("config", overrides=[
                "task=cifar10lt", "imbalance=100", f"data.root={tmp / 'cifar'}", "data.verify_md5=false",
                f"stage1.batch_size={args.batch}", "stage1.epochs=1", "stage1.warmup_epochs=0", "progress=false",
                f"data.autoaugment={not args.no_autoaugment}"])
        dataset = build_data(cfg).train
        other_name = "peer" if args.peer else "plain"
        other_data = (PeerCIFAR(tmp / "cifar", dataset.indices, peer_transform(not args.no_autoaugment))
                      if args.peer else dataset)
        if args.peer:
            assert other_data.targets == dataset.targets            # the same long-tailed subset
        ours, plain, waits = [], [], []
        for repeat in range(args.repeats):
            torch.manual_seed(repeat)
            model = build_model("resnet32", 10).to(device)
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            rate, wait = our_epoch(model, dataset, cfg.stage1, args, device, tmp, repeat)
            ours.append(rate)
            waits.append(wait)
            torch.manual_seed(repeat)
            model = build_model("resnet32", 10).to(device)
            if args.channels_last:
                model = model.to(memory_format=torch.channels_last)
            plain.append(peer_epoch(model, other_data, args, device) if args.peer
                         else plain_epoch(model, dataset, args, device))
            print(f"  pair {repeat + 1}: ours {ours[-1]:.1f} img/s (data wait {100 * wait:.0f}%), "
                  f"{other_name} {plain[-1]:.1f} img/s", flush=True)
        profile = profile_ours(build_model("resnet32", 10).to(device), dataset, cfg.stage1, args, device, tmp) \
            if args.profile else None

    o, p = statistics.median(ours), statistics.median(plain)
    print(f"\nstage-1 training, ResNet-32, {len(dataset)} images/epoch, batch {args.batch}, {args.workers} workers, "
          f"device {device}, amp {args.amp}, channels_last {args.channels_last}; medians of {args.repeats}")
    print(f"{'loop':<8}{'images/s':>10}")
    print(f"{'ours':<8}{o:>10.1f}\n{other_name:<8}{p:>10.1f}")
    print(f"pairs (ours/{other_name}): {', '.join(f'{a / b:.3f}' for a, b in zip(ours, plain))}")
    print(f"ours / {other_name}: {o / p:.3f} (cost of our loop: {100 * (p / o - 1):+.1f}%); "
          f"our loop waited for data {100 * statistics.median(waits):.0f}% of the epoch")
    if profile:
        print("\nprofile of our loop (30 steps):\n" + profile)


if __name__ == "__main__":
    main()
