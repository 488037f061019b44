"""Models: their architecture config, the video ViT (encoder and classifier), VideoMAE pre-training, checkpoints.

Checkpoint interop with transformers lives in :mod:`pmgflow.model.interop` (optional dependency, imported there).
"""

from pmgflow.model.checkpoints import (
    build_model_from_checkpoint,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)
from pmgflow.model.config import VideoViTConfig
from pmgflow.model.videomae import VideoMAE, load_encoder
from pmgflow.model.vit import VideoViT

__all__ = [
    "VideoMAE",
    "VideoViT",
    "VideoViTConfig",
    "build_model_from_checkpoint",
    "checkpoint_state",
    "load_checkpoint",
    "load_encoder",
    "save_checkpoint",
]
