"""VideoMAE pre-training on pseudo-motion videos: images -> random resized crop -> PMG -> tube mask -> loss
(or the spec's other video sources: moving shapes, MoSI, a mix; pmgflow/sources).

Every source runs on the training device inside the loop (no video is ever decoded or stored). Every random
draw (data order, crops, motions, masks, drop path) comes from streams seeded by (seed, epoch), so a resumed
run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from pmgflow.data.images import ImageBank
from pmgflow.data.store import store_size
from pmgflow.data.video import to_device
from pmgflow.errors import PmgflowError
from pmgflow.model.checkpoints import checkpoint_state, save_checkpoint
from pmgflow.model.config import VideoViTConfig
from pmgflow.model.videomae import VideoMAE
from pmgflow.sources.mix import VideoClips
from pmgflow.spec.train import PretrainSpec
from pmgflow.train.loop import (EpochCallback, StepProgress, autocast, build_optimizer, build_scheduler,
                                configure_threads, distributed_context, fit, resolve_device, run_steps, stream_seed)
from pmgflow.train.rundir import RunDir


def build_videomae(spec: PretrainSpec) -> VideoMAE:
    """The VideoMAE model of a pre-training spec."""
    return VideoMAE(VideoViTConfig.from_spec(spec.model), mask_ratio=spec.mask_ratio,
                    norm_pix_loss=spec.norm_pix_loss, decoder_mask_ratio=spec.decoder_mask_ratio)


def steps_per_epoch(spec: PretrainSpec, num_images: int) -> int:
    """Optimizer steps per epoch: clips per epoch (default one per image) over the batch size, at least 1."""
    return max((spec.clips_per_epoch or num_images) // spec.batch_size, 1)


class RealClips:
    """Clips of a real video dataset, mixed into pre-training batches (the paper's real + PMG setting).

    They come through the same loader as fine-tuning (decoded once or streamed, per `spec.loader`), drawn in
    an order seeded by (seed, rank, epoch): `micro_batches` batches of round(ratio * micro) clips per epoch.
    """

    def __init__(self, spec: PretrainSpec, device: torch.device, micro: int, micro_batches: int, rank: int = 0):
        from pmgflow.data.layouts import index_dataset
        from pmgflow.data.store import open_videos
        from pmgflow.data.video import ClipDataset, clip_loader

        mix, model = spec.real_mix, spec.model
        (videos,), _ = open_videos([index_dataset(mix.dataset, "train")], store_size(model.img_size),
                                   spec.loader)
        data = ClipDataset(videos, frames=model.frames, stride=mix.stride, size=model.img_size, train=True,
                           seed=spec.seed)
        self.k, self.device = round(mix.ratio * micro), device
        self.loader = clip_loader(data, self.k, spec.loader, device, seed=stream_seed(spec.seed, rank, 3),
                                  length=micro_batches * self.k) if self.k else None
        self._batches = iter(())

    def start_epoch(self, epoch: int) -> None:
        """Draw this epoch's clips (call before its first batch)."""
        if self.loader is not None:
            self.loader.sampler.set_epoch(epoch)
            self._batches = iter(self.loader)

    def replace(self, videos: torch.Tensor) -> torch.Tensor:
        """Replace the first round(ratio * B) videos of the batch by real clips."""
        if self.k:
            videos[: self.k] = to_device(next(self._batches)[0], self.device)
        return videos


def pretrain(spec: PretrainSpec, *, root: Path | None = None, on_epoch: EpochCallback | None = None,
             progress: StepProgress | None = None, bank: ImageBank | None = None,
             device: torch.device | None = None) -> dict[str, Any]:
    """Pre-train (or resume, or return the finished result of) the run of `spec`; returns its result dict.

    Inside an initialized torch.distributed job (a Ray Train worker, torchrun) it trains data-parallel:
    `batch_size` is the total over ranks, each rank generates its own share of the batch, rank 0 writes.
    """
    run = RunDir.for_spec("pretrain", spec, root)
    single = distributed_context()[1] == 1
    train = lambda: _pretrain_run(run, spec, on_epoch, progress, bank, device)  # noqa: E731
    if spec.schedule != "constant":
        # The ranks of one distributed job share its run directory: no lock among them.
        return run.run_once(train, lock=single)
    run.keep_epochs = True
    if not single:  # a rank of a data-parallel job: the trial process holds the chain's lock (trial.py)
        return run.run_once(train, lock=False)
    with shared_prefix(run, spec):
        return run.run_once(train)


def prefix_donor(spec: PretrainSpec, run: RunDir) -> tuple[RunDir, int] | None:
    """The run of the same chain under the runs root whose kept epochs go furthest, up to spec.epochs: (run, its
    last kept epoch below spec.epochs), if it is beyond this run's own progress."""
    import yaml

    key, best = spec.prefix_key, None
    own = max(run.kept_epochs(), default=-1)
    for other in RunDir.under(run.path.parent):
        if other.path == run.path or not other.path.name.startswith("pretrain-"):
            continue
        try:
            other_spec = PretrainSpec.model_validate(yaml.safe_load((other.path / "spec.yaml").read_text()))
        except Exception:  # a foreign or half-written directory: not a donor
            continue
        if other_spec.schedule != "constant" or other_spec.prefix_key != key:
            continue
        kept = [e for e in other.kept_epochs() if e < spec.epochs]
        if kept and kept[-1] > own and (best is None or kept[-1] > best[1]):
            best = (other, kept[-1])
    return best


@contextlib.contextmanager
def shared_prefix(run: RunDir, spec: PretrainSpec) -> Iterator[None]:
    """Hold the chain's lock (runs that differ only in epochs train one after the other) and start `run` from
    the furthest epoch another run of the chain reached, so that no epoch of the chain is computed twice."""
    from filelock import FileLock

    folder = run.path.parent / ".locks"
    folder.mkdir(exist_ok=True)
    with FileLock(folder / f"pretrain-chain-{spec.prefix_key}.lock"):
        if run.result() is None and (donor := prefix_donor(spec, run)) is not None:
            run.continue_from(*donor)
        yield


def _pretrain_run(run: RunDir, spec: PretrainSpec, on_epoch: EpochCallback | None, progress: StepProgress | None,
                  bank: ImageBank | None, device: torch.device | None) -> dict[str, Any]:
    rank, world = distributed_context()
    if spec.batch_size % (world * spec.accum_steps):
        raise PmgflowError(f"batch_size {spec.batch_size} is not divisible by {world} ranks x "
                           f"{spec.accum_steps} accumulation steps")
    configure_threads(spec.threads)
    device = device or resolve_device(spec.device)
    torch.manual_seed(spec.seed)  # same initial weights on every rank
    model = build_videomae(spec).to(device)
    net = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if spec.compile:  # only the forward is compiled: checkpoints hold `model`'s own keys
        net = torch.compile(net)
    optimizer = build_optimizer(model, spec)
    clips = VideoClips(spec, bank)
    steps = steps_per_epoch(spec, len(clips))
    scheduler = build_scheduler(optimizer, spec, steps)
    per_rank = spec.batch_size // world
    micro = per_rank // spec.accum_steps
    real = RealClips(spec, device, micro, steps * spec.accum_steps, rank) if spec.real_mix else None

    if progress:
        progress(0, total=spec.epochs * steps)

    # One video buffer for every micro-batch: each is consumed (forward and backward) before the next is made.
    buffer = torch.empty(micro, 3, spec.pmg.frames, spec.pmg.size, spec.pmg.size, device=device)

    def train_epoch(epoch: int) -> dict[str, float]:
        model.train()
        # The data order is shared by all ranks; crops, motions and masks are drawn per rank.
        order_g = torch.Generator().manual_seed(stream_seed(spec.seed, epoch, 1))
        order = torch.cat([torch.randperm(len(clips), generator=order_g)
                           for _ in range(math.ceil(steps * spec.batch_size / len(clips)))])
        g = torch.Generator().manual_seed(stream_seed(spec.seed, epoch, 2, rank))
        if real is not None:
            real.start_epoch(epoch)

        def micro_loss(step: int, k: int) -> tuple[torch.Tensor, int]:
            at = step * spec.batch_size + rank * per_rank + k * micro
            videos = clips.clips(order[at: at + micro], g, device, out=buffer)
            if real is not None:
                videos = real.replace(videos)
            mask = model.tube_mask(micro, "cpu", generator=g).to(device)
            decoder_mask = (model.running_cell_mask(micro, "cpu", generator=g).to(device)
                            if spec.decoder_mask_ratio else None)
            with autocast(device):
                loss, _, _ = net(videos, mask=mask, decoder_mask=decoder_mask)
            return loss, micro * world

        return run_steps("pretrain", epoch, steps, spec, model, optimizer, scheduler, micro_loss, run, progress)

    history = fit(run, model, optimizer, spec.epochs, spec.seed, train_epoch, on_epoch)
    weights = run.model_path
    last = history[-1] if history else {}
    result = {"stage": "pretrain", "run_dir": str(run.path), "checkpoint": str(weights),
              "epochs": spec.epochs, "pretrain_loss": last.get("pretrain_loss"),
              "clips_per_s": last.get("clips_per_s"), "images": len(clips), "ranks": world,
              "seconds": sum(h.get("epoch_seconds", 0.0) for h in history)}
    if rank != 0:
        return result
    save_checkpoint(weights, checkpoint_state(model, spec=spec.model_dump(mode="json")))
    return run.finish(result)
