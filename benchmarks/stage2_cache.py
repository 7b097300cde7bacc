"""Stage 2 with and without the feature cache, on the same images.

    python benchmarks/stage2_cache.py                       # defaults below, a few minutes on 2 CPU cores
    python benchmarks/stage2_cache.py --model resnet50 --device cuda --images 20000 --epochs 10
    python benchmarks/stage2_cache.py --simulate-imagenet   # the cached classifier epochs at ImageNet-LT scale

Writes a synthetic ImageNet-LT-like tree of JPEGs (split files + images), a stage-1
checkpoint of a randomly initialised model, then runs `stage=2` uncached and cached
(alternating, --repeats times each) through the real pipeline and reports the median
wall time of stage 2 (feature caching included; evaluation excluded) and the ratio.

--simulate-imagenet measures what the cache leaves at ImageNet-LT scale: classifier epochs on
a memory-mapped [115,846 x 2,048] feature file with ImageNet-LT's long tail (1,000 classes),
through the real training loop, plus the backbone's forward throughput (ResNet-50, 224 px) on
this device, from which the one forward pass the cache costs (and every uncached epoch costs)
follows.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from hydra import compose, initialize_config_dir  # noqa: E402

from lt_bench.checkpoint import save_checkpoint  # noqa: E402
from lt_bench.compose import setup_hydra  # noqa: E402
from lt_bench.run_folder import config_hash  # noqa: E402
from lt_bench.data.long_tail import long_tail_counts  # noqa: E402
from lt_bench.data.synthetic import write_split_tree  # noqa: E402
from lt_bench.models import build_model  # noqa: E402
from lt_bench.pipeline import run_training  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200, help="training images (long-tailed over --classes)")
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224, help="crop size (source JPEGs are size * 1.25)")
    parser.add_argument("--epochs", type=int, default=5, help="stage-2 epochs")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--simulate-imagenet", action="store_true")
    args = parser.parse_args()
    if args.simulate_imagenet:
        return simulate_imagenet(args)

    # n_max chosen so that the long tail (imbalance 10) sums to about --images
    shape = long_tail_counts(10_000, args.classes, 10)
    counts = [max(1, round(c * args.images / sum(shape))) for c in shape]
    setup_hydra()
    with tempfile.TemporaryDirectory(prefix="lt_bench_stage2_") as tmp:
        tmp = Path(tmp)
        splits, images = write_split_tree(tmp / "tree", train_counts=counts, eval_per_class=2,
                                          size=int(args.size * 1.25))
        overrides = [
            "task=imagenetlt", f"model={args.model}" if (REPO / f"configs/model/{args.model}.yaml").exists()
            else f"model.name={args.model}", f"task.num_classes={args.classes}",
            *(f"task.split_files.{s}=Synthetic_LT_{s}.txt" for s in ("train", "val", "test")),
            f"data.splits_dir={splits}", f"data.root={images}", f"data.image_size={args.size}",
            f"data.resize={int(args.size * 256 / 224)}", f"data.num_workers={args.workers}",
            f"device={args.device}", "progress=false", "stage=2", f"stage2.epochs={args.epochs}",
            f"stage2.batch_size={args.batch}", "stage1.epochs=1",
        ]
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose("config", overrides=overrides + [f"stage1.checkpoint={tmp / 'stage1.pt'}"])
            model = build_model(cfg.model.name, args.classes)
            save_checkpoint(tmp / "stage1.pt", {
                "model": model.state_dict(), "num_classes": args.classes, "model_name": cfg.model.name,
                "task": cfg.task.name, "config_hash": config_hash(cfg), "progress": {"complete": True}})
            times = {"uncached": [], "cached": []}
            for repeat in range(args.repeats):
                for mode in times:
                    run_cfg = compose("config", overrides=overrides + [
                        f"stage1.checkpoint={tmp / 'stage1.pt'}", f"out_dir={tmp / f'{mode}_{repeat}'}",
                        f"stage2.cache_features={'true' if mode == 'cached' else 'false'}"])
                    record = run_training(run_cfg)[0]
                    times[mode].append(record["stage_seconds"])
                    print(f"  {mode:<9} run {repeat + 1}: stage 2 {record['stage_seconds']:.1f} s", flush=True)

    medians = {mode: statistics.median(t) for mode, t in times.items()}
    n = sum(counts)
    print(f"\nstage 2, {args.epochs} epochs, {n} training images ({args.classes} classes, {args.size}px), "
          f"{args.model}, device {args.device}, medians of {args.repeats}")
    print(f"{'mode':<10}{'seconds':>10}{'images/s':>12}")
    for mode, seconds in medians.items():
        print(f"{mode:<10}{seconds:>10.1f}{n * args.epochs / seconds:>12.1f}")
    print(f"speed-up (uncached / cached): {medians['uncached'] / medians['cached']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "images": n,
                                         "seconds": times, "medians": medians}, indent=2))


def simulate_imagenet(args, rows: int = 115_846, dim: int = 2048, classes: int = 1000) -> None:
    import time

    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from lt_bench.activations import build_activation
    from lt_bench.distributed import DistContext, resolve_device
    from lt_bench.stages.feature_cache import MemmapFeatures
    from lt_bench.stages.loop import StageJob, TrainOptions, fit

    device = resolve_device(args.device)
    counts = long_tail_counts(1280, classes, 256)                     # 1,280 -> 5 per class
    labels = np.repeat(np.arange(classes), counts)[:rows]
    with tempfile.TemporaryDirectory(prefix="lt_bench_imagenet_") as tmp:
        tmp = Path(tmp)
        features = np.lib.format.open_memmap(tmp / "f.npy", mode="w+", dtype=np.float32, shape=(len(labels), dim))
        for start in range(0, len(labels), 8192):                    # ReLU'd-pool-like features
            features[start:start + 8192] = np.abs(np.random.default_rng(start).normal(size=(min(8192, len(labels) - start), dim)))
        features.flush()
        dataset = MemmapFeatures(tmp / "f.npy", labels.tolist())
        classifier = torch.nn.Linear(dim, classes).to(device)
        recipe = OmegaConf.create({"epochs": args.epochs, "batch_size": 256, "lr": 1e-5, "momentum": 0.9,
                                   "weight_decay": 5e-4, "schedule": "constant", "warmup_epochs": 0,
                                   "milestones": [], "gamma": 0.1})
        job = StageJob(name="stage2", index=2, model=classifier, trainable=classifier, dataset=dataset,
                       loss_fn=build_activation("gumbel").loss, recipe=recipe, checkpoint_path=tmp / "c.pt",
                       log_dir=tmp / "tb", train_mode=classifier.train)
        start = time.perf_counter()
        progress = fit(job, DistContext(device=device), TrainOptions(seed=0, num_workers=args.workers))
        seconds = time.perf_counter() - start
    per_epoch = [h["seconds"] for h in progress["history"]]

    backbone = build_model("resnet50", classes).backbone.to(device).eval()
    batch = torch.randn(32, 3, 224, 224, device=device)
    with torch.no_grad():
        backbone(batch)
        start = time.perf_counter()
        for _ in range(3):
            backbone(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
    forward_rate = 3 * 32 / (time.perf_counter() - start)
    forward_pass = rows / forward_rate
    print(f"\nstage 2 at ImageNet-LT scale ({rows:,} x {dim} features, {classes} classes), device {device}")
    print(f"classifier epochs on cached features: {statistics.median(per_epoch):.1f} s each (median of "
          f"{len(per_epoch)}), {seconds:.1f} s for {args.epochs} epochs with checkpoints")
    print(f"ResNet-50 forward at 224 px: {forward_rate:.1f} images/s -> one pass over {rows:,} images "
          f"{forward_pass / 60:.1f} min (the cache's one-time cost; every uncached epoch costs at least this)")
    print(f"{args.epochs} epochs: uncached >= {args.epochs * forward_pass / 60:.1f} min, cached "
          f"{(forward_pass + seconds) / 60:.1f} min -> >= {args.epochs * forward_pass / (forward_pass + seconds):.1f}x")


if __name__ == "__main__":
    main()
