"""The training loop both stages share, and the hooks around it.

A stage is described by a ``StageJob`` (what to train, on what, with which loss); ``fit``
runs it with the standard hooks.  The ``Trainer`` itself is the algorithm: epochs of steps
(forward, loss, backward, optimizer and lr step), reseeded per epoch from (seed, stage, epoch,
rank).  Everything else is a hook (detectron2's ``HookBase`` shape):

- ``CheckpointHook``: resume from the stage's checkpoint, save atomically after every epoch
  and, on SIGTERM, mid-epoch with the RNG state and the epoch's position;
- ``EvalHook``: the evaluation split's metrics every ``eval.every_epochs`` epochs, for the
  curves (every epoch of the run's last stage when ``eval.select`` picks its best epoch);
- ``ReportHook``: the epoch's log line and, on rank 0, the epoch's row for the run's log
  (``run_logs.RunLog``: metrics.csv, TensorBoard, the trackers ``logger`` names).

An epoch's record (``progress['history']``, kept by the checkpoints) holds loss, train_top1,
lr, seconds, data_seconds, items, skipped and, when evaluated, ``test_<metric>``: the
evaluation split's metrics (``eval_split``: test or val; ``RunLog`` names them by their split)
and ``select_top1`` (the val split's top-1 that picks the best epoch).

A run resumed from any checkpoint replays the uninterrupted run exactly (bit for bit on CPU;
up to nondeterministic kernels on CUDA); after a SIGTERM checkpoint the resumed run takes the
same batches in the same order (bit for bit with data.num_workers=0; with worker processes the
augmentations of the rest of that epoch are drawn anew).
"""
from __future__ import annotations

import contextlib
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

from lt_bench.checkpoint import load_checkpoint, load_for_resume, save_checkpoint
from lt_bench.data.samplers import build_sampler
from lt_bench.distributed import DistContext
from lt_bench.errors import NonFiniteLossError
from lt_bench.failpoints import failpoint
from lt_bench.progress import progress_bar
from lt_bench.run_logs import RunLog, TensorBoard
from lt_bench.seeding import derive_seed, seed_everything
from lt_bench.signals import GracefulStop, TrainingInterrupted, quiet_worker
from lt_bench.stages.precision import AMP_MODES
from lt_bench.stages.schedule import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


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
    eval_split: str = "test"                    # the split EvalHook's metrics are of (eval.split)
    compile: bool = False                       # train.compile: torch.compile the trained module
    compile_backend: str = "inductor"
    run_log: RunLog | None = None               # rank 0's metrics.csv and trackers; None: TensorBoard
                                                # curves in the job's log_dir only


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
    sampler: str = "random"                     # a SAMPLERS name (data/samplers.py)


def empty_progress() -> dict:
    """The progress record of a stage that has not trained yet."""
    return {"epochs_done": 0, "complete": False, "history": [], "nonfinite_skipped": 0, "train_seconds": 0.0}


def is_complete(checkpoint_path: Path) -> bool:
    """Did the stage that writes ``checkpoint_path`` finish all its epochs?"""
    if not checkpoint_path.exists():
        return False
    return bool(load_checkpoint(checkpoint_path)["progress"]["complete"])


def loader_options(opts: TrainOptions, device: torch.device) -> dict:
    """DataLoader settings that keep an accelerator fed: workers, pinned memory, prefetch."""
    workers = {"persistent_workers": opts.persistent_workers, "prefetch_factor": opts.prefetch_factor}
    workers["worker_init_fn"] = quiet_worker
    return {"num_workers": opts.num_workers, "pin_memory": device.type == "cuda",
            **(workers if opts.num_workers > 0 else {})}


class Hook:
    """Called by the ``Trainer`` around the loop; every method is optional."""

    def before_train(self, trainer: "Trainer") -> None: ...
    def after_epoch(self, trainer: "Trainer", stats: dict) -> None: ...
    def on_interrupt(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...


class _Preempted(Exception):
    """SIGTERM agreed by every rank, mid-epoch: the position to save."""

    def __init__(self, state: dict):
        self.state = state


class Trainer:
    """Epochs of optimizer steps on ``job``; ``progress`` is the record the checkpoints keep."""

    def __init__(self, job: StageJob, ctx: DistContext, opts: TrainOptions, hooks: list[Hook]):
        self.job, self.ctx, self.opts, self.hooks = job, ctx, opts, hooks
        recipe = job.recipe
        self.precision = AMP_MODES.build(opts.amp)
        self.net = (DistributedDataParallel(job.trainable, device_ids=[ctx.device] if ctx.device.type == "cuda"
                                            else None) if ctx.is_distributed else job.trainable)
        self.frozen = job.frozen
        if opts.compile:        # the modules stay job.model's own: checkpoints hold the plain state dict
            self.net = torch.compile(self.net, backend=opts.compile_backend)
            if self.frozen is not None:
                self.frozen = torch.compile(self.frozen, backend=opts.compile_backend)
        self.optimizer = build_optimizer([p for p in job.trainable.parameters() if p.requires_grad], recipe)
        self.sampler = build_sampler(job.sampler, job.dataset.targets, world_size=ctx.world_size, rank=ctx.rank,
                                     seed=opts.seed)
        self.batch_size = recipe.batch_size // ctx.world_size          # recipes give the global batch
        # A last batch of one sample would break BatchNorm in training mode: drop it then.
        self.drop_last = len(self.sampler) % self.batch_size == 1
        self.steps_per_epoch = (len(self.sampler) // self.batch_size if self.drop_last
                                else math.ceil(len(self.sampler) / self.batch_size))
        self.loader = self.make_loader(self.sampler)
        self.scheduler = build_scheduler(self.optimizer, recipe, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.precision.grad_scaling)
        self.progress = empty_progress()
        self.stop: GracefulStop | None = None

    def make_loader(self, indices) -> DataLoader:
        return DataLoader(self.job.dataset, batch_size=self.batch_size, sampler=indices, drop_last=self.drop_last,
                          **loader_options(self.opts, self.ctx.device))

    def state(self) -> dict:
        """Everything a checkpoint holds besides the job's metadata."""
        return {"model": self.job.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "progress": self.progress}

    def load_state(self, ckpt: dict) -> None:
        self.job.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.progress = ckpt["progress"]

    def fit(self) -> dict:
        """Train the remaining epochs; raises TrainingInterrupted after a SIGTERM checkpoint."""
        if self.opts.resume and self.job.checkpoint_path.exists():
            self._resume()
        for hook in self.hooks:
            hook.before_train(self)
        try:
            with GracefulStop(self.ctx) as self.stop:
                try:
                    for epoch in range(self.progress["epochs_done"], self.job.recipe.epochs):
                        stats = self._epoch(epoch)
                        self.ctx.broadcast_buffers(self.job.model)
                        self._record(stats)
                        for hook in self.hooks:
                            hook.after_epoch(self, stats)
                except _Preempted as stop:
                    self.progress["in_epoch"] = stop.state
                    for hook in self.hooks:
                        hook.on_interrupt(self)
                    raise TrainingInterrupted(
                        f"{self.job.name}: {self.stop.signal_name}, checkpoint saved at epoch {stop.state['epoch'] + 1}, "
                        f"step {stop.state['steps']}/{self.steps_per_epoch} in {self.job.checkpoint_path}; run the "
                        "same command with resume=true to continue", self.stop.signum) from None
        finally:
            for hook in self.hooks:
                hook.after_train(self)
        return self.progress

    def _resume(self) -> None:
        job = self.job
        self.load_state(load_for_resume(job.checkpoint_path, job.meta.get("config_hash"), self.ctx.device))
        partial = self.progress.get("in_epoch")
        log.info("%s: resumed from %s after epoch %d%s", job.name, job.checkpoint_path, self.progress["epochs_done"],
                 f", step {partial['steps']}" if partial else "")

    def _record(self, stats: dict) -> None:
        progress = self.progress
        progress["history"].append(stats)
        progress["nonfinite_skipped"] += stats["skipped"]
        progress["train_seconds"] += stats["seconds"]
        progress["epochs_done"] = stats["epoch"]
        progress["complete"] = stats["epoch"] == self.job.recipe.epochs

    def _epoch(self, epoch: int) -> dict:
        """One epoch, or after a SIGTERM checkpoint its remaining steps, in the same order."""
        job, ctx, opts = self.job, self.ctx, self.opts
        seed_everything(derive_seed(opts.seed, job.index, epoch, ctx.rank))
        self.sampler.set_epoch(epoch)
        if hasattr(job.loss_fn, "set_epoch"):
            job.loss_fn.set_epoch(epoch)            # losses that change with the epoch (DRW)
        partial = self.progress.pop("in_epoch", None)
        loader = (self.make_loader(list(self.sampler)[partial["steps"] * self.batch_size:]) if partial
                  else self.loader)
        job.train_mode()
        device = ctx.device
        # loss * n, correct, n, skipped steps: all-reduced sums of the steps before a SIGTERM
        # checkpoint are carried by rank 0, so the final all-reduce counts them once
        totals = torch.zeros(4, dtype=torch.float64, device=device)
        if partial is not None and ctx.is_main:
            totals += torch.tensor(partial["totals"], dtype=torch.float64, device=device)
        sums = totals[:2]                            # a view: loss * n and correct, added per step
        counts = [0, 0]                              # this rank's n and skipped steps, on the host
        first_step = partial["steps"] if partial else 0
        lr = self.optimizer.param_groups[0]["lr"]
        if partial is not None:     # the record's lr is the epoch's first, kept by the SIGTERM checkpoint
            lr = partial.get("lr", lr)
        start = time.perf_counter() - (partial["seconds"] if partial else 0.0)
        data_wait = partial["data_seconds"] if partial else 0.0
        batches = iter(loader)                       # draws the workers' base seed, then:
        if partial is not None:
            _set_rng_state(partial["rng"])          # the RNG exactly as at the SIGTERM
        waiting_since = time.perf_counter()          # time spent waiting for the DataLoader
        bar = progress_bar(batches, opts.progress and ctx.is_main,
                           f"{job.name} epoch {epoch + 1}/{job.recipe.epochs}", total=len(loader))
        self.watch = _NonFiniteWatch(device)
        last_step = first_step + len(loader)
        for step, (inputs, labels) in enumerate(bar, start=first_step + 1):
            data_wait += time.perf_counter() - waiting_since
            loss, logits, labels = self._step(inputs, labels, epoch, step, last_step)
            if step % NONFINITE_CHECK_EVERY == 0:
                self._check_finite(epoch, step, last_step)
            if loss is None:
                counts[1] += 1             # a skipped non-finite step: no update, no lr step
            else:
                n = labels.numel()         # host-side counts; two in-place adds on the device
                counts[0] += n
                sums[0].add_(loss.detach().double(), alpha=n)
                sums[1].add_((logits.argmax(1) == labels).sum())
                if step % 20 == 1 and not bar.disable:      # no host sync when nothing is shown
                    bar.set_postfix(loss=f"{loss.item():.4f}")
            failpoint(f"{job.name}.step:{epoch + 1}:{step}")
            if self.stop.agreed() and step < last_step:
                self._check_finite(epoch, step, last_step)      # never a checkpoint of a diverged model
                totals[2:] += torch.tensor(counts, dtype=torch.float64, device=device)
                ctx.all_reduce_sum(totals)
                raise _Preempted({"epoch": epoch, "steps": step, "totals": totals.tolist(), "rng": _rng_state(),
                                  "seconds": time.perf_counter() - start, "data_seconds": data_wait, "lr": lr})
            waiting_since = time.perf_counter()
        self._check_finite(epoch, last_step, last_step)
        totals[2:] += torch.tensor(counts, dtype=torch.float64, device=device)
        ctx.all_reduce_sum(totals)
        loss_sum, correct, seen, skipped = (float(v) for v in totals)
        return {"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_top1": 100.0 * correct / max(seen, 1),
                "lr": lr, "seconds": time.perf_counter() - start, "data_seconds": data_wait, "items": int(seen),
                "skipped": int(skipped)}

    def _check_finite(self, epoch: int, step: int, last_step: int) -> None:
        """Stop with a named error if a loss of this epoch was not finite (on any rank)."""
        if self.opts.skip_nonfinite:
            return
        found = self.watch.first(self.ctx)
        if found is None:
            return
        batch, value, optimizer_step = found
        where = (f"loss is {value} at epoch {epoch + 1}/{self.job.recipe.epochs}, batch {batch}/{last_step} "
                 f"(optimizer step {optimizer_step})" if batch else
                 f"another rank's loss was not finite by epoch {epoch + 1}/{self.job.recipe.epochs}, batch {step}")
        raise NonFiniteLossError(
            f"{self.job.name}: {where}, seen at batch {step}; no checkpoint holds a step after it. "
            "train.skip_nonfinite=true skips such steps and counts them in the records")

    def _step(self, inputs: Tensor, labels: Tensor, epoch: int, step: int, last_step: int):
        """Forward, loss, backward, optimizer and lr step; (loss, logits, labels), or a None
        loss for a non-finite step that ``train.skip_nonfinite`` skips."""
        job, device, opts = self.job, self.ctx.device, self.opts
        inputs = inputs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        if opts.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        dtype = self.precision.dtype
        with (torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()):
            if self.frozen is not None:
                with torch.no_grad():
                    inputs = self.frozen(inputs)
            logits = self.net(inputs)
        loss = job.loss_fn(logits, labels)   # activations compute losses in float32
        if opts.skip_nonfinite:              # the verdict is needed now: a host sync per step
            if not _all_finite(loss, self.ctx, True):
                self.optimizer.zero_grad(set_to_none=True)
                return None, logits, labels
        else:                                # noted on the device, read every few steps
            self.watch.observe(loss, step, self.scheduler.last_epoch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss, logits, labels


class CheckpointHook(Hook):
    """Save atomically after every epoch and, on SIGTERM, mid-epoch (``resume=true`` continues)."""

    def after_epoch(self, trainer: Trainer, stats: dict) -> None:
        self._save(trainer)
        failpoint(f"{trainer.job.name}.epoch_end:{stats['epoch']}")

    def on_interrupt(self, trainer: Trainer) -> None:
        self._save(trainer)

    @staticmethod
    def _save(trainer: Trainer) -> None:
        job, progress = trainer.job, trainer.progress
        if trainer.ctx.is_main:
            save_checkpoint(job.checkpoint_path, {**job.meta, "stage": job.name, **trainer.state()},
                            label=f"{job.name}:{progress['epochs_done']}{'+' if 'in_epoch' in progress else ''}")
        trainer.ctx.barrier()


class EvalHook(Hook):
    """The evaluation split's scalar metrics (top-1, top-5, many/medium/few, ECE, NLL, Brier,
    ...) every ``every`` epochs, into the epoch's record as ``test_<metric>``."""

    def __init__(self, evaluate: Callable[[], dict], every: int):
        self.evaluate, self.every = evaluate, every

    def after_epoch(self, trainer: Trainer, stats: dict) -> None:
        if stats["epoch"] % self.every == 0:
            metrics = self.evaluate()
            stats.update({f"test_{k}": float(v) for k, v in metrics.items()
                          if k != "select_top1" and isinstance(v, float) and math.isfinite(v)})
            stats["eval_split"] = trainer.opts.eval_split          # what test_* are of (eval.split)
            if "select_top1" in metrics:             # the split that chooses the best epoch
                stats["select_top1"] = metrics["select_top1"]


class ReportHook(Hook):
    """The epoch's log line and, on rank 0, the epoch for the run's log: metrics.csv rebuilt
    from the stage's history when it (re)starts, then a row and the tagged scalars per epoch
    (``run_logs``).  Without a run log (a stage trained outside a pipeline), TensorBoard curves
    in the job's ``log_dir``."""

    def __init__(self, run_log: RunLog | None):
        self.run_log = run_log if run_log is not None else RunLog(None, trackers=[TensorBoard()])
        self.started = False

    def before_train(self, trainer: Trainer) -> None:
        if trainer.ctx.is_main:
            self.run_log.start_stage(trainer.job.index, trainer.job.log_dir, trainer.progress)
            self.started = True

    def after_epoch(self, trainer: Trainer, stats: dict) -> None:
        job = trainer.job
        split = trainer.opts.eval_split
        test = f", {split} top1 {stats['test_top1']:.2f}%" if "test_top1" in stats else ""
        log.info("%s epoch %d/%d: loss %.4f, train top1 %.2f%%, lr %.3g, %.1f s (%.0f items/s, %.0f%% waiting "
                 "for data)%s", job.name, stats["epoch"], job.recipe.epochs, stats["loss"], stats["train_top1"],
                 stats["lr"], stats["seconds"], stats["items"] / max(stats["seconds"], 1e-9),
                 100 * stats["data_seconds"] / max(stats["seconds"], 1e-9), test)
        if self.started:
            self.run_log.log_epoch(job.index, stats)

    def after_train(self, trainer: Trainer) -> None:
        if self.started:
            self.run_log.end_stage(trainer.job.index)
            self.started = False


def fit(job: StageJob, ctx: DistContext, opts: TrainOptions) -> dict:
    """Train ``job`` for ``job.recipe.epochs`` epochs with the standard hooks; its progress record.
    Hook order: the evaluation's metrics join the epoch's record before it is reported and saved."""
    evaluation = [EvalHook(job.evaluate, opts.eval_every)] if job.evaluate is not None and opts.eval_every else []
    return Trainer(job, ctx, opts, [*evaluation, ReportHook(opts.run_log), CheckpointHook()]).fit()


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


# Steps between host reads of the non-finite watch: a diverged run stops within this many steps
# (with skip_nonfinite=false every step is taken, so the read needs no per-step host sync).
NONFINITE_CHECK_EVERY = 25


class _NonFiniteWatch:
    """The epoch's first non-finite loss, noted on the device without a host sync: its batch
    (0: none yet), value and optimizer step."""

    def __init__(self, device: torch.device):
        self.state = torch.zeros(3, dtype=torch.float64, device=device)

    def observe(self, loss: Tensor, step: int, optimizer_step: int) -> None:
        bad = (~torch.isfinite(loss.detach())) & (self.state[0] == 0)
        noted = torch.stack([torch.full_like(self.state[0], step), loss.detach().double(),
                             torch.full_like(self.state[0], optimizer_step)])
        self.state = torch.where(bad, noted, self.state)

    def first(self, ctx: DistContext) -> tuple[int, float, int] | None:
        """(batch, loss, optimizer step) of this rank's first non-finite loss, (0, nan, 0) when
        only another rank saw one, None when no rank did (a collective under DDP)."""
        batch, value, optimizer_step = self.state.tolist()
        seen = torch.tensor([1 if batch else 0], device=self.state.device)
        if ctx.is_distributed:
            torch.distributed.all_reduce(seen, op=torch.distributed.ReduceOp.MAX)
        if not seen.item():
            return None
        return int(batch), value, int(optimizer_step)


def _all_finite(loss: Tensor, ctx: DistContext, agree: bool) -> bool:
    """Is the loss finite?  When steps may be skipped, all ranks must agree on skipping,
    or one rank would wait forever in the gradient all-reduce of the others."""
    finite = torch.isfinite(loss.detach()).to(torch.int32).reshape(1)
    if agree and ctx.is_distributed:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite.item())
