"""``train.compile``: the shared training loop's steps with torch.compile against eager, in one run.

    python benchmarks/compile_speed.py                           # ResNet-32, batch 128, CPU
    python benchmarks/compile_speed.py --model resnet50 --size 224 --batch 64 --device cuda --amp bf16

Both run ``lt_bench.stages.loop.fit`` (the real loop: sampler, schedule, NaN check, checkpoint)
on the same in-memory random tensors (no input pipeline, so the model's own speed shows), one
epoch of --steps steps per measurement, eager and compiled alternating over --repeats pairs
after one compiled warm-up epoch whose time is the compilation cost.  Also reported: the
first epoch's losses of both (the suite's test checks their agreement on a small model).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

from lt_bench.distributed import DistContext, resolve_device  # noqa: E402
from lt_bench.models import build_model  # noqa: E402
from lt_bench.stages.loop import StageJob, TrainOptions, fit  # noqa: E402


def epoch(model, data, args, device, tmp: Path, compiled: bool, tag: str) -> tuple[float, float]:
    """One epoch of the real loop; (images/s, mean loss)."""
    recipe = OmegaConf.create({"epochs": 1, "batch_size": args.batch, "lr": 0.1, "momentum": 0.9,
                               "weight_decay": 2e-4, "schedule": "constant", "warmup_epochs": 0,
                               "milestones": [], "gamma": 0.1, "reference_epochs": 1, "nesterov": False})
    opts = TrainOptions(seed=0, amp=args.amp, channels_last=args.channels_last, compile=compiled,
                        compile_backend=args.backend)
    job = StageJob(name="stage1", index=1, model=model, trainable=model, dataset=data,
                   loss_fn=torch.nn.functional.cross_entropy, recipe=recipe,
                   checkpoint_path=tmp / f"{tag}.pt", log_dir=tmp / f"tb_{tag}", train_mode=model.train)
    start = time.perf_counter()
    progress = fit(job, DistContext(device=device), opts)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return progress["history"][0]["items"] / seconds, progress["history"][0]["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet32")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--backend", default="inductor")
    args = parser.parse_args()
    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    n = args.batch * args.steps
    images = torch.randn(n, 3, args.size, args.size, generator=g)
    labels = torch.randint(0, args.classes, (n,), generator=g)
    data = TensorDataset(images, labels)
    data.targets = labels.tolist()
    torch.manual_seed(0)
    init = build_model(args.model, args.classes).to(device)
    if args.channels_last:
        init = init.to(memory_format=torch.channels_last)
    state = {k: v.clone() for k, v in init.state_dict().items()}

    def fresh():
        init.load_state_dict(state)
        return init

    with tempfile.TemporaryDirectory(prefix="lt_bench_compile_") as tmp:
        tmp = Path(tmp)
        torch._dynamo.reset()
        start = time.perf_counter()
        warm_rate, compiled_loss = epoch(fresh(), data, args, device, tmp, True, "warm")
        warm_seconds = time.perf_counter() - start
        _, eager_loss = epoch(fresh(), data, args, device, tmp, False, "eager0")
        eager, compiled = [], []
        for r in range(args.repeats):
            eager.append(epoch(fresh(), data, args, device, tmp, False, f"e{r}")[0])
            compiled.append(epoch(fresh(), data, args, device, tmp, True, f"c{r}")[0])
            print(f"  pair {r + 1}: eager {eager[-1]:.1f} img/s, compiled {compiled[-1]:.1f} img/s "
                  f"({compiled[-1] / eager[-1]:.3f}x)", flush=True)
    e, c = statistics.median(eager), statistics.median(compiled)
    print(f"\n{args.model} at {args.size} px, batch {args.batch}, {args.steps} steps per epoch, device {device}, "
          f"amp {args.amp}, backend {args.backend}; medians of {args.repeats} alternating pairs")
    print("| loop | images/s | pairs |\n| --- | ---: | --- |")
    print(f"| eager | {e:.1f} | {', '.join(f'{v:.1f}' for v in eager)} |")
    print(f"| train.compile=true | {c:.1f} | {', '.join(f'{v:.1f}' for v in compiled)} |")
    print(f"| **compiled / eager** | **{c / e:.3f}x** | {', '.join(f'{a / b:.3f}' for a, b in zip(compiled, eager))} |")
    print(f"first compiled epoch (compilation included): {warm_seconds:.1f} s; "
          f"first-epoch mean loss eager {eager_loss:.6f}, compiled {compiled_loss:.6f} "
          f"(relative difference {abs(compiled_loss - eager_loss) / abs(eager_loss):.1e})")


if __name__ == "__main__":
    main()
