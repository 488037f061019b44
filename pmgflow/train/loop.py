"""What both training stages share: device and threads, optimizer and schedule, seeds, and the epoch loop over
a run directory (:mod:`pmgflow.train.rundir`) that checkpoints every epoch, resumes an interrupted run exactly, and
never recomputes a finished one."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler

from pmgflow.errors import PmgflowError
from pmgflow.spec.train import OptimSpec
from pmgflow.train.rundir import RunDir

EpochCallback = Callable[[int, dict[str, float]], None]
StepProgress = Callable[..., None]


class TrainingError(PmgflowError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch understands it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PmgflowError(f"device {name!r} was asked for, but no CUDA device is available")
    return device


def configure_threads(threads: int | None) -> int:
    """Set torch's CPU threads: the spec's, else OMP_NUM_THREADS (Ray sets it per trial), else the CPUs given."""
    n = threads or int(os.environ.get("OMP_NUM_THREADS", 0)) or len(os.sched_getaffinity(0))
    torch.set_num_threads(n)
    return n


def stream_seed(*parts: int) -> int:
    """A 63-bit seed derived from (seed, epoch, stream, ...): independent, reproducible random streams."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch global generators (dropout, drop path, timm's mixup draw from them)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_optimizer(model: torch.nn.Module, spec: OptimSpec, layer_decay: float | None = None):
    """AdamW through timm: no decay on norms, biases and position tables; optional layer-wise lr decay.

    Call it after the model is on its device: on CUDA (with `fused_adamw`) the step is one fused kernel.
    """
    on_cuda = next(model.parameters()).device.type == "cuda"
    fused = {"fused": True} if spec.fused_adamw and on_cuda else {}  # timm passes it on to torch.optim.AdamW
    return create_optimizer_v2(model, "adamw", lr=spec.lr, weight_decay=spec.weight_decay, betas=tuple(spec.betas),
                               layer_decay=layer_decay, **fused)


def build_scheduler(optimizer, spec: OptimSpec, steps_per_epoch: int) -> CosineLRScheduler:
    """Per-step cosine (or, with `schedule: constant`, flat) schedule after a linear warm-up (call
    `step_update(global_step)` before each step)."""
    total = max(spec.epochs * steps_per_epoch, 1)
    if getattr(spec, "schedule", "cosine") == "constant":
        # Flat at the peak after the warm-up, whatever the total: step s has the same lr in a run of any length.
        warmup = int(spec.warmup_epochs * steps_per_epoch)
        return CosineLRScheduler(optimizer, t_initial=max(total - warmup, 1), lr_min=spec.lr, warmup_t=warmup,
                                 warmup_lr_init=spec.min_lr, warmup_prefix=True, t_in_epochs=False)
    warmup = min(int(spec.warmup_epochs * steps_per_epoch), total - 1)
    # warmup_prefix: the cosine starts after the warm-up and ends at min_lr on the last step.
    return CosineLRScheduler(optimizer, t_initial=total - warmup, lr_min=spec.min_lr, warmup_t=warmup,
                             warmup_lr_init=spec.min_lr, warmup_prefix=True, t_in_epochs=False)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_finite(loss: float, epoch: int, step: int, run: RunDir) -> None:
    """Stop with a clear error on a NaN/inf loss; the last epoch's checkpoint stays as it was."""
    if not math.isfinite(loss):
        last = run.last_path if run.last_path.is_file() else None
        kept = f"the last good checkpoint is {last}" if last else "no epoch had finished, so no checkpoint was kept"
        raise TrainingError(f"loss became {loss} at epoch {epoch}, step {step} ({run.path}); {kept}. "
                            "Lower blr, add warm-up or set clip_grad.")


def read_losses(pending: list[torch.Tensor], first_step: int, epoch: int, run: RunDir) -> list[float]:
    """Step losses back on the host in one transfer; stops at the first non-finite one."""
    values = torch.stack(pending).tolist()
    for i, value in enumerate(values):
        check_finite(value, epoch, first_step + i, run)
    return values


def distributed_context() -> tuple[int, int]:
    """(rank, world size) of a torch.distributed job (e.g. inside a Ray Train worker); (0, 1) otherwise."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def fit(run: RunDir, model: torch.nn.Module, optimizer, epochs: int, seed: int,
        train_epoch: Callable[[int], dict[str, float]], on_epoch: EpochCallback | None = None,
        extra_state: Callable[[], dict] | None = None) -> list[dict[str, Any]]:
    """Run epochs [resumed epoch, epochs): seed, train, checkpoint, report. Returns the metric history.

    In a distributed job every rank resumes from the same checkpoint and rank 0 alone writes.
    """
    rank, world = distributed_context()
    start = run.resume(model, optimizer)
    for h in run.history:  # a resumed run reports the epochs it already had, so trackers see the whole curve
        if on_epoch:
            on_epoch(h["epoch"], {k: v for k, v in h.items() if k != "epoch"})
    for epoch in range(start, epochs):
        seed_everything(stream_seed(seed, epoch, 0))
        metrics = train_epoch(epoch)
        if rank == 0:
            run.save_epoch(epoch, model, optimizer, metrics, **(extra_state() if extra_state else {}))
        else:
            run.history.append({"epoch": epoch, **metrics})
        if world > 1:
            torch.distributed.barrier()
        if on_epoch and rank == 0:
            on_epoch(epoch, metrics)
    return run.history


def run_steps(stage: str, epoch: int, steps: int, spec: OptimSpec, model: torch.nn.Module, optimizer, scheduler,
              micro_loss: Callable[[int, int], tuple[torch.Tensor, int]], run: RunDir,
              progress: StepProgress | None = None) -> dict[str, float]:
    """One epoch of optimizer steps with gradient accumulation, clipping, NaN checks and progress.

    `micro_loss(step, k)` returns the loss of accumulation micro-batch k of `step` and its number of clips.
    Step losses stay on the device and are read back every `log_every` steps and at the epoch's last step: a
    non-finite loss stops the run there, before the epoch's checkpoint is written.
    """
    losses, pending, clips, start = [], [], 0, time.perf_counter()
    for step in range(steps):
        scheduler.step_update(epoch * steps + step)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for k in range(spec.accum_steps):
            loss, n = micro_loss(step, k)
            (loss / spec.accum_steps).backward()
            # float64 on the device: the same arithmetic as summing Python floats, without a host sync.
            step_loss = step_loss + loss.detach().double() / spec.accum_steps
            clips += n
        if spec.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip_grad)
        optimizer.step()
        pending.append(step_loss)
        if (step + 1) % spec.log_every == 0 or step == steps - 1:
            losses += read_losses(pending, len(losses), epoch, run)
            pending = []
        if progress:
            rate = clips / (time.perf_counter() - start)
            shown = f" loss {losses[-1]:.4f}" if losses else ""
            progress(1, info=f"epoch {epoch + 1}/{spec.epochs}{shown} {rate:.0f} clips/s")
    seconds = time.perf_counter() - start
    return {f"{stage}_loss": sum(losses) / len(losses), "lr": optimizer.param_groups[0]["lr"],
            "clips_per_s": clips / seconds, "epoch_seconds": seconds}
