"""The GPU check: one prepared script that runs lt_bench's CUDA paths and measures them, for the
few minutes a GPU is lent (at most 8 minutes on one GPU with the default --budget-s 480).

    python benchmarks/gpu_check.py                        # on a GPU machine: the full check, <= 8 min
    python benchmarks/gpu_check.py --dry-run              # on CPU, tiny sizes: the script itself works (1.5-2 min)
    python benchmarks/gpu_check.py --steps ddp,stage2_cache --out DIR   # only some steps (a re-run)

Steps (each in its own forked process with a hard time cap, so that a failing, hanging or
crashing step, or a CUDA error that poisons its context, is recorded with its error and the
others still run; the results of a step are saved as they are measured, so a step stopped at
its cap keeps what it had):

1. environment           versions (torch, torchvision, timm, CUDA, cuDNN, NCCL, driver), GPUs, CPU cores
2. amp_correctness       (a) same batch, same weights: loss under autocast on the device against the CPU
                         float32 loss, for stage 1 (softmax CE, ResNet-32, channels_last) and stage 2
                         (Gumbel, gradient=exact and authors); the classifier gradient's cosine and norm.
                         (b) a short real run (run.py task=cifar100lt on synthetic pickles, both stages,
                         train.amp=bf16 / fp16, train.channels_last=true): every record number finite
3. gumbel_autocast       the Gumbel loss under autocast equals the float32 closed form, loss and gradient,
                         at logits up to +-100 (no NaN; the exact loss overflows to inf where float32 does)
4. ddp                   torchrun with 2 processes (NCCL on 2+ GPUs; gloo on CPU in the dry run), then
                         `lt-bench eval` of each checkpoint in one process: the same top-1, class by class
5. throughput_synthetic  ResNet-50 at 224 px, bf16 autocast + channels_last: training images/s (eager, with
                         cudnn.benchmark off and on, and torch.compile) and inference images/s, synthetic tensors
6. throughput_pipeline   the ImageNet-LT input pipeline (split file, the real builder, RandomResizedCrop +
                         flip + AutoAugment) over generated JPEGs of ImageNet's sizes: loader images/s per
                         data.decoder, ResNet-50 training images/s through it, share of step time waiting
7. stage2_cache          the cached stage 2 at ImageNet-LT shape: a memory-mapped [115,846 x 2,048] float32
                         feature file, classifier epochs (Gumbel loss) through lt_bench.stages.loop.fit

Writes <out>/gpu_check_<UTC time>.json and .md (a dry run: gpu_check_dry-run_<UTC time>.*), after
every step, so an interrupted check keeps the steps it finished; existing files are never
replaced (a name that exists is refused unless --force).  Ctrl-C or SIGTERM stops the running
step (and everything it started) and writes what was measured.  Exit status 0 when no step
failed or timed out (skipped steps, e.g. ddp on one GPU, state their reason), 1 otherwise, 2 on
bad usage, 130 when interrupted.
The dry run's numbers are CPU numbers at tiny sizes: they show that the script works, they
are not benchmark figures.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu_check"
SCRIPT = "benchmarks/gpu_check.py"
SCHEMA = 1

# ---------------------------------------------------------------------------------------------
# Tolerances, stated once: the JSON and the Markdown table carry them.
# ---------------------------------------------------------------------------------------------
# Loss under autocast against the CPU float32 loss, same batch and weights.  bf16 keeps 8
# significand bits (unit roundoff 2^-9 = 2.0e-3 per rounding); every conv/linear input and output
# of the 32-layer ResNet is rounded, BatchNorm renormalises, and a mean log-loss inherits the
# logits' relative error: ~1e-3 is expected (CPU bf16 autocast, ResNet-32, 3 seeds: 2e-5..8e-4).
# 1e-2 is ~10x that, and a loss off by more (a missing mean, a scale, an overflow, a loss taken in
# low precision on large logits) is refused.  fp16 keeps 11 bits (8x finer): 2e-3.
LOSS_RTOL = {"bf16": 1e-2, "fp16": 2e-3}
# The classifier's weight gradient: the direction (cosine similarity, >= 0.99: an angle of at most
# 8 degrees; measured >= 0.99998 with bf16 on CPU, while a gradient for other labels gives 0.80 to
# 0.98) and the norm (|g_amp| / |g_fp32| - 1 within 3e-2 bf16, 5e-3 fp16; measured <= 2.4e-3
# with bf16; a GradScaler's scale left on the gradient is off by 65536x).
GRAD_COSINE_MIN = 0.99
GRAD_NORM_RTOL = {"bf16": 3e-2, "fp16": 5e-3}
# The Gumbel loss is computed in float32 with autocast off, so under autocast it must equal the
# float32 closed form of the same (low-precision) logits up to float32 rounding of exp/log/expm1
# (a few ulps): relative 1e-5, absolute 1e-30 (below that a value is 0 for this purpose).
GUMBEL_LOSS_RTOL, GUMBEL_ATOL = 1e-5, 1e-30
# Its gradient flows back into the low-precision logits, so it is compared with the float32
# closed form rounded to that dtype, allowing one ulp of the dtype (a float32 value a few ulps
# from a rounding boundary can round either way): bf16 2^-7, fp16 2^-10 relative.
GUMBEL_GRAD_RTOL = {"bf16": 2.0 ** -7, "fp16": 2.0 ** -10}

TOLERANCES = {
    "loss_rtol_bf16": {"value": LOSS_RTOL["bf16"], "applies_to": "amp_correctness (a): |loss_amp - loss_fp32_cpu| "
                       "/ |loss_fp32_cpu|, bf16", "why": "8 significand bits; ~1e-3 expected (CPU bf16: <= 8e-4), "
                       "10x margin"},
    "loss_rtol_fp16": {"value": LOSS_RTOL["fp16"], "applies_to": "amp_correctness (a), fp16",
                       "why": "11 significand bits: 8x finer than bf16"},
    "grad_cosine_min": {"value": GRAD_COSINE_MIN, "applies_to": "amp_correctness (a): cosine similarity of the "
                        "classifier's weight gradient, device under autocast vs CPU float32",
                        "why": "at most an 8 degree angle; measured >= 0.99998 (CPU bf16), other labels give "
                               "0.80-0.98"},
    "grad_norm_rtol_bf16": {"value": GRAD_NORM_RTOL["bf16"], "applies_to": "amp_correctness (a): | |g_amp| / "
                            "|g_fp32| - 1 |, bf16", "why": "measured <= 2.4e-3 (CPU bf16); catches an unscaled "
                            "or doubly scaled gradient"},
    "grad_norm_rtol_fp16": {"value": GRAD_NORM_RTOL["fp16"], "applies_to": "amp_correctness (a), fp16 (after the "
                            "GradScaler's unscale_)", "why": "8x finer than bf16"},
    "gumbel_loss_rtol": {"value": GUMBEL_LOSS_RTOL, "applies_to": "gumbel_autocast: loss vs the float32 closed "
                         "form", "why": "the loss is float32 under autocast: only exp/log ulps differ"},
    "gumbel_grad_rtol_bf16": {"value": GUMBEL_GRAD_RTOL["bf16"], "applies_to": "gumbel_autocast: gradient vs "
                              "the float32 closed form rounded to bf16", "why": "one bf16 ulp"},
    "gumbel_grad_rtol_fp16": {"value": GUMBEL_GRAD_RTOL["fp16"], "applies_to": "gumbel_autocast, fp16",
                              "why": "one fp16 ulp"},
    "ddp_top1": {"value": 0.0, "applies_to": "ddp: test top-1 and per-class top-1 of the 2-process run vs one "
                 "process evaluating the same checkpoint", "why": "exact evaluation counts each image once"},
}


# ---------------------------------------------------------------------------------------------
# Sizes: the full check on a GPU, and the dry run (tiny, on CPU)
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    amp_batch: int                 # amp_correctness (a): CIFAR-sized images per batch
    run_train_per_class: int       # run.py on synthetic CIFAR-100 pickles (amp_correctness (b), ddp)
    run_test_per_class: int
    run_imbalance: int
    run_epochs: int
    run_batch: int
    run_workers: int
    synth_size: int                # throughput_synthetic: ResNet-50 input size
    synth_batch: int
    synth_warmup: int
    synth_steps: int
    compile_warmup: int            # steps before timing the compiled model (the first compiles)
    pipe_images: int               # throughput_pipeline: generated JPEGs
    pipe_scale: float              # their sides relative to ImageNet's size mix
    pipe_crop: int
    pipe_classes: int
    pipe_batch: int
    pipe_warmup: int
    pipe_steps: int
    cache_rows: int                # stage2_cache: the feature file
    cache_dim: int
    cache_classes: int
    cache_batch: int
    cache_epochs: int
    caps: dict = field(default_factory=dict)     # time cap per step, seconds


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:      # not on Linux
        return os.cpu_count() or 1


FULL = Sizes(amp_batch=128, run_train_per_class=50, run_test_per_class=10, run_imbalance=10, run_epochs=2,
             run_batch=128, run_workers=min(8, _cores()), synth_size=224, synth_batch=256, synth_warmup=8,
             synth_steps=30, compile_warmup=3, pipe_images=384, pipe_scale=1.0, pipe_crop=224, pipe_classes=100,
             pipe_batch=128, pipe_warmup=3, pipe_steps=20, cache_rows=115_846, cache_dim=2048, cache_classes=1000,
             cache_batch=256, cache_epochs=2,
             caps={"environment": 60, "amp_correctness": 180, "gumbel_autocast": 60, "ddp": 180,
                   "throughput_synthetic": 210, "throughput_pipeline": 150, "stage2_cache": 150})
DRY = Sizes(amp_batch=8, run_train_per_class=5, run_test_per_class=1, run_imbalance=5, run_epochs=1, run_batch=32,
            run_workers=0, synth_size=32, synth_batch=2, synth_warmup=1, synth_steps=2, compile_warmup=1,
            pipe_images=8, pipe_scale=0.16, pipe_crop=32, pipe_classes=4, pipe_batch=2, pipe_warmup=1, pipe_steps=3,
            cache_rows=1000, cache_dim=64, cache_classes=10, cache_batch=64, cache_epochs=1,
            caps={"environment": 60, "amp_correctness": 150, "gumbel_autocast": 60, "ddp": 180,
                  "throughput_synthetic": 120, "throughput_pipeline": 90, "stage2_cache": 60})
MIN_STEP_S = 10.0          # a step is not started with less than this left of the budget
SUBPROCESS_MARGIN_S = 5.0  # a run a step starts ends this long before the step's cap (to record it)


# ---------------------------------------------------------------------------------------------
# Pure helpers (unit-tested)
# ---------------------------------------------------------------------------------------------
def relative_difference(value: float, reference: float) -> float:
    """|value - reference| / |reference|; inf when either is not finite (a NaN or inf loss is
    never close to anything)."""
    if not (math.isfinite(value) and math.isfinite(reference)):
        return math.inf
    return abs(value - reference) / max(abs(reference), 1e-30)


def within_rtol(value: float, reference: float, rtol: float) -> bool:
    return relative_difference(value, reference) <= rtol


def cosine_similarity(a, b) -> float:
    """Cosine of two tensors' angle (flattened, float64); NaN when either is not finite or zero."""
    import torch
    a, b = a.detach().double().flatten().cpu(), b.detach().double().flatten().cpu()
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return math.nan
    norm = float(a.norm() * b.norm())
    return float(a @ b) / norm if norm > 0 else math.nan


def tensor_mismatch(actual, expected, rtol: float, atol: float = GUMBEL_ATOL) -> dict:
    """Elementwise comparison of ``actual`` with ``expected``: a NaN in either, or an inf where
    the other is not the same inf, is a mismatch; finite values must satisfy
    |a - e| <= atol + rtol |e|.  Returns counts, the worst relative error and the first few
    mismatches."""
    import torch
    a, e = actual.detach().double().cpu().flatten(), expected.detach().double().cpu().flatten()
    nan = torch.isnan(a) | torch.isnan(e)
    inf_ok = torch.isinf(a) & torch.isinf(e) & (torch.sign(a) == torch.sign(e))
    finite = torch.isfinite(a) & torch.isfinite(e)
    close = torch.zeros_like(a, dtype=torch.bool)
    close[finite] = (a[finite] - e[finite]).abs() <= atol + rtol * e[finite].abs()
    bad = nan | ~(close | inf_ok)
    rel = torch.zeros_like(a)
    rel[finite] = (a[finite] - e[finite]).abs() / e[finite].abs().clamp_min(atol)
    where = torch.nonzero(bad).flatten()[:5].tolist()
    return {"mismatches": int(bad.sum()), "nan": int(torch.isnan(a).sum()), "values": a.numel(),
            "max_rel_error": float(rel[finite & (e.abs() > atol)].max()) if bool((finite & (e.abs() > atol)).any())
            else 0.0, "first": [{"index": i, "actual": float(a[i]), "expected": float(e[i])} for i in where]}


def nonfinite_numbers(obj: Any, path: str = "") -> list[str]:
    """Paths of every NaN or infinite float in a JSON-like structure (records, metrics)."""
    if isinstance(obj, bool):
        return []
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [f"{path or '.'}={obj}"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in nonfinite_numbers(v, f"{path}.{k}" if path else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in nonfinite_numbers(v, f"{path}[{i}]")]
    return []


def budget_decision(elapsed: float, budget: float, cap: float,
                    min_step: float = MIN_STEP_S) -> tuple[float, str | None]:
    """(the time a step may take, or 0 with the reason it is skipped)."""
    left = budget - elapsed
    if left < min_step:
        return 0.0, (f"budget exhausted: {elapsed:.0f} s of --budget-s {budget:.0f} used, {max(left, 0):.0f} s left "
                     f"(a step needs at least {min_step:.0f} s)")
    return min(cap, left), None


def output_paths(out: Path, dry_run: bool, tag: str | None, now: datetime, force: bool) -> tuple[Path, Path]:
    """<out>/gpu_check[_dry-run][_tag]_<UTC time>.json and .md; refuses (FileExistsError) a name
    that exists unless ``force``."""
    stem = "_".join(["gpu_check", *(["dry-run"] if dry_run else []), *([tag] if tag else []),
                     now.strftime("%Y%m%dT%H%M%SZ")])
    paths = out / f"{stem}.json", out / f"{stem}.md"
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise FileExistsError(f"{', '.join(existing)} exists: refusing to replace a result (--force replaces it, "
                              "or wait a second for another time stamp)")
    return paths


# ---------------------------------------------------------------------------------------------
# A step's context: where it writes, how long it may take, what it found
# ---------------------------------------------------------------------------------------------
class Skip(Exception):
    """The step (or all of it that remains) cannot run here; the message says why."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a step: the step was stopped; ``result`` is what it had measured."""

    def __init__(self, result: dict):
        super().__init__(result.get("name"))
        self.result = result


@dataclass
class StepContext:
    name: str
    sizes: Sizes
    dry_run: bool
    device_arg: str                  # auto | cpu | cuda
    compile_backend: str
    deadline: float                  # time.time() by which the step must end
    workdir: Path                    # the step's scratch folder
    result_file: Path                # its partial results, saved as they are measured
    result: dict = field(default_factory=dict)

    def __post_init__(self):
        self.result = {"name": self.name, "status": "running", "seconds": 0.0, "metrics": {}, "checks": [],
                       "info": {}, "notes": [], "parts_skipped": {}}
        self._device = None

    # -- what the step found
    def log(self, message: str) -> None:
        print(f"  [{self.name}] {message}", flush=True)

    def metric(self, key: str, value: float, unit: str = "", label: str | None = None) -> None:
        """A measurement; a NaN or inf is kept as None with "nonfinite" saying which (JSON has no NaN)."""
        value = float(value)
        shown = {"value": value} if math.isfinite(value) else {"value": None, "nonfinite": str(value)}
        self.result["metrics"][key] = {**shown, "unit": unit, **({"label": label} if label else {})}
        self.save()

    def info(self, key: str, value: Any) -> None:
        self.result["info"][key] = value
        self.save()

    def note(self, text: str) -> None:
        self.result["notes"].append(text)
        self.save()

    def skip_part(self, part: str, reason: str) -> None:
        self.result["parts_skipped"][part] = reason
        self.log(f"{part}: skipped ({reason})")
        self.save()

    def check(self, name: str, ok: bool, value: Any, limit: Any, detail: str = "") -> bool:
        value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
        if isinstance(value, float) and not math.isfinite(value):
            value = str(value)                                # JSON has no NaN or inf
        self.result["checks"].append({"name": name, "ok": bool(ok), "value": value, "limit": limit,
                                      **({"detail": detail} if detail else {})})
        self.log(f"{'ok  ' if ok else 'FAIL'} {name}: {_short(value)} (limit {_short(limit)})"
                 f"{' - ' + detail if detail and not ok else ''}")
        self.save()
        return bool(ok)

    def save(self) -> None:
        tmp = self.result_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1, default=str))
        os.replace(tmp, self.result_file)

    # -- time and device
    def remaining(self) -> float:
        return self.deadline - time.time()

    def subprocess_timeout(self) -> float:
        """What a subprocess may take: the step's remaining time less a margin to record it."""
        left = self.remaining() - SUBPROCESS_MARGIN_S
        if left < SUBPROCESS_MARGIN_S:
            raise TimeoutError(f"{self.remaining():.0f} s left of the step's cap: not enough to start a run")
        return left

    @contextlib.contextmanager
    def part(self, name: str):
        """One part of a step: an error in it is recorded as a failed check of that name (with
        the error) and the step goes on with its next part."""
        try:
            yield
        except Skip as why:
            self.skip_part(name, str(why))
        except Exception as err:      # noqa: BLE001 - recorded; the step's other parts still run
            self.check(f"{name}: ran without error", False, f"{type(err).__name__}", "no error",
                       f"{type(err).__name__}: {err}"[-3000:])
            self.result.setdefault("part_tracebacks", {})[name] = traceback.format_exc()[-3000:]
            self.save()

    def register_session(self, pid: int) -> None:
        """A process started in a session of its own: killed with the step if the step is stopped."""
        with open(self.workdir / "pgids", "a") as pgids:
            pgids.write(f"{pid}\n")

    @property
    def device(self):
        if self._device is None:
            self._device = resolve_device(self.device_arg, self.dry_run)
        return self._device


def cudnn_version(number: int | None) -> str | None:
    """cuDNN's version number as text: 92400 -> 9.24.0 (cuDNN 9: major*10000 + minor*100 + patch),
    8902 -> 8.9.2 (cuDNN 8: major*1000 + minor*100 + patch)."""
    if number is None:
        return None
    if number >= 90000:
        return f"{number // 10000}.{number % 10000 // 100}.{number % 100}"
    return f"{number // 1000}.{number % 1000 // 100}.{number % 100}"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def resolve_device(device_arg: str, dry_run: bool):
    """auto: the dry run on CPU, the full check on CUDA (which must then exist)."""
    import torch
    name = device_arg if device_arg != "auto" else ("cpu" if dry_run else "cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise Skip("no CUDA device is visible (torch.cuda.is_available() is False); the full check needs a GPU, "
                   "--dry-run runs the tiny sizes on CPU")
    return torch.device(name)


def synchronize(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_command(ctx: StepContext, command: list[str], log_name: str, cwd: Path | None = None,
                env: dict | None = None) -> tuple[int, str]:
    """Run ``command`` in its own session (killed as a group on timeout), output into
    <workdir>/<log_name>.log; returns (exit status, the output's last 4,000 characters).
    Its process group is listed in <workdir>/pgids so that the parent kills it too if the
    step itself is stopped at its cap."""
    timeout = ctx.subprocess_timeout()
    log_path = ctx.workdir / f"{log_name}.log"
    ctx.log(f"$ {' '.join(command)}  (timeout {timeout:.0f} s, log {log_path})")
    environment = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})}
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(command, cwd=cwd or ctx.workdir, env=environment, stdout=log_file,
                                stderr=subprocess.STDOUT, start_new_session=True)
        ctx.register_session(proc.pid)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
            code = -signal.SIGKILL
            ctx.note(f"{log_name}: killed after {timeout:.0f} s (the step's cap)")
    tail = log_path.read_text(errors="replace")[-4000:]
    return code, tail


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------
# Step 1: environment
# ---------------------------------------------------------------------------------------------
def step_environment(ctx: StepContext) -> None:
    import numpy
    import PIL
    import timm
    import torch
    import torchvision

    import lt_bench
    from lt_bench.records import git_revision
    ctx.info("python", platform.python_version())
    ctx.info("platform", platform.platform())
    ctx.info("versions", {"torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
                          "numpy": numpy.__version__, "pillow": PIL.__version__, "lt_bench": lt_bench.__version__})
    ctx.info("git_rev", git_revision(REPO))
    ctx.info("cpu", {"cores_usable": _cores(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                     "processor": platform.processor() or platform.machine()})
    cuda = torch.cuda.is_available()
    ctx.info("cuda_available", cuda)
    ctx.info("cuda_build", torch.version.cuda)
    ctx.info("cudnn", cudnn_version(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None)
    ctx.info("gpu_count", torch.cuda.device_count() if cuda else 0)
    if cuda:
        gpus = []
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "memory_gib": round(props.total_memory / 2 ** 30, 1),
                         "capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count})
        ctx.info("gpus", gpus)
        ctx.info("bf16_supported", torch.cuda.is_bf16_supported())
        ctx.info("tf32", {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32})
        try:
            ctx.info("nccl", ".".join(map(str, torch.cuda.nccl.version())))
        except Exception as err:     # noqa: BLE001 - a build without NCCL
            ctx.info("nccl", f"unavailable ({err})")
    if shutil.which("nvidia-smi"):
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        ctx.info("nvidia_smi", out.stdout.strip().splitlines() if out.returncode == 0 else out.stderr.strip()[-500:])
    device = ctx.device_arg if ctx.device_arg != "auto" else ("cpu" if ctx.dry_run else "cuda")
    ctx.info("device", device)
    ctx.check("the device asked for is visible", device == "cpu" or cuda,
              f"{device}: {'visible' if device == 'cpu' or cuda else 'torch.cuda.is_available() is False'}", "visible")


# ---------------------------------------------------------------------------------------------
# Step 2: AMP correctness
# ---------------------------------------------------------------------------------------------
AMP_MODES_CHECKED = ("bf16", "fp16")


def _amp_modes(ctx: StepContext) -> list[str]:
    import torch
    modes = []
    for mode in AMP_MODES_CHECKED:
        if mode == "fp16" and ctx.device.type != "cuda":
            ctx.skip_part(mode, "fp16 autocast needs CUDA (lt_bench refuses train.amp=fp16 on CPU)")
        elif mode == "bf16" and ctx.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            ctx.skip_part(mode, f"{torch.cuda.get_device_name(ctx.device)} does not support bf16")
        else:
            modes.append(mode)
    if not modes:
        raise Skip("no AMP mode runs on this device")
    return modes


def amp_forward_backward(model, images, labels, loss_fn, device, mode: str | None, frozen_backbone: bool):
    """One forward and backward as the training loop does it (autocast around the model, the
    loss outside it, a GradScaler for fp16, channels_last on a device under autocast); returns
    (loss, the classifier's weight gradient, unscaled, on the CPU, the logits' dtype, the
    GradScaler's scale).  ``frozen_backbone``: stage 2, features without gradient, only the
    classifier trained.  With fp16, a step whose scaled gradient overflows is repeated at half
    the scale, as GradScaler's skipped steps do in training (its first scale, 65536, often
    overflows the first steps)."""
    import torch
    from lt_bench.stages.precision import AMP_MODES, amp_dtype
    dtype = amp_dtype(mode) if mode else None
    model = copy.deepcopy(model).to(device)
    images, labels = images.to(device), labels.to(device)
    if mode is not None:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    model.train()
    params = list(model.classifier.parameters()) if frozen_backbone else list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=0.0)           # lr 0: a step leaves the weights as they are
    scaler = torch.amp.GradScaler(device.type, enabled=bool(mode) and AMP_MODES.get(mode).cls.grad_scaling)
    for _ in range(40):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            if frozen_backbone:
                with torch.no_grad():
                    features = model.backbone(images)
                logits = model.classifier(features)
            else:
                logits = model(images)
        loss = loss_fn(logits, labels)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        finite = all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
        if finite or not scaler.is_enabled():
            break
        scaler.step(optimizer)                              # skipped: the gradients are not finite
        scaler.update()                                     # halves the scale
    scale = scaler.get_scale() if scaler.is_enabled() else 1.0
    return loss.detach().cpu(), model.classifier.weight.grad.detach().float().cpu(), logits.dtype, scale


def _compare_amp(ctx: StepContext, label: str, model, images, labels, loss_fn, mode: str, frozen: bool) -> None:
    import torch
    cpu = torch.device("cpu")
    ref_loss, ref_grad, _, _ = amp_forward_backward(model, images, labels, loss_fn, cpu, None, frozen)
    loss, grad, logits_dtype, scale = amp_forward_backward(model, images, labels, loss_fn, ctx.device, mode, frozen)
    rel = relative_difference(float(loss), float(ref_loss))
    cos = cosine_similarity(grad, ref_grad)
    norm = relative_difference(float(grad.norm()), float(ref_grad.norm()))
    key = f"{mode}.{label}"
    ctx.metric(f"{key}.loss_fp32_cpu", float(ref_loss))
    ctx.metric(f"{key}.loss_amp", float(loss))
    ctx.metric(f"{key}.loss_rel_diff", rel)
    ctx.metric(f"{key}.grad_cosine", cos)
    ctx.metric(f"{key}.grad_norm_rel_diff", norm)
    if mode == "fp16":
        ctx.metric(f"{key}.grad_scale", scale, "", "the GradScaler's scale at the first step without overflow")
    ctx.check(f"{key}: loss is float32 under autocast", loss.dtype == torch.float32, str(loss.dtype), "torch.float32",
              f"logits {logits_dtype}")
    ctx.check(f"{key}: loss finite", math.isfinite(float(loss)), float(loss), "finite")
    ctx.check(f"{key}: loss rel. diff vs CPU float32", within_rtol(float(loss), float(ref_loss), LOSS_RTOL[mode]),
              rel, LOSS_RTOL[mode], f"{float(loss)!r} vs {float(ref_loss)!r}")
    ctx.check(f"{key}: classifier grad cosine vs CPU float32", math.isfinite(cos) and cos >= GRAD_COSINE_MIN, cos,
              GRAD_COSINE_MIN, "a non-finite gradient gives NaN")
    ctx.check(f"{key}: classifier grad norm rel. diff vs CPU float32", norm <= GRAD_NORM_RTOL[mode], norm,
              GRAD_NORM_RTOL[mode], f"{float(grad.norm())!r} vs {float(ref_grad.norm())!r}")


def _synthetic_cifar_run(ctx: StepContext, tag: str, overrides: list[str], launcher: list[str] | None = None) -> Path:
    """A short two-stage run.py on synthetic CIFAR-100 pickles; returns its run folder (raises on failure)."""
    from lt_bench.data.synthetic import write_cifar
    s = ctx.sizes
    data = ctx.workdir / "cifar"
    if not data.exists():
        write_cifar(data, "cifar100", train_per_class=s.run_train_per_class, test_per_class=s.run_test_per_class)
    out = ctx.workdir / tag
    command = [sys.executable, *(launcher or []), str(REPO / "run.py"), "task=cifar100lt",
               f"imbalance={s.run_imbalance}", f"data.root={data}", "data.verify_md5=false",
               f"data.num_workers={s.run_workers}", f"stage1.epochs={s.run_epochs}", "stage1.warmup_epochs=0",
               f"stage1.batch_size={s.run_batch}", f"stage2.epochs={s.run_epochs}", f"stage2.batch_size={s.run_batch}",
               "progress=false", "plots=false", "logger=none", f"out_dir={out}", *overrides]
    started = time.perf_counter()
    code, tail = run_command(ctx, command, tag)
    ctx.metric(f"{tag}.run_seconds", time.perf_counter() - started, "s")
    if code != 0:
        raise RuntimeError(f"run.py ({tag}) exited with status {code}; its output ends:\n{tail}")
    return out


def _check_records(ctx: StepContext, tag: str, out: Path, device_type: str, world_size: int = 1) -> list[dict]:
    records = json.loads((out / "results.json").read_text())
    ctx.check(f"{tag}: records of stage 1 and stage 2", [(r["stage"], r["method"]) for r in records]
              == [(1, "softmax"), (2, "gumbel")], str([(r["stage"], r["method"]) for r in records]),
              "[(1, 'softmax'), (2, 'gumbel')]")
    bad = nonfinite_numbers(records)
    ctx.check(f"{tag}: every record number finite", not bad, len(bad), 0, "; ".join(bad[:5]))
    ctx.check(f"{tag}: no non-finite step skipped", all(r.get("nonfinite_skipped", 0) == 0 for r in records),
              sum(r.get("nonfinite_skipped", 0) for r in records), 0)
    devices = sorted({str(r.get("device")) for r in records})
    ctx.check(f"{tag}: ran on {device_type}", all(d.startswith(device_type) for d in devices), ", ".join(devices),
              device_type)
    ctx.check(f"{tag}: world size", all(r.get("world_size") == world_size for r in records),
              ", ".join(str(r.get("world_size")) for r in records), world_size)
    for r in records:
        ctx.metric(f"{tag}.stage{r['stage']}.top1", r["top1"], "%")
    return records


def step_amp_correctness(ctx: StepContext) -> None:
    import torch
    from lt_bench.activations import build_activation
    from lt_bench.models import build_model
    modes = _amp_modes(ctx)
    s = ctx.sizes
    torch.manual_seed(0)
    model = build_model("resnet32", 100)
    images = torch.randn(s.amp_batch, 3, 32, 32)
    labels = torch.randint(0, 100, (s.amp_batch,))
    losses = {"stage1_softmax_ce": (build_activation("softmax").loss, False),
              "stage2_gumbel_exact": (build_activation("gumbel", gradient="exact").loss, True),
              "stage2_gumbel_authors": (build_activation("gumbel", gradient="authors").loss, True)}
    # (a) the same batch and weights: device under autocast against CPU float32
    for mode in modes:
        for label, (loss_fn, frozen) in losses.items():
            with ctx.part(f"{mode}.{label}"):
                _compare_amp(ctx, label, model, images, labels, loss_fn, mode, frozen)
    # (b) short real runs through run.py: bf16 with the exact Gumbel gradient, fp16 with the authors'
    for mode in modes:
        gradient = "exact" if mode == "bf16" else "authors"
        tag = f"run_{mode}"
        with ctx.part(tag):
            overrides = [f"device={ctx.device.type}", f"train.amp={mode}", "train.channels_last=true",
                         f"activations.gumbel.gradient={gradient}"]
            out = _synthetic_cifar_run(ctx, tag, overrides)
            _check_records(ctx, tag, out, ctx.device.type)
            ctx.note(f"{tag}: run.py task=cifar100lt (synthetic pickles, imbalance {s.run_imbalance}, "
                     f"{s.run_epochs}+{s.run_epochs} epochs, batch {s.run_batch}), train.amp={mode}, "
                     f"train.channels_last=true, activations.gumbel.gradient={gradient}")


# ---------------------------------------------------------------------------------------------
# Step 3: the Gumbel autograd function under autocast
# ---------------------------------------------------------------------------------------------
EXTREME_LOGITS = (-100.0, -30.0, -20.0, -10.0, -4.0, -3.94, -1.0, 0.0, 1.0, 4.0, 10.0, 20.0, 25.0, 30.0, 100.0)


def gumbel_reference(z, targets, clamp: tuple[float, float] | None):
    """The exact Gumbel BCE and its gradient in float64, closed form: for a positive
    loss u = exp(-z), d/dz = -u; for a negative -log(1 - exp(-u)), d/dz = u / expm1(u);
    with ``clamp``, at the clamped logit, and zero gradient outside (lo, hi): torch.clamp passes
    no gradient at the bounds themselves either."""
    import torch
    z = z.double()
    zc = z.clamp(*clamp) if clamp is not None else z
    u = torch.exp(-zc)
    t = targets.double()
    neg_loss = -torch.log(-torch.expm1(-u))
    neg_grad = torch.where(u > 700, torch.zeros_like(u), u / torch.expm1(u.clamp(max=700)))
    neg_grad = torch.where(u == 0, torch.ones_like(u), neg_grad)
    loss = torch.where(t > 0, u, neg_loss)
    grad = torch.where(t > 0, -u, neg_grad)
    if clamp is not None:
        grad = grad * ((z > clamp[0]) & (z < clamp[1])).double()
    return loss, grad


def step_gumbel_autocast(ctx: StepContext) -> None:
    import torch
    from lt_bench.activations import build_activation
    from lt_bench.stages.precision import amp_dtype
    modes = _amp_modes(ctx)
    device = ctx.device
    values = torch.tensor(EXTREME_LOGITS)
    n = len(values)
    # every logit value once as the positive of its row and once as a negative
    grid = values.repeat(n, 1)                             # row i: all values; its positive is column i
    targets = torch.eye(n)
    for mode in modes:
        dtype = amp_dtype(mode)
        logits_low = grid.to(dtype)                        # what a Linear under autocast hands the loss
        for gradient, clamp in (("exact", None), ("exact", (-4.0, 10.0)), ("authors", (-4.0, 10.0))):
            label = f"{mode}.{gradient}.clamp_{'none' if clamp is None else 'paper'}"
            with ctx.part(label):
                act = build_activation("gumbel", gradient=gradient, clamp=clamp)
                z = logits_low.to(device).detach().requires_grad_(True)
                with torch.autocast(device.type, dtype=dtype):
                    loss = act.elementwise_loss(z, targets.to(device))
                    mean_loss = act.loss(z, torch.arange(n, device=device))
                loss.sum().backward()
                ctx.check(f"{label}: loss is float32 under autocast", loss.dtype == torch.float32 and
                          mean_loss.dtype == torch.float32, f"{loss.dtype}, {mean_loss.dtype}", "torch.float32")
                if gradient == "exact":    # the float64 closed form rounded to float32 (inf where float32 overflows)
                    ref_loss, ref_grad = gumbel_reference(logits_low.float(), targets, clamp)
                    ref_loss = ref_loss.float()
                else:                      # the authors' loss (torch BCE on probabilities), on CPU in float32
                    z_ref = logits_low.float().detach().requires_grad_(True)
                    ref_loss = act.elementwise_loss(z_ref, targets)
                    ref_loss.sum().backward()
                    ref_grad = z_ref.grad
                ref_grad_low = ref_grad.float().to(dtype)         # the gradient a low-precision logit receives
                got_loss, got_grad = loss.detach().cpu(), z.grad.detach().cpu()
                loss_cmp = tensor_mismatch(got_loss, ref_loss, GUMBEL_LOSS_RTOL)
                grad_cmp = tensor_mismatch(got_grad.float(), ref_grad_low.float(), GUMBEL_GRAD_RTOL[mode])
                ctx.metric(f"{label}.loss_max_rel_error", loss_cmp["max_rel_error"])
                ctx.metric(f"{label}.grad_max_rel_error", grad_cmp["max_rel_error"])
                ctx.check(f"{label}: no NaN in loss or gradient", loss_cmp["nan"] + grad_cmp["nan"] == 0,
                          loss_cmp["nan"] + grad_cmp["nan"], 0)
                ctx.check(f"{label}: loss = float32 closed form", loss_cmp["mismatches"] == 0, loss_cmp["mismatches"],
                          f"0 of {loss_cmp['values']} (rtol {GUMBEL_LOSS_RTOL:g})", json.dumps(loss_cmp["first"]))
                ctx.check(f"{label}: gradient = closed form in {mode}", grad_cmp["mismatches"] == 0,
                          grad_cmp["mismatches"], f"0 of {grad_cmp['values']} (rtol {GUMBEL_GRAD_RTOL[mode]:g})",
                          json.dumps(grad_cmp["first"]))
                mean_loss = mean_loss.item()
                ctx.check(f"{label}: mean loss (Activation.loss) finite or the closed form's inf",
                          math.isfinite(mean_loss) or not math.isfinite(float(ref_loss.sum(1).mean())),
                          mean_loss, "finite unless the exact value overflows float32")
    ctx.note(f"logits {list(EXTREME_LOGITS)}, each once as a positive and {len(EXTREME_LOGITS) - 1} times as a "
             "negative; clamp_paper is the default clamp [-4, 10]. Without a clamp the exact loss of a positive at "
             "z = -100 is e^100, beyond float32: inf is its float32 value (and the gradient's), not a NaN.")


# ---------------------------------------------------------------------------------------------
# Step 4: DDP with exact evaluation
# ---------------------------------------------------------------------------------------------
def step_ddp(ctx: StepContext) -> None:
    import torch
    device = ctx.device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if count < 2:
            raise Skip(f"{count} GPU visible: a 2-process NCCL run needs 2 GPUs (the CPU path, gloo, runs in the "
                       "dry run and in the test suite)")
        backend = "nccl"
    else:
        backend = "gloo"
    ctx.info("backend", backend)
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    out = _synthetic_cifar_run(ctx, "ddp", [f"device={device.type}", "train.amp=none"], launcher=launcher)
    records = _check_records(ctx, "ddp", out, device.type, world_size=2)
    for r in records:
        sums = r.get("rank_param_checksums") or []
        ctx.check(f"ddp stage {r['stage']}: replicas agree (parameter checksums)", len(sums) == 2 and
                  sums[0] == sums[1], str(sums), "two equal checksums")
    # one process evaluates each checkpoint again: lt-bench eval, in this process
    from lt_bench.eval_checkpoint import main as eval_main
    if device.type == "cpu":
        torch.set_num_threads(1)         # as torchrun's ranks: the same float sums
    for r in records:
        checkpoint = out / "checkpoints" / f"stage{r['stage']}.pt"
        ctx.log(f"lt-bench eval {checkpoint}")
        code = eval_main([str(checkpoint)])
        if code != 0:
            raise RuntimeError(f"lt-bench eval {checkpoint} exited with status {code}")
    evals = {e["stage"]: e for e in json.loads((out / "eval.json").read_text())}
    for r in records:
        single = evals[r["stage"]]
        ctx.metric(f"stage{r['stage']}.top1_ddp", r["top1"], "%")
        ctx.metric(f"stage{r['stage']}.top1_single", single["top1"], "%")
        ctx.check(f"stage {r['stage']}: DDP test top-1 = single-process lt-bench eval", single["top1"] == r["top1"],
                  single["top1"], r["top1"])
        ctx.check(f"stage {r['stage']}: per-class top-1 equal", single["per_class_top1"] == r["per_class_top1"],
                  "equal" if single["per_class_top1"] == r["per_class_top1"] else "differ", "equal")
        ctx.check(f"stage {r['stage']}: images evaluated", single["num_eval"] == r["num_eval"], single["num_eval"],
                  r["num_eval"])
    ctx.note(f"torchrun --nproc_per_node=2 run.py task=cifar100lt (synthetic), device={device.type} ({backend}), "
             "train.amp=none; then lt-bench eval of checkpoints/stage1.pt and stage2.pt in one process")


# ---------------------------------------------------------------------------------------------
# Step 5: ResNet-50 throughput on synthetic tensors
# ---------------------------------------------------------------------------------------------
def _train_step_fn(net, optimizer, images, labels, loss_fn, device, dtype):
    import torch

    def step():
        with torch.autocast(device.type, dtype=dtype):
            logits = net(images)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss
    return step


def timed_rate(fn, items: int, warmup: int, steps: int, device) -> tuple[float, float, Any]:
    """(items/s over ``steps`` calls after ``warmup`` calls, seconds of the warm-up, the last
    call's result), timed with a device synchronisation at both ends."""
    start = time.perf_counter()
    for _ in range(warmup):
        out = fn()
    synchronize(device)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        out = fn()
    synchronize(device)
    return items * steps / (time.perf_counter() - start), warm, out


def _memory(ctx: StepContext, key: str) -> None:
    import torch
    if ctx.device.type == "cuda":
        ctx.metric(f"{key}.peak_memory_gib", torch.cuda.max_memory_allocated(ctx.device) / 2 ** 30, "GiB")
        torch.cuda.reset_peak_memory_stats(ctx.device)


def step_throughput_synthetic(ctx: StepContext) -> None:
    import torch
    from lt_bench.activations import build_activation
    from lt_bench.models import build_model
    s, device = ctx.sizes, ctx.device
    dtype = torch.bfloat16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise Skip("this GPU does not support bf16")
    torch.manual_seed(0)
    model = build_model("resnet50", 1000).to(device, memory_format=torch.channels_last)
    images = torch.randn(s.synth_batch, 3, s.synth_size, s.synth_size, device=device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (s.synth_batch,), device=device)
    loss_fn = build_activation("softmax").loss
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    ctx.info("setup", f"ResNet-50 (lt_bench resnet50), {s.synth_size} px, batch {s.synth_batch}, bf16 autocast, "
                      f"channels_last, SGD momentum; warm-up {s.synth_warmup}, timed {s.synth_steps} steps; "
                      "cudnn.benchmark False (lt_bench's default) for the first measurement, True after")
    model.train()
    train_step = _train_step_fn(model, optimizer, images, labels, loss_fn, device, dtype)
    for key, benchmark, label in (("train_eager", False, "training, eager"),
                                  ("train_eager_cudnn_benchmark", True, "training, eager, cudnn.benchmark=True")):
        with ctx.part(key):
            torch.backends.cudnn.benchmark = benchmark   # False: as lt_bench's runs leave it
            rate, _, loss = timed_rate(train_step, s.synth_batch, s.synth_warmup, s.synth_steps, device)
            ctx.metric(f"{key}.images_per_s", rate, "images/s", label)
            ctx.check(f"{key}: loss finite", math.isfinite(loss.item()), loss.item(), "finite")
            _memory(ctx, key)
    torch.backends.cudnn.benchmark = True                # the rest: cuDNN picks its fastest kernels

    with ctx.part("inference_eager"):
        model.eval()
        with torch.no_grad():
            def infer():
                with torch.autocast(device.type, dtype=dtype):
                    return model(images)
            rate, _, logits = timed_rate(infer, s.synth_batch, s.synth_warmup, s.synth_steps, device)
        ctx.metric("inference_eager.images_per_s", rate, "images/s", "inference, eager")
        finite = bool(torch.isfinite(logits.float()).all())
        ctx.check("inference: logits finite", finite, "all" if finite else "some not", "all")
        _memory(ctx, "inference_eager")

    with ctx.part("train_compiled"):
        model.train()
        ctx.log(f"torch.compile(model, backend={ctx.compile_backend!r}): the first steps compile")
        compiled = torch.compile(model, backend=ctx.compile_backend)
        rate, warm, loss = timed_rate(_train_step_fn(compiled, optimizer, images, labels, loss_fn, device, dtype),
                                      s.synth_batch, s.compile_warmup, s.synth_steps, device)
        ctx.metric("train_compiled.compile_seconds", warm, "s", f"torch.compile: first {s.compile_warmup} steps "
                   "(compilation)")
        ctx.metric("train_compiled.images_per_s", rate, "images/s", f"training, torch.compile ({ctx.compile_backend})")
        ctx.check("train_compiled: loss finite", math.isfinite(loss.item()), loss.item(), "finite")
        _memory(ctx, "train_compiled")
        eager = ctx.result["metrics"].get("train_eager_cudnn_benchmark.images_per_s", {}).get("value")
        if eager:
            ctx.metric("train_compiled.speedup_vs_eager", rate / eager, "x",
                       "compiled / eager (both cudnn.benchmark=True)")


# ---------------------------------------------------------------------------------------------
# Step 6: the ImageNet-LT input pipeline
# ---------------------------------------------------------------------------------------------
def _write_jpeg(job) -> tuple[int, int, int]:
    """One photo-like JPEG of ImageNet's size mix (lt_bench.data.synthetic's generator; seeded
    by its index so that writers in parallel give the same files); (width, height, bytes)."""
    import numpy as np
    from PIL import Image

    from lt_bench.data.synthetic import imagenet_like_size, natural_like_image
    path, index, scale = job
    rng = np.random.default_rng(index)
    width, height = imagenet_like_size(rng)
    width, height = max(16, int(width * scale)), max(16, int(height * scale))
    Image.fromarray(natural_like_image(width, height, rng)).save(path, quality=90)
    return width, height, Path(path).stat().st_size


def write_imagenet_like(root: Path, n: int, classes: int, scale: float, workers: int) -> tuple[Path, Path, dict]:
    """n JPEGs of ImageNet's size mix (times ``scale``) under root/images, written by ``workers``
    processes, and OLTR-format split files GpuCheck_LT_{train,test}.txt under root/splits;
    returns (splits, images, their mean size)."""
    import numpy as np
    images, splits = root / "images", root / "splits"
    splits.mkdir(parents=True)
    jobs, lines = [], []
    for i in range(n):
        label = i % classes
        rel = f"train/n{label:08d}/img_{i:05d}.JPEG"
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        jobs.append((images / rel, i, scale))
        lines.append(f"{rel} {label}\n")
    if workers > 1:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            written = pool.map(_write_jpeg, jobs, chunksize=4)
    else:
        written = [_write_jpeg(job) for job in jobs]
    (splits / "GpuCheck_LT_train.txt").write_text("".join(lines))
    (splits / "GpuCheck_LT_test.txt").write_text("".join(lines[:classes]))
    width, height, size = (np.array(column, dtype=np.float64) for column in zip(*written))
    stats = {"images": n, "mean_width": float(width.mean()), "mean_height": float(height.mean()),
             "mean_megapixels": float((width * height).mean() / 1e6), "mean_kib": float(size.mean() / 1024)}
    return splits, images, stats


def _imagenet_like_train_set(ctx: StepContext, splits: Path, images: Path, decoder: str | None = None):
    """(the training set as run.py builds it for task=imagenetlt: split files, lt_bench.data's
    builder, the ImageNet training transform with AutoAugment; the data.decoder it uses, the
    task's own unless ``decoder`` names one)."""
    from hydra import compose, initialize_config_dir

    from lt_bench.compose import setup_hydra
    from lt_bench.data import build_data
    s = ctx.sizes
    setup_hydra()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[
            "task=imagenetlt", f"task.num_classes={s.pipe_classes}", "task.split_files.train=GpuCheck_LT_train.txt",
            "task.split_files.val=GpuCheck_LT_val.txt", "task.split_files.test=GpuCheck_LT_test.txt",
            f"data.splits_dir={splits}", f"data.root={images}", f"data.image_size={s.pipe_crop}",
            f"data.resize={max(s.pipe_crop, int(s.pipe_crop * 256 / 224))}", "data.autoaugment=true",
            "progress=false", f"out_dir={ctx.workdir / 'unused'}", *([f"data.decoder={decoder}"] if decoder else [])])
    return build_data(cfg).train, str(cfg.data.get("decoder", "pil"))


def step_throughput_pipeline(ctx: StepContext) -> None:
    import torch
    from torch.utils.data import DataLoader, RandomSampler

    from lt_bench.activations import build_activation
    from lt_bench.models import build_model
    from lt_bench.registries import IMAGE_DECODERS
    from lt_bench.stages.loop import TrainOptions, loader_options
    s, cores = ctx.sizes, _cores()
    started = time.perf_counter()
    splits, images, stats = write_imagenet_like(ctx.workdir / "imagenet_like", s.pipe_images, s.pipe_classes,
                                                s.pipe_scale, cores)
    ctx.info("images", stats)
    ctx.metric("generate_seconds", time.perf_counter() - started, "s")
    train, default = _imagenet_like_train_set(ctx, splits, images)
    device = ctx.device                                 # CUDA starts after the JPEG writers have forked
    ctx.info("setup", f"{len(train)} JPEGs of ImageNet's size mix (lt_bench.data.synthetic), mean "
                      f"{stats['mean_megapixels'] * 1e3:.0f}k pixels, {stats['mean_kib']:.0f} KiB; "
                      f"RandomResizedCrop {s.pipe_crop} + flip + AutoAugment (ImageNet) + normalise; batch "
                      f"{s.pipe_batch}, {cores} workers (the machine's cores), pinned memory on CUDA; the loader "
                      f"alone with each data.decoder, training with the task's ({default}); ResNet-50 bf16 autocast "
                      "+ channels_last, cudnn.benchmark False (lt_bench's default)")
    opts = TrainOptions(seed=0, num_workers=cores, prefetch_factor=2)

    def loader(dataset, batches: int) -> DataLoader:
        sampler = RandomSampler(dataset, replacement=True, num_samples=s.pipe_batch * batches,
                                generator=torch.Generator().manual_seed(0))
        return DataLoader(dataset, batch_size=s.pipe_batch, sampler=sampler, drop_last=True,
                          **loader_options(opts, device))

    # the loader alone, with each decoder (the task's first)
    for decoder in [default, *(d for d in IMAGE_DECODERS.names() if d != default)]:
        with ctx.part(f"loader_{decoder}"):
            dataset = train if decoder == default else _imagenet_like_train_set(ctx, splits, images, decoder)[0]
            batches = iter(loader(dataset, s.pipe_warmup + s.pipe_steps))
            for _ in range(s.pipe_warmup):
                next(batches)                           # worker start-up
            start = time.perf_counter()
            seen = sum(len(labels) for _, labels in batches)
            ctx.metric(f"loader_{decoder}.images_per_s", seen / (time.perf_counter() - start), "images/s",
                       f"DataLoader alone, data.decoder={decoder}{' (the task default)' if decoder == default else ''}")

    # ResNet-50 training through it, as the loop's step does (a loss.item() per step: the loop's
    # finiteness check synchronises every step, so the time in next() is time without data)
    with ctx.part("train"):
        torch.manual_seed(0)
        model = build_model("resnet50", s.pipe_classes).to(device, memory_format=torch.channels_last).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        loss_fn = build_activation("softmax").loss
        wait = busy = 0.0
        seen = 0
        losses = []
        batches = iter(loader(train, s.pipe_warmup + s.pipe_steps))
        for step in range(s.pipe_warmup + s.pipe_steps):
            t0 = time.perf_counter()
            inputs, labels = next(batches)
            t1 = time.perf_counter()
            inputs = inputs.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = model(inputs)
            loss = loss_fn(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            t2 = time.perf_counter()
            if step >= s.pipe_warmup:
                wait, busy, seen = wait + (t1 - t0), busy + (t2 - t1), seen + len(labels)
        ctx.metric("train.images_per_s", seen / (wait + busy), "images/s",
                   f"ResNet-50 training through the loader ({default})")
        ctx.metric("train.data_wait_fraction", wait / (wait + busy), "", "share of step time waiting for data")
        ctx.metric("train.compute_images_per_s", seen / busy, "images/s", "the same steps without the waiting")
        ctx.check("train: losses finite", all(math.isfinite(v) for v in losses), max(losses), "finite")
        _memory(ctx, "train")


# ---------------------------------------------------------------------------------------------
# Step 7: the cached stage 2 at ImageNet-LT shape
# ---------------------------------------------------------------------------------------------
def step_stage2_cache(ctx: StepContext) -> None:
    import numpy as np
    import torch
    from omegaconf import OmegaConf

    from lt_bench.activations import build_activation
    from lt_bench.data.long_tail import long_tail_counts
    from lt_bench.distributed import DistContext
    from lt_bench.stages.feature_cache import MemmapFeatures
    from lt_bench.stages.loop import StageJob, TrainOptions, fit
    s = ctx.sizes
    # ImageNet-LT's tail (1,280 -> 5 per class) over cache_classes, cut or cycled to cache_rows rows
    counts = long_tail_counts(1280, s.cache_classes, 256)
    labels = np.resize(np.repeat(np.arange(s.cache_classes), counts), s.cache_rows)
    path = ctx.workdir / "stage2_features.npy"
    started = time.perf_counter()
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(s.cache_rows, s.cache_dim))
    for first in range(0, s.cache_rows, 8192):              # ReLU'd-pool-like features
        rows = min(8192, s.cache_rows - first)
        features[first:first + rows] = np.abs(np.random.default_rng(first).standard_normal((rows, s.cache_dim),
                                                                                          dtype=np.float32))
    features.flush()
    del features
    ctx.metric("write_seconds", time.perf_counter() - started, "s")
    ctx.info("feature_file", {"rows": s.cache_rows, "dim": s.cache_dim, "classes": s.cache_classes,
                              "gib": round(path.stat().st_size / 2 ** 30, 3), "page_cache": "just written: warm"})
    dataset = MemmapFeatures(path, labels.tolist())
    device = ctx.device
    classifier = torch.nn.Linear(s.cache_dim, s.cache_classes).to(device)
    recipe = OmegaConf.create({"epochs": s.cache_epochs, "batch_size": s.cache_batch, "lr": 1e-5, "momentum": 0.9,
                               "weight_decay": 5e-4, "nesterov": False, "schedule": "constant", "warmup_epochs": 0,
                               "milestones": [], "gamma": 0.1})
    gumbel = build_activation("gumbel")
    workers = min(8, _cores())
    job = StageJob(name="stage2", index=2, model=classifier, trainable=classifier, dataset=dataset,
                   loss_fn=lambda logits, y: gumbel.loss(logits, y) / s.cache_classes, recipe=recipe,
                   checkpoint_path=ctx.workdir / "stage2.pt", log_dir=ctx.workdir / "tb", train_mode=classifier.train)
    ctx.info("setup", f"[{s.cache_rows:,} x {s.cache_dim:,}] float32 memmap (MemmapFeatures), "
                      f"{s.cache_classes} classes, "
                      f"Gumbel loss (exact, stage2.loss_scale=per_class), batch {s.cache_batch}, {workers} workers "
                      f"(imagenetlt's data.num_workers), float32, lt_bench.stages.loop.fit with its checkpoint hook")
    progress = fit(job, DistContext(device=device), TrainOptions(seed=0, num_workers=workers))
    for h in progress["history"]:
        ctx.metric(f"epoch{h['epoch']}.seconds", h["seconds"], "s", f"classifier epoch {h['epoch']}")
        ctx.metric(f"epoch{h['epoch']}.data_wait_fraction", h["data_seconds"] / max(h["seconds"], 1e-9))
        ctx.metric(f"epoch{h['epoch']}.rows_per_s", h["items"] / max(h["seconds"], 1e-9), "rows/s")
    ctx.check("epochs complete", progress["complete"], progress["epochs_done"], s.cache_epochs)
    ctx.check("losses finite", all(math.isfinite(h["loss"]) for h in progress["history"]),
              max(h["loss"] for h in progress["history"]), "finite")
    ctx.check("every row seen once per epoch", all(h["items"] == s.cache_rows for h in progress["history"]),
              progress["history"][-1]["items"], s.cache_rows)


# ---------------------------------------------------------------------------------------------
# Running the steps
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Step:
    name: str
    fn: Callable[[StepContext], None]
    title: str


STEPS = (
    Step("environment", step_environment, "versions, devices, CPU cores"),
    Step("amp_correctness", step_amp_correctness, "AMP losses and gradients vs CPU float32; short real runs"),
    Step("gumbel_autocast", step_gumbel_autocast, "Gumbel loss under autocast = float32 closed form"),
    Step("ddp", step_ddp, "2-process DDP, exact evaluation = single-process lt-bench eval"),
    Step("throughput_synthetic", step_throughput_synthetic, "ResNet-50 images/s, eager and compiled"),
    Step("throughput_pipeline", step_throughput_pipeline, "ImageNet-LT input pipeline images/s"),
    Step("stage2_cache", step_stage2_cache, "cached stage 2 at ImageNet-LT shape, s/epoch"),
)
STEP_NAMES = tuple(step.name for step in STEPS)


def execute(step: Step, ctx: StepContext) -> dict:
    """Run a step, turning what happens into its result: ok (every check held), failed (a
    check did not hold, or an error), skipped (with the reason)."""
    started = time.perf_counter()
    ctx.save()
    try:
        step.fn(ctx)
        failed = [c for c in ctx.result["checks"] if not c["ok"]]
        if failed:
            ctx.result.update(status="failed", error="; ".join(
                f"{c['name']}: {_short(c['value'])} (limit {_short(c['limit'])})" for c in failed[:5]))
        else:
            ctx.result["status"] = "ok"
    except Skip as why:
        ctx.result.update(status="skipped", reason=str(why))
    except (Exception, SystemExit) as err:   # noqa: BLE001 - every failure is recorded, the next step runs
        ctx.result.update(status="failed", error=f"{type(err).__name__}: {err}"[-3000:],
                          traceback=traceback.format_exc()[-4000:])
    ctx.result["seconds"] = round(time.perf_counter() - started, 3)
    ctx.save()
    return ctx.result


def _child(step: Step, ctx: StepContext) -> None:
    os.setsid()                 # its own process group: a stop at the cap ends everything it started
    signal.signal(signal.SIGTERM, signal.SIG_DFL)       # the parent's handler is the parent's
    try:
        execute(step, ctx)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def run_isolated(step: Step, ctx: StepContext, cap: float) -> dict:
    """The step in a forked process, stopped (with all it started) at ``cap`` seconds."""
    process = multiprocessing.get_context("fork").Process(target=_child, args=(step, ctx),
                                                          name=f"gpu_check.{step.name}")
    started = time.perf_counter()
    process.start()
    interrupted = False
    try:
        process.join(cap)
        timed_out = process.is_alive()
    except KeyboardInterrupt:
        interrupted = timed_out = True
    finally:                    # stopped at its cap, interrupted, or done: nothing it started lives on
        _stop_step(process, ctx)
    result = json.loads(ctx.result_file.read_text()) if ctx.result_file.exists() else dict(ctx.result)
    if interrupted:
        result.update(status="interrupted", error="stopped by Ctrl-C or SIGTERM (the measurements made before "
                                                  "it are kept)", seconds=round(time.perf_counter() - started, 3))
        raise Interrupted(result)
    if timed_out:
        result.update(status="timeout", error=f"stopped at its time cap of {cap:.0f} s (the measurements made "
                                              "before it are kept)")
    elif result.get("status") == "running":
        code = process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        result.update(status="failed", error=f"the step's process ended ({how}) before recording a result")
    result["seconds"] = round(time.perf_counter() - started, 3)
    return result


def _stop_step(process, ctx: StepContext) -> None:
    """Kill the step's process group (DataLoader workers, compile workers, ...) and the
    sessions of the runs it started."""
    pgids = ctx.workdir / "pgids"
    for line in (pgids.read_text().split() if pgids.exists() else []):
        _kill_group(int(line))
    _kill_group(process.pid)
    process.join(10)


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
def _device_line(report: dict) -> str:
    env = next((s for s in report["steps"] if s["name"] == "environment"), {}).get("info", {})
    versions = env.get("versions", {})
    gpus = env.get("gpus") or []
    names = ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpus) or "no GPU"
    parts = [f"device {report['device']}", f"GPUs: {len(gpus)} x {names}" if gpus else "no GPU",
             f"CPU cores {env.get('cpu', {}).get('cores_usable', '?')}",
             f"torch {versions.get('torch', '?')}", f"torchvision {versions.get('torchvision', '?')}",
             f"timm {versions.get('timm', '?')}", f"CUDA {env.get('cuda_build')}", f"cuDNN {env.get('cudnn')}"]
    return "; ".join(parts)


def _result_cell(step: dict) -> str:
    if step["status"] == "skipped":
        return f"skipped: {step.get('reason', '')}"
    if step["status"] in ("failed", "timeout", "interrupted"):
        return f"**{step['status'].upper()}**: {step.get('error', '')}".replace("\n", " ")[:400]
    metrics = step.get("metrics", {})
    labelled = [f"{m['label']}: {_fmt(m['value'])} {m['unit']}".strip() for m in metrics.values() if m.get("label")]
    checks = step.get("checks", [])
    held = f"{sum(c['ok'] for c in checks)}/{len(checks)} checks hold" if checks else ""
    skipped = "; ".join(f"{k} skipped ({v})" for k, v in step.get("parts_skipped", {}).items())
    return "; ".join(p for p in [held, *labelled[:6], skipped] if p)


def _fmt(value: float | None) -> str:
    if value is None:
        return "not finite"
    if 1e3 <= abs(value) < 1e7:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    dry = report["mode"] == "dry-run"
    lines = []
    if dry:
        lines += [f"### GPU check: DRY RUN on {report['device']} at tiny sizes ({report['started']})", "",
                  "**dry-run: these numbers are not benchmark figures.** The dry run runs every step at tiny sizes on "
                  "CPU to show that the script works; its images/s and seconds measure nothing of a GPU.", ""]
    else:
        lines += [f"### GPU check ({report['started']})", ""]
    if report.get("interrupted"):
        lines += ["**Interrupted** (Ctrl-C or SIGTERM): the steps after the last one listed did not run.", ""]
    lines += [_device_line(report), "",
              f"`{report['command']}` ({report['wall_seconds']:.0f} s of a {report['budget_s']:.0f} s budget; "
              f"git {report.get('git_rev') or '?'})", "",
              "| step | status | seconds | result |", "| --- | --- | ---: | --- |"]
    for step in report["steps"]:
        lines.append(f"| {step['name']} | {step['status']} | {step.get('seconds', 0):.1f} | "
                     f"{_cell(_result_cell(step))} |")
    measured = [(s["name"], k, m) for s in report["steps"] for k, m in s.get("metrics", {}).items()]
    if measured:
        lines += ["", "| step | measurement | value | unit |", "| --- | --- | ---: | --- |"]
        lines += [f"| {n} | {_cell(m.get('label') or k)} | {_fmt(m['value'])} | {m['unit']} |" for n, k, m in measured]
    checks = [(s["name"], c) for s in report["steps"] for c in s.get("checks", [])]
    if checks:
        lines += ["", "| step | check | value | limit | holds |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {n} | {_cell(c['name'])} | {_cell(_short(c['value']))} | {_cell(_short(c['limit']))} | "
                  f"{'yes' if c['ok'] else '**NO**'} |" for n, c in checks]
    lines += ["", "Tolerances:", ""]
    lines += [f"- `{k}` = {v['value']:g}: {v['applies_to']} ({v['why']})" for k, v in report["tolerances"].items()]
    notes = [(s["name"], n) for s in report["steps"] for n in s.get("notes", [])]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}: {text}" for n, text in notes]
    return "\n".join(lines) + "\n"


def write_report(report: dict, json_path: Path, md_path: Path) -> None:
    for path, text in ((json_path, json.dumps(report, indent=1, default=str)), (md_path, render_markdown(report))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step at tiny sizes (default device: cpu)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the JSON and Markdown go (default "
                        f"{DEFAULT_OUT.relative_to(REPO)})")
    parser.add_argument("--budget-s", type=float, default=480.0, help="total seconds; steps that no longer fit are "
                        "skipped with the reason (default 480: 8 minutes)")
    parser.add_argument("--steps", default=",".join(STEP_NAMES),
                        help=f"comma-separated subset of {','.join(STEP_NAMES)}")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="auto: cuda for the full check, cpu for --dry-run")
    parser.add_argument("--compile-backend", default=None, help="torch.compile backend for throughput_synthetic "
                        "(default inductor; eager under --dry-run, where inductor takes minutes on a CPU)")
    parser.add_argument("--tag", default=None, help="a word for the file names (e.g. the machine)")
    parser.add_argument("--force", action="store_true", help="replace result files of the same name")
    parser.add_argument("--in-process", action="store_true", help="run the steps in this process (debugging: no "
                        "hard time caps, and a CUDA error can affect the steps after it)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one, removed)")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the scratch folder (run logs, data)")
    args = parser.parse_args(argv)
    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEP_NAMES]
    if unknown or not steps:
        parser.error(f"--steps: unknown {', '.join(unknown) or '(none given)'}; valid: {', '.join(STEP_NAMES)}")
    args.steps = steps
    if args.device == "cpu" and not args.dry_run:
        parser.error("--device cpu runs only with --dry-run: the full sizes need a GPU")
    if args.budget_s <= 0:
        parser.error("--budget-s must be positive")
    if args.tag and not args.tag.replace("-", "").replace("_", "").isalnum():
        parser.error("--tag: letters, digits, '-' and '_' only")
    args.compile_backend = args.compile_backend or ("eager" if args.dry_run else "inductor")
    return args


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)   # as Ctrl-C: stop the step, write what was measured
    started_at = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        json_path, md_path = output_paths(args.out, args.dry_run, args.tag, started_at, args.force)
    except (FileExistsError, OSError) as err:
        print(f"gpu_check: {err}", file=sys.stderr)
        return 2
    sizes = DRY if args.dry_run else FULL
    # The parent never touches CUDA (a CUDA context does not survive fork): importing torch here
    # saves each forked step the import; each step initialises CUDA itself.
    import torch  # noqa: F401
    import lt_bench.models  # noqa: F401
    import lt_bench.stages.loop  # noqa: F401

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    workdir.mkdir(parents=True, exist_ok=True)
    mode = "dry-run" if args.dry_run else "full"
    device = args.device if args.device != "auto" else ("cpu" if args.dry_run else "cuda")
    argv_shown = " ".join(argv if argv is not None else sys.argv[1:])
    report = {"script": SCRIPT, "schema": SCHEMA, "mode": mode, "device": device,
              "command": f"python {SCRIPT} {argv_shown}".strip(), "started": started_at.strftime("%Y-%m-%d %H:%M:%SZ"),
              "budget_s": args.budget_s, "wall_seconds": 0.0, "git_rev": None, "sizes": asdict(sizes),
              "compile_backend": args.compile_backend, "tolerances": TOLERANCES, "steps": [], "summary": {}}
    try:
        from lt_bench.records import git_revision
        report["git_rev"] = git_revision(REPO)
    except Exception:            # noqa: BLE001 - the revision is informative only
        pass
    print(f"[gpu_check] {mode} on {device}, budget {args.budget_s:.0f} s, steps {', '.join(args.steps)}\n"
          f"[gpu_check] results -> {json_path} and {md_path.name}; scratch {workdir}", flush=True)
    selected = [s for s in STEPS if s.name in args.steps]
    no_device = None
    try:
        for number, step in enumerate(selected, start=1):
            elapsed = time.perf_counter() - t0
            cap, reason = budget_decision(elapsed, args.budget_s, sizes.caps[step.name])
            reason = reason or no_device
            if reason:
                result = {"name": step.name, "status": "skipped", "reason": reason, "seconds": 0.0, "metrics": {},
                          "checks": [], "info": {}, "notes": [], "parts_skipped": {}}
            else:
                print(f"[gpu_check] step {number}/{len(selected)} {step.name}: {step.title} (cap {cap:.0f} s, "
                      f"{args.budget_s - elapsed:.0f} s of the budget left)", flush=True)
                step_dir = workdir / step.name
                step_dir.mkdir(parents=True, exist_ok=True)
                ctx = StepContext(step.name, sizes, args.dry_run, args.device, args.compile_backend,
                                  deadline=time.time() + cap, workdir=step_dir, result_file=step_dir / "result.json")
                result = execute(step, ctx) if args.in_process else run_isolated(step, ctx, cap)
            result["cap_s"] = round(cap, 1)
            report["steps"].append(result)
            if step.name == "environment" and result["status"] != "ok" and device == "cuda" \
                    and result.get("info", {}).get("cuda_available") is False:
                no_device = "no CUDA device (see the environment step); --dry-run runs the check on CPU"
            detail = result.get("reason") or result.get("error") or _result_cell(result)
            print(f"[gpu_check] {step.name}: {result['status'].upper()} in {result['seconds']:.1f} s - "
                  f"{str(detail)[:300]}", flush=True)
            report["wall_seconds"] = round(time.perf_counter() - t0, 1)
            write_report(report, json_path, md_path)
    except KeyboardInterrupt as stop:
        print("[gpu_check] interrupted: the running step was stopped; the steps so far are written", flush=True)
        report["interrupted"] = True
        if isinstance(stop, Interrupted):
            report["steps"].append(stop.result)
    finally:
        counts = {}
        for result in report["steps"]:
            counts[result["status"]] = counts.get(result["status"], 0) + 1
        report["summary"] = counts
        report["wall_seconds"] = round(time.perf_counter() - t0, 1)
        write_report(report, json_path, md_path)
        if args.workdir is None and not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    bad = counts.get("failed", 0) + counts.get("timeout", 0) + counts.get("interrupted", 0)
    print(f"[gpu_check] done in {report['wall_seconds']:.0f} s: " + ", ".join(f"{v} {k}" for k, v in counts.items())
          + f" -> {json_path}", flush=True)
    return 130 if report.get("interrupted") else (1 if bad else 0)


if __name__ == "__main__":
    sys.exit(main())
