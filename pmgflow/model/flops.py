"""FLOPs of a training step (forward + backward) per clip, counted by torch's FlopCounterMode on the meta device.

The meta device runs every operator on shapes alone, so counting ViT-B costs milliseconds and no memory. Counted
are matrix products, convolutions and attention (on the meta device attention runs as two batched matmuls, the
same count as torch's formula for fused attention); element-wise work (norms, activations, AdamW) is not,
as is usual for model FLOP utilisation (MFU = achieved FLOP/s / peak FLOP/s of the chip).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pmgflow.model.config import VideoViTConfig
from pmgflow.model.videomae import VideoMAE
from pmgflow.model.vit import VideoViT
from pmgflow.spec.model import ModelSpec


def clip_flops(model: nn.Module, loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> int:
    """FLOPs of loss_fn(model, videos).backward() for one clip, run on a meta-device copy of model."""
    meta = copy.deepcopy(model).to("meta").train()
    c = model.config
    videos = torch.empty(1, c.in_chans, c.frames, c.img_size, c.img_size, device="meta")
    with FlopCounterMode(display=False) as counter:
        loss_fn(meta, videos).backward()
    return counter.get_total_flops()


def pretrain_flops_per_clip(model: VideoMAE) -> int:
    """Training FLOPs of one pre-training clip (tube mask at the model's ratio, decoder masking as configured)."""
    return clip_flops(model, lambda m, videos: m(videos)[0])


def finetune_flops_per_clip(model: VideoViT) -> int:
    """Training FLOPs of one fine-tuning clip (classifier forward, cross-entropy, backward)."""
    label = torch.zeros(1, dtype=torch.long, device="meta")
    return clip_flops(model, lambda m, videos: F.cross_entropy(m(videos), label))


def preset_flops_per_clip(preset: str = "base", mask_ratio: float = 0.75, num_classes: int = 101,
                          decoder_mask_ratio: float = 0.0) -> dict[str, int]:
    """Training FLOPs per clip of a model preset, {"pretrain": ..., "finetune": ...} (base: ViT-B/16, 16x224x224).

    A chip's peak FLOP/s times the expected MFU, divided by these, projects its clips/s.
    """
    config = VideoViTConfig.from_spec(ModelSpec(preset=preset))
    # Built on the CPU (initialisation needs values), then moved to meta: the copies counted are free.
    mae = VideoMAE(config, mask_ratio=mask_ratio, decoder_mask_ratio=decoder_mask_ratio).to("meta")
    vit = VideoViT(config, num_classes=num_classes).to("meta")
    return {"pretrain": pretrain_flops_per_clip(mae), "finetune": finetune_flops_per_clip(vit)}
