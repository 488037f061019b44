"""ModelSpec: the video ViT and its VideoMAE decoder, from a named preset with every field overridable.

The models take the same architecture as a :class:`pmgflow.model.config.VideoViTConfig`
(``VideoViTConfig.from_spec(spec.model)``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pmgflow.spec.base import Spec

# tiny and small are sized for a CPU (design.md: ~300 and ~66 pre-training clips/s on 2 threads);
# base is the paper's ViT-B/16 at 16x224x224 with VideoMAE's 384x4 decoder; large is ViT-L/16.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(frames=8, img_size=32, tubelet=2, patch=4, embed_dim=128, depth=4, num_heads=4,
                 decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4),
    "small": dict(frames=16, img_size=64, tubelet=2, patch=8, embed_dim=192, depth=6, num_heads=3,
                  decoder_embed_dim=96, decoder_depth=2, decoder_num_heads=3),
    "base": dict(frames=16, img_size=224, tubelet=2, patch=16, embed_dim=768, depth=12, num_heads=12,
                 decoder_embed_dim=384, decoder_depth=4, decoder_num_heads=6),
    "large": dict(frames=16, img_size=224, tubelet=2, patch=16, embed_dim=1024, depth=24, num_heads=16,
                  decoder_embed_dim=512, decoder_depth=4, decoder_num_heads=8),
}


class ModelSpec(Spec):
    """Video ViT encoder (+ VideoMAE decoder for pre-training). Unset fields come from the preset."""

    preset: Literal["tiny", "small", "base", "large"] = Field("tiny", description="Named size; fields below override it.")
    frames: int = Field(description="Frames per clip (T).", ge=2)
    img_size: int = Field(description="Frame height and width.", ge=8)
    tubelet: int = Field(description="Frames per tubelet (temporal patch size).", ge=1)
    patch: int = Field(description="Spatial patch size.", ge=1)
    embed_dim: int = Field(description="Encoder width.", ge=8)
    depth: int = Field(description="Encoder blocks.", ge=1)
    num_heads: int = Field(description="Encoder attention heads.", ge=1)
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden width / width.")
    decoder_embed_dim: int = Field(description="VideoMAE decoder width.", ge=8)
    decoder_depth: int = Field(description="VideoMAE decoder blocks.", ge=1)
    decoder_num_heads: int = Field(description="VideoMAE decoder heads.", ge=1)

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        if isinstance(data, dict):
            preset = data.get("preset", "tiny")
            if preset in PRESETS:
                data = {**PRESETS[preset], **data}
        return data

    @model_validator(mode="after")
    def _check_shapes(self) -> "ModelSpec":
        if self.img_size % self.patch:
            raise ValueError(f"img_size {self.img_size} is not a multiple of patch {self.patch}")
        if self.frames % self.tubelet:
            raise ValueError(f"frames {self.frames} is not a multiple of tubelet {self.tubelet}")
        if self.embed_dim % self.num_heads or self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError("embed_dim must be a multiple of num_heads (and decoder_embed_dim of decoder_num_heads)")
        return self
