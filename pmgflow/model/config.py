"""VideoViTConfig: the architecture of the video ViT and of VideoMAE's decoder, in one object.

The models take it (``VideoViT(config, ...)``, ``VideoMAE(config, ...)``), a spec's ``model`` becomes one
(:meth:`VideoViTConfig.from_spec`), checkpoints store it as the flat ``model_config`` dict they always held
(:meth:`VideoViTConfig.split` reads one back), and :mod:`pmgflow.model.interop` maps it to and from transformers'
``VideoMAEConfig``. The defaults are the paper's ViT-B/16 at 16x224x224 with VideoMAE's 384x4 decoder.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

DECODER_FIELDS = ("decoder_embed_dim", "decoder_depth", "decoder_num_heads")


@dataclass(frozen=True)
class VideoViTConfig:
    """Clip shape, tubelets, encoder width and depth; the ``decoder_*`` fields are used by VideoMAE only."""

    img_size: int = 224
    frames: int = 16
    tubelet: int = 2
    patch: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0  # encoder and decoder alike, as in VideoMAE
    qkv_bias: bool = True
    decoder_embed_dim: int = 384
    decoder_depth: int = 4
    decoder_num_heads: int = 6

    @classmethod
    def from_spec(cls, spec) -> "VideoViTConfig":
        """The architecture a :class:`~pmgflow.spec.model.ModelSpec` describes (in_chans and qkv_bias: defaults)."""
        return cls.split(spec.model_dump())[0]

    @classmethod
    def split(cls, values: dict[str, Any]) -> tuple["VideoViTConfig", dict[str, Any]]:
        """(config of the architecture fields in ``values``, the other entries): reads a checkpoint's
        ``model_config``, whose other entries are the model's own settings (``num_classes``, ``mask_ratio``, ...).
        Fields missing from ``values`` take their defaults."""
        names = {f.name for f in fields(cls)}
        return (cls(**{k: v for k, v in values.items() if k in names}),
                {k: v for k, v in values.items() if k not in names})

    def encoder_dict(self) -> dict[str, Any]:
        """The encoder's fields (what a VideoViT checkpoint stores)."""
        return {k: v for k, v in asdict(self).items() if k not in DECODER_FIELDS}

    def as_dict(self) -> dict[str, Any]:
        """Every field (what a VideoMAE checkpoint stores)."""
        return asdict(self)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Tokens along (time, height, width)."""
        return self.frames // self.tubelet, self.img_size // self.patch, self.img_size // self.patch

    @property
    def patch_dim(self) -> int:
        """Pixels of one tubelet: tubelet * patch * patch * in_chans."""
        return self.tubelet * self.patch * self.patch * self.in_chans
