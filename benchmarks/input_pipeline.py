"""The ImageNet-LT training input pipeline per CPU core: images/s of one process on one core
(decode a JPEG, RandomResizedCrop 224, flip, AutoAugment (ImageNet policy), to a float tensor,
normalise) for each ``data.decoder``, and NVIDIA DALI's CPU pipeline where it is installed.

    python benchmarks/input_pipeline.py                       # 300 generated JPEGs, 3 alternating rounds
    python benchmarks/input_pipeline.py --images 600 --rounds 5 --no-autoaugment

Images: ``lt_bench.data.synthetic.write_imagenet_like`` (ImageNet's size mix: mostly 500 px on the
long side, the rest 150-1,200 px; about 85 KB per file), generated once into --data.  Each
backend runs in its own child process pinned to one core (``os.sched_setaffinity``) with one
torch thread, the backends alternating round by round; a round is one pass over the images
after one warm-up image.  Reported: images/s per core (median of the rounds) and the cores one
GPU needs at --target images/s (2,500: NVIDIA DeepLearningExamples' A100 AMP ResNet-50 rate).
The DataLoader's own overhead (worker IPC of 3x224x224 float tensors, collation) is excluded:
this is the per-image work a worker does.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BACKENDS = ("pil", "torchvision", "dali-cpu")


def child(backend: str, data: Path, autoaugment: bool) -> dict:
    """One pass over the images in this process (pinned to one core by the parent)."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    torch.set_num_threads(1)
    splits, images = data / "splits", data / "images"
    paths = [images / line.split()[0] for line in (splits / "Sized_LT_train.txt").read_text().splitlines()]
    if backend == "dali-cpu":
        return _dali(paths, autoaugment)
    from lt_bench.data.decoders import image_decoder
    from lt_bench.data.transforms import build_transform
    decode = image_decoder(backend)
    transform = build_transform("imagenet", True, autoaugment=autoaugment)
    torch.manual_seed(0)
    transform(decode(paths[0]))                     # warm-up (lazy imports, first allocations)
    start = time.perf_counter()
    for path in paths:
        out = transform(decode(path))
    seconds = time.perf_counter() - start
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    return {"images": len(paths), "seconds": seconds}


def _dali(paths: list[Path], autoaugment: bool) -> dict:
    """DALI's CPU pipeline with the same steps: decode, random_resized_crop, flip, AutoAugment
    (DALI's ImageNet policy), crop_mirror_normalize to float CHW; one thread, batch 32."""
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.auto_aug import auto_augment

    batch = 32

    @pipeline_def(batch_size=batch, num_threads=1, device_id=None, seed=0, enable_conditionals=autoaugment)
    def pipe():
        jpegs, labels = fn.readers.file(files=[str(p) for p in paths], labels=[0] * len(paths), name="reader")
        images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
        images = fn.random_resized_crop(images, size=(224, 224))
        images = fn.flip(images, horizontal=fn.random.coin_flip())
        if autoaugment:
            images = auto_augment.auto_augment_image_net(images, shape=(224, 224))
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT, output_layout="CHW",
                                          mean=[0.485 * 255, 0.456 * 255, 0.406 * 255],
                                          std=[0.229 * 255, 0.224 * 255, 0.225 * 255])
        return images, labels

    p = pipe()
    p.build()
    steps = max(1, len(paths) // batch)
    p.run()                                         # warm-up batch
    start = time.perf_counter()
    for _ in range(steps):
        out, _ = p.run()
    seconds = time.perf_counter() - start
    return {"images": steps * batch, "seconds": seconds}


def run_child(backend: str, data: Path, autoaugment: bool, core: int) -> dict | str:
    code = (f"import os, json, sys; os.sched_setaffinity(0, {{{core}}}); sys.path.insert(0, {str(REPO)!r}); "
            f"from benchmarks.input_pipeline import child; from pathlib import Path; "
            f"print(json.dumps(child({backend!r}, Path({str(data)!r}), {autoaugment!r})))")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", default="/tmp/lt_bench_input_pipeline")
    parser.add_argument("--core", type=int, default=0, help="the core every child is pinned to")
    parser.add_argument("--target", type=float, default=2500.0, help="images/s one GPU trains at")
    parser.add_argument("--backends", nargs="*", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--no-autoaugment", action="store_true")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    data = Path(args.data) / f"n{args.images}"
    if not (data / "splits" / "Sized_LT_train.txt").is_file():
        from lt_bench.data.synthetic import write_imagenet_like
        print(f"generating {args.images} ImageNet-sized JPEGs into {data} ...", flush=True)
        write_imagenet_like(data, args.images)
    files = list((data / "images").rglob("*.JPEG"))
    mean_kb = sum(f.stat().st_size for f in files) / len(files) / 1e3
    autoaugment = not args.no_autoaugment
    rates: dict[str, list[float]] = {b: [] for b in args.backends}
    failed: dict[str, str] = {}
    for r in range(args.rounds):
        for backend in args.backends:
            if backend in failed:
                continue
            result = run_child(backend, data, autoaugment, args.core)
            if isinstance(result, str):
                failed[backend] = result
                print(f"  round {r + 1}: {backend}: not run ({result})", flush=True)
                continue
            rates[backend].append(result["images"] / result["seconds"])
            print(f"  round {r + 1}: {backend}: {rates[backend][-1]:.1f} images/s on one core", flush=True)
    rows = {b: statistics.median(v) for b, v in rates.items() if v}
    base = rows.get("pil")
    print(f"\n{len(files)} JPEGs (mean {mean_kb:.0f} KB), RandomResizedCrop 224 + flip"
          f"{' + AutoAugment' if autoaugment else ''} + normalise; one core, one thread; medians of {args.rounds}")
    print("| backend | images/s per core | rounds | vs pil | cores for %d images/s |" % args.target)
    print("| --- | ---: | --- | ---: | ---: |")
    for backend, rate in rows.items():
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(f"| {backend} | {rate:.1f} | {', '.join(f'{v:.1f}' for v in rates[backend])} | {ratio} | "
              f"{args.target / rate:.0f} |")
    for backend, why in failed.items():
        print(f"| {backend} | not run: {why} | | | |")
    if args.json:
        Path(args.json).write_text(json.dumps({"rates": rates, "medians": rows, "failed": failed,
                                               "images": len(files), "mean_kb": mean_kb,
                                               "autoaugment": autoaugment}, indent=1))


if __name__ == "__main__":
    main()
