"""The training loop both stages share: epochs, DDP, AMP, non-finite guard, checkpoints, resume.

A stage is described by a ``StageJob`` (what to train, on what, with which loss); ``fit``
runs it.  Every epoch reseeds from (seed, stage, epoch, rank) and ends with an atomic
checkpoint, so a run resumed from any checkpoint replays the uninterrupted run exactly
(bit for bit on CPU; up to nondeterministic kernels on CUDA).  SIGTERM saves a checkpoint
after the current step, with the RNG state and the epoch's position: the resumed run takes
the same batches in the same order (bit for bit with data.num_workers=0; with worker
processes the augmentations of the rest of that epoch are drawn anew).
"""
from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.tensorboard import SummaryWriter

from lt_bench.checkpoint import load_checkpoint, save_checkpoint
from lt_bench.data.samplers import build_sampler
from lt_bench.distributed import DistContext
from lt_bench.errors import CheckpointError, NonFiniteLossError
from lt_bench.failpoints import failpoint
from lt_bench.progress import progress_bar
from lt_bench.seeding import derive_seed, seed_everything
from lt_bench.signals import GracefulStop, TrainingInterrupted
from lt_bench.stages.schedule import build_optimizer, build_scheduler

log = logging.getLogger(__name__)

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainOptions:
    seed: int
    amp: str = "none"
    channels_last: bool = False
    skip_nonfinite: bool = False
    num_workers: int = 0
    persistent_workers: bool = False
    prefetch_factor: int = 2
    progress: bool = False
    resume: bool = False
    eval_every: int = 0


@dataclass
class StageJob:
    name: str                                   # "stage1" | "stage2": checkpoint and log names
    index: int                                  # 1 | 2: part of every derived seed
    model: nn.Module                            # the whole model, saved in checkpoints
    trainable: nn.Module                        # the part whose parameters the optimizer updates
    dataset: Dataset                            # (input, label) items with .targets: images or features
    loss_fn: Callable[[Tensor, Tensor], Tensor]
    recipe: Any                                 # epochs, batch_size, lr, schedule, ...
    checkpoint_path: Path
    log_dir: Path
    train_mode: Callable[[], None]              # sets train/eval mode of every submodule
    frozen: Callable[[Tensor], Tensor] | None = None   # no-grad feature extractor before `trainable`
    evaluate: Callable[[], dict] | None = None  # test metrics for the per-epoch curves
    meta: dict = field(default_factory=dict)    # stored in the checkpoint (config hash, classes, ...)
    sampler: str = "random"                     # random | class_balanced | sqrt (data/samplers.py)


def loader_options(opts: TrainOptions, device: torch.device) -> dict:
    """DataLoader settings that keep an accelerator fed: workers, pinned memory, prefetch."""
    workers = {"persistent_workers": opts.persistent_workers, "prefetch_factor": opts.prefetch_factor}
    return {"num_workers": opts.num_workers, "pin_memory": device.type == "cuda",
            **(workers if opts.num_workers > 0 else {})}


def _restore(job: StageJob, ctx: DistContext, optimizer, scheduler, scaler) -> dict | None:
    ckpt = load_checkpoint(job.checkpoint_path, map_location=ctx.device)
    expected = job.meta.get("config_hash")
    if ckpt.get("config_hash") != expected:
        raise CheckpointError(
            f"{job.checkpoint_path} was written by a run with config hash {ckpt.get('config_hash')}, "
            f"this run's is {expected}: resume needs the same configuration (see config.yaml beside it)"
        )
    job.model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    scaler.load_state_dict(ckpt["scaler"])
    return ckpt["progress"]


def is_complete(checkpoint_path: Path) -> bool:
    """Did the stage that writes ``checkpoint_path`` finish all its epochs?"""
    if not checkpoint_path.exists():
        return False
    return bool(load_checkpoint(checkpoint_path)["progress"]["complete"])


def _save(job: StageJob, ctx: DistContext, optimizer, scheduler, scaler, progress: dict) -> None:
    if ctx.is_main:
        save_checkpoint(job.checkpoint_path, {
            **job.meta, "stage": job.name, "model": job.model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "progress": progress,
        }, label=f"{job.name}:{progress['epochs_done']}{'+' if 'in_epoch' in progress else ''}")
    ctx.barrier()


def fit(job: StageJob, ctx: DistContext, opts: TrainOptions) -> dict:
    """Train ``job`` for ``job.recipe.epochs`` epochs; returns its progress record.

    Raises TrainingInterrupted after saving a mid-epoch checkpoint when SIGTERM arrives.
    """
    recipe = job.recipe
    use_ddp = ctx.is_distributed
    net = (DistributedDataParallel(job.trainable, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
           if use_ddp else job.trainable)
    optimizer = build_optimizer([p for p in job.trainable.parameters() if p.requires_grad], recipe)
    sampler = build_sampler(job.sampler, job.dataset.targets, world_size=ctx.world_size, rank=ctx.rank,
                            seed=opts.seed)
    batch_size = recipe.batch_size // ctx.world_size          # recipes give the global batch
    # A last batch of one sample would break BatchNorm in training mode: drop it then.
    drop_last = len(sampler) % batch_size == 1
    steps_per_epoch = len(sampler) // batch_size if drop_last else math.ceil(len(sampler) / batch_size)

    def make_loader(indices) -> DataLoader:
        return DataLoader(job.dataset, batch_size=batch_size, sampler=indices, drop_last=drop_last,
                          **loader_options(opts, ctx.device))
    loader = make_loader(sampler)
    scheduler = build_scheduler(optimizer, recipe, steps_per_epoch)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=opts.amp == "fp16")

    progress = {"epochs_done": 0, "complete": False, "history": [], "nonfinite_skipped": 0, "train_seconds": 0.0}
    if opts.resume and job.checkpoint_path.exists():
        progress = _restore(job, ctx, optimizer, scheduler, scaler)
        partial = progress.get("in_epoch")
        log.info("%s: resumed from %s after epoch %d%s", job.name, job.checkpoint_path, progress["epochs_done"],
                 f", step {partial['steps']}" if partial else "")
    if progress["complete"]:
        return progress

    writer = (SummaryWriter(str(job.log_dir), purge_step=progress["epochs_done"] or None)
              if ctx.is_main else None)
    try:
        with GracefulStop(ctx) as stop:
            for epoch in range(progress["epochs_done"], recipe.epochs):
                seed_everything(derive_seed(opts.seed, job.index, epoch, ctx.rank))
                sampler.set_epoch(epoch)
                partial = progress.pop("in_epoch", None)
                # a SIGTERM checkpoint: the same epoch order, minus the steps already taken
                epoch_loader = (make_loader(list(sampler)[partial["steps"] * batch_size:]) if partial else loader)
                stats = _train_epoch(job, net, optimizer, scheduler, scaler, epoch_loader, ctx, opts, epoch,
                                     stop, partial)
                if "interrupted" in stats:
                    progress["in_epoch"] = stats["interrupted"]
                    _save(job, ctx, optimizer, scheduler, scaler, progress)
                    raise TrainingInterrupted(
                        f"{job.name}: SIGTERM, checkpoint saved at epoch {epoch + 1}, step "
                        f"{stats['interrupted']['steps']}/{steps_per_epoch} in {job.checkpoint_path}; "
                        "run the same command with resume=true to continue")
                ctx.broadcast_buffers(job.model)
                if job.evaluate is not None and opts.eval_every and (epoch + 1) % opts.eval_every == 0:
                    stats.update({f"test_{k}": v for k, v in job.evaluate().items()
                                  if k in ("top1", "many", "medium", "few") and v is not None})
                progress["history"].append(stats)
                progress["nonfinite_skipped"] += stats["skipped"]
                progress["train_seconds"] += stats["seconds"]
                progress["epochs_done"] = epoch + 1
                progress["complete"] = epoch + 1 == recipe.epochs
                _report(job, stats, writer)
                _save(job, ctx, optimizer, scheduler, scaler, progress)
                failpoint(f"{job.name}.epoch_end:{epoch + 1}")
    finally:
        if writer is not None:
            writer.close()
    return progress


def _report(job: StageJob, stats: dict, writer: SummaryWriter | None) -> None:
    epoch = stats["epoch"]
    test = f", test top1 {stats['test_top1']:.2f}%" if "test_top1" in stats else ""
    log.info("%s epoch %d/%d: loss %.4f, train top1 %.2f%%, lr %.3g, %.1f s (%.0f items/s, %.0f%% waiting "
             "for data)%s", job.name, epoch, job.recipe.epochs, stats["loss"], stats["train_top1"], stats["lr"],
             stats["seconds"], stats["items"] / max(stats["seconds"], 1e-9),
             100 * stats["data_seconds"] / max(stats["seconds"], 1e-9), test)
    if writer is not None:
        for key, value in stats.items():
            if key not in ("epoch", "items"):
                writer.add_scalar(key.replace("test_", "test/").replace("train_", "train/"), value, epoch)
        writer.flush()


def _rng_state() -> dict:
    """Python, NumPy and torch RNG states, in types a weights_only checkpoint can hold."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss]}


def _set_rng_state(state: dict) -> None:
    random.setstate(tuple(tuple(v) if isinstance(v, list) else v for v in state["python"]))
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))


def _train_epoch(job: StageJob, net: nn.Module, optimizer, scheduler, scaler, loader: DataLoader,
                 ctx: DistContext, opts: TrainOptions, epoch: int, stop: GracefulStop,
                 partial: dict | None = None) -> dict:
    """One epoch (or, after a SIGTERM checkpoint, its remaining steps)."""
    job.train_mode()
    device, amp_dtype = ctx.device, AMP_DTYPES[opts.amp]
    # loss * n, correct, n, skipped steps: all-reduced sums of the steps before a SIGTERM
    # checkpoint are carried by rank 0, so the final all-reduce counts them once
    totals = torch.zeros(4, dtype=torch.float64, device=device)
    if partial is not None and ctx.is_main:
        totals += torch.tensor(partial["totals"], dtype=torch.float64, device=device)
    first_step = partial["steps"] if partial else 0
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter() - (partial["seconds"] if partial else 0.0)
    data_wait = partial["data_seconds"] if partial else 0.0
    batches = iter(loader)                       # draws the workers' base seed, then:
    if partial is not None:
        _set_rng_state(partial["rng"])          # the RNG exactly as at the SIGTERM
    waiting_since = time.perf_counter()          # time spent waiting for the DataLoader
    bar = progress_bar(batches, opts.progress and ctx.is_main, f"{job.name} epoch {epoch + 1}/{job.recipe.epochs}",
                       total=len(loader))
    step = first_step
    for step, (inputs, labels) in enumerate(bar, start=first_step + 1):
        data_wait += time.perf_counter() - waiting_since
        inputs = inputs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if opts.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            if job.frozen is not None:
                with torch.no_grad():
                    inputs = job.frozen(inputs)
            logits = net(inputs)
        loss = job.loss_fn(logits, labels)   # activations compute losses in float32
        if _all_finite(loss, ctx, opts.skip_nonfinite):
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            n = labels.numel()
            totals += torch.stack([loss.detach().double() * n, (logits.argmax(1) == labels).sum().double(),
                                   torch.tensor(float(n), dtype=torch.float64, device=device),
                                   torch.zeros((), dtype=torch.float64, device=device)])
            if step % 20 == 1:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        elif opts.skip_nonfinite:
            totals[3] += 1             # as if the batch had not been drawn: no update, no lr step
            optimizer.zero_grad(set_to_none=True)
        else:
            raise NonFiniteLossError(
                f"{job.name}: loss is {loss.item()} at epoch {epoch + 1}/{job.recipe.epochs}, "
                f"batch {step}/{first_step + len(loader)} (optimizer step {scheduler.last_epoch}); "
                f"train.skip_nonfinite=true skips such steps and counts them in the records")
        failpoint(f"{job.name}.step:{epoch + 1}:{step}")
        if stop.agreed() and step < first_step + len(loader):
            ctx.all_reduce_sum(totals)
            return {"interrupted": {"epoch": epoch, "steps": step, "totals": totals.tolist(), "rng": _rng_state(),
                                    "seconds": time.perf_counter() - start, "data_seconds": data_wait}}
        waiting_since = time.perf_counter()
    ctx.all_reduce_sum(totals)
    loss_sum, correct, seen, skipped = (float(v) for v in totals)
    return {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_top1": 100.0 * correct / max(seen, 1),
            "lr": lr, "seconds": time.perf_counter() - start, "data_seconds": data_wait, "items": int(seen),
            "skipped": int(skipped)}


def _all_finite(loss: Tensor, ctx: DistContext, agree: bool) -> bool:
    """Is the loss finite?  When steps may be skipped, all ranks must agree on skipping,
    or one rank would wait forever in the gradient all-reduce of the others."""
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if agree and ctx.is_distributed:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())
