"""Fine-tuning (or linear probing) of the video ViT on action recognition, from a checkpoint or from scratch.

VideoMAE's recipe: mean pooling + LayerNorm + linear head, layer-wise lr decay, drop path, label smoothing,
mixup/cutmix (timm's), and multi-view testing (temporal segments x spatial crops, softmax averaged).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy
from torch.utils.data import DataLoader

from pmgflow.data.layouts import index_dataset
from pmgflow.data.store import open_videos, store_size
from pmgflow.data.video import ClipDataset, clip_loader, limit_per_class, to_device
from pmgflow.errors import PmgflowError
from pmgflow.model.checkpoints import checkpoint_state, load_checkpoint, save_checkpoint
from pmgflow.model.config import VideoViTConfig
from pmgflow.model.videomae import load_encoder
from pmgflow.model.vit import VideoViT
from pmgflow.spec.train import FinetuneSpec
from pmgflow.train.loop import (EpochCallback, StepProgress, autocast, build_optimizer, build_scheduler,
                                configure_threads, fit, resolve_device, run_steps, stream_seed)
from pmgflow.train.rundir import RunDir

log = logging.getLogger(__name__)


def build_classifier(spec: FinetuneSpec, num_classes: int, init: Path | None) -> tuple[VideoViT, dict[str, Any]]:
    """The VideoViT to fine-tune: the init checkpoint's encoder (VideoMAE or VideoViT) or a fresh one."""
    settings = dict(num_classes=num_classes, drop_path_rate=spec.drop_path, init_scale=spec.head_init_scale)
    if init is None:
        return VideoViT(VideoViTConfig.from_spec(spec.model), **settings), {"init": "scratch"}
    ckpt = load_checkpoint(init)
    config = ckpt.get("model_config")
    if not isinstance(config, dict) or "model" not in ckpt:
        raise PmgflowError(f"checkpoint {init} has no model_config/model entries (is it a pmgflow checkpoint? "
                           "official VideoMAE and transformers weights go through `pmgflow import` first)")
    model = VideoViT(VideoViTConfig.split(config)[0], **settings)
    state = ckpt["model"]
    if ckpt.get("kind") == "finetune":  # re-tune a classifier: keep its encoder, new head
        state = {k: v for k, v in state.items() if not k.startswith(("head.", "fc_norm."))}
    missing, unexpected = load_encoder(model, state)
    return model, {"init": str(init), "missing_keys": len(missing), "unexpected_keys": len(unexpected)}


def mix_batch(mixup: Mixup, videos: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """timm's mixup/cutmix on a batch of videos (B, C, T, H, W): (videos, soft targets with label smoothing).

    timm mixes pairs of samples: a batch of odd size (the last of an epoch, say) keeps its videos and gets the
    smoothed one-hot targets, so that its loss is the same label-smoothed cross-entropy as every other batch's.
    """
    if videos.shape[0] % 2:
        return videos, mixup_target(labels, mixup.num_classes, smoothing=mixup.label_smoothing)
    # timm's mixup boxes the last two dims: fold time into channels so boxes span H x W.
    b, c, t, h, w = videos.shape
    mixed, labels = mixup(videos.reshape(b, c * t, h, w), labels)
    return mixed.view(b, c, t, h, w), labels


@torch.no_grad()
def evaluate(model: VideoViT, loader: DataLoader, device: torch.device,
             progress: StepProgress | None = None) -> dict[str, Any]:
    """Top-1 of the centre view alone and of all views (softmax averaged), in percent, and which test videos
    each got right (`correct_single`, `correct`: 0/1 per video in the test set's order, for a bootstrap interval).

    Hits stay on the device and are read once at the end (no host synchronisation per batch).
    """
    model.eval()
    data: ClipDataset = loader.dataset
    centre = (data.segments // 2) * data.crops + data.crops // 2
    single: list[torch.Tensor] = []
    multi: list[torch.Tensor] = []
    for views, labels in loader:
        b, v = views.shape[:2]
        with autocast(device):
            logits = model(to_device(views.flatten(0, 1), device))
        probs = logits.float().softmax(-1).view(b, v, -1)
        labels = labels.to(device, non_blocking=True)
        single.append(probs[:, centre].argmax(-1) == labels)
        multi.append(probs.mean(1).argmax(-1) == labels)
        if progress:
            progress(0, info=f"testing {sum(len(s) for s in single)}/{len(data)}")
    hits = {name: (torch.cat(h).int().tolist() if h else []) for name, h in (("correct", multi),
                                                                           ("correct_single", single))}
    total = max(len(hits["correct"]), 1)
    return {"top1": 100 * sum(hits["correct"]) / total, "top1_single": 100 * sum(hits["correct_single"]) / total,
            **hits}


def finetune(spec: FinetuneSpec, *, root: Path | None = None, on_epoch: EpochCallback | None = None,
             progress: StepProgress | None = None) -> dict[str, Any]:
    """Fine-tune (or resume, or return the finished result of) the run of `spec`; returns its result dict."""
    run = RunDir.for_spec("finetune", spec, root)
    return run.run_once(lambda: _finetune_run(run, spec, on_epoch, progress))


def _finetune_run(run: RunDir, spec: FinetuneSpec, on_epoch: EpochCallback | None,
                  progress: StepProgress | None) -> dict[str, Any]:
    configure_threads(spec.threads)
    device = resolve_device(spec.device)
    train_index, test_index = index_dataset(spec.dataset, "train"), index_dataset(spec.dataset, "test")
    if spec.train_fraction is not None or spec.per_class is not None:
        train_index = limit_per_class(train_index, spec.train_fraction, spec.per_class, seed=spec.seed)
    num_classes = len(train_index.classes)
    torch.manual_seed(spec.seed)
    model, init_info = build_classifier(spec, num_classes, spec.init)
    frames, size = model.config.frames, model.config.img_size
    (train_videos, test_videos), plan = open_videos([train_index, test_index], store_size(size),
                                                    spec.loader)
    log.info("%s", plan.describe())
    train_data = ClipDataset(train_videos, frames=frames, stride=spec.stride, size=size, train=True,
                             seed=spec.seed, scale=tuple(spec.crop_scale))
    test_data = ClipDataset(test_videos, frames=frames, stride=spec.stride, size=size, train=False,
                            segments=spec.test_segments, crops=spec.test_crops)
    model.to(device)
    if spec.mode == "linear":  # linear probe: only the classifier (fc_norm + head) learns
        for name, p in model.named_parameters():
            p.requires_grad = name.startswith(("head.", "fc_norm."))
    optimizer = build_optimizer(model, spec, layer_decay=spec.layer_decay if spec.mode == "full" else None)
    net = torch.compile(model) if spec.compile else model  # the training forward; checkpoints hold `model`'s keys
    micro = spec.batch_size // spec.accum_steps
    steps = max(len(train_data) // spec.batch_size, 1)
    scheduler = build_scheduler(optimizer, spec, steps)
    use_mix = spec.mixup > 0 or spec.cutmix > 0
    mixup = Mixup(mixup_alpha=spec.mixup, cutmix_alpha=spec.cutmix, prob=spec.mixup_prob,
                  label_smoothing=spec.label_smoothing, num_classes=num_classes) if use_mix else None
    criterion = SoftTargetCrossEntropy() if use_mix else torch.nn.CrossEntropyLoss(label_smoothing=spec.label_smoothing)

    if progress:
        progress(0, total=spec.epochs * steps)

    # Exactly the clips an epoch's steps consume, so no worker decodes clips that are thrown away.
    train_loader = clip_loader(train_data, micro, spec.loader, device, seed=stream_seed(spec.seed, 1),
                               length=steps * spec.batch_size)
    test_loader = clip_loader(test_data, micro, spec.loader, device)

    def train_epoch(epoch: int) -> dict[str, float]:
        model.train()
        train_loader.sampler.set_epoch(epoch)
        batches = iter(train_loader)

        def micro_loss(step: int, k: int) -> tuple[torch.Tensor, int]:
            videos, labels = next(batches)
            videos, labels = to_device(videos, device), labels.to(device, non_blocking=True)
            if mixup is not None:
                videos, labels = mix_batch(mixup, videos, labels)
            with autocast(device):
                loss = criterion(net(videos).float(), labels)
            return loss, videos.shape[0]

        metrics = run_steps("finetune", epoch, steps, spec, model, optimizer, scheduler, micro_loss, run, progress)
        if spec.eval_every and (epoch + 1) % spec.eval_every == 0 and epoch + 1 < spec.epochs:
            tested = evaluate(model, test_loader, device)
            metrics.update(top1=tested["top1"], top1_single=tested["top1_single"])
        return metrics

    history = fit(run, model, optimizer, spec.epochs, spec.seed, train_epoch, on_epoch)
    scores = evaluate(model, test_loader, device, progress=progress)
    weights = save_checkpoint(run.model_path, checkpoint_state(model, classes=train_data.classes))
    kept = {it.path for it in train_data.items} | {it.path for it in test_data.items}
    skipped = [str(it.path) for it in train_index.items + test_index.items if it.path not in kept]
    return run.finish({"stage": "finetune", "run_dir": str(run.path), "checkpoint": str(weights), **scores,
                       "classes": num_classes, "train_videos": len(train_data), "test_videos": len(test_data),
                       "epochs": spec.epochs, "finetune_loss": history[-1]["finetune_loss"] if history else None,
                       "skipped_videos": skipped, **init_info,
                       "seconds": sum(h.get("epoch_seconds", 0.0) for h in history)})
