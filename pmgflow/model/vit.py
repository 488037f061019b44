"""Video ViT: the VideoMAE encoder and, with a head, the fine-tuning classifier.

Follows the reference VideoMAE (Tong et al., NeurIPS 2022): a Conv3d tubelet embedding, a fixed 1-D sinusoid
position table over the flattened (time, height, width) token index, pre-norm timm ``Block``s (fused
``F.scaled_dot_product_attention``), and

* without a head (``num_classes=0``): a final LayerNorm over the tokens, as VideoMAE's pre-training encoder;
* with a head (``num_classes>0``): mean pooling over the tokens, LayerNorm (``fc_norm``), dropout and a linear
  head, as VideoMAE's fine-tuning model (``use_mean_pooling``), which has no final token LayerNorm.

Inputs are videos ``(B, 3, T, H, W)`` with values in [0, 1]; the model normalizes them with the ImageNet mean
and std itself, so data pipelines and the pseudo motion generator never normalize.

The model has timm's interface (``forward_features``, ``forward_head``, ``no_weight_decay``, ``group_matcher``),
so ``timm.optim.create_optimizer_v2(model, "adamw", layer_decay=0.75)`` gives VideoMAE's layer-wise lr scales
``layer_decay ** (depth + 1 - layer_id)``: embeddings are layer 0, block i is layer i + 1, the norms and the head
are layer depth + 1.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn
from torch.utils.checkpoint import checkpoint

from pmgflow.model.config import VideoViTConfig

# VideoMAE uses LayerNorm eps 1e-6 throughout (torch's default is 1e-5).
LayerNorm = partial(nn.LayerNorm, eps=1e-6)


def sinusoid_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed sinusoid position table (1, num_positions, dim): sin on even channels, cos on odd, as in VideoMAE."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    # Channels 2i and 2i+1 share the frequency 1 / 10000^(2i/dim).
    exponent = 2 * (torch.arange(dim, dtype=torch.float64) // 2) / dim
    angle = position / torch.pow(10000.0, exponent)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


def init_linear_layers(module: nn.Module, init: str) -> None:
    """Initialise every Linear (``"trunc_normal"``: std .02 cut at one std, or ``"xavier"``) and LayerNorm in module."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if init == "xavier":
                nn.init.xavier_uniform_(m.weight)
            else:
                # VideoMAE's fine-tuning init truncates at +-1 std, not timm's default +-2 (absolute).
                trunc_normal_(m.weight, std=0.02, a=-0.02, b=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def transformer_blocks(width: int, depth: int, num_heads: int, config: VideoViTConfig,
                       drop_path_rate: float) -> nn.ModuleList:
    """``depth`` pre-norm timm Blocks (the encoder's or the decoder's), with the config's MLP ratio and qkv bias;
    stochastic depth grows linearly with depth up to ``drop_path_rate``."""
    drop_path = torch.linspace(0, drop_path_rate, depth).tolist()
    return nn.ModuleList(
        Block(width, num_heads, mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias, drop_path=dp,
              norm_layer=LayerNorm)
        for dp in drop_path
    )


class TubeletEmbed(nn.Module):
    """Conv3d with kernel = stride = (tubelet, patch, patch): (B, C, T, H, W) -> tokens (B, N, D) in (t, h, w) order."""

    def __init__(self, *, tubelet: int, patch: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
        # As MAE: xavier on the conv seen as a Linear over the flattened tubelet.
        nn.init.xavier_uniform_(self.proj.weight.view(embed_dim, -1))
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed each tubelet."""
        return self.proj(x).flatten(2).transpose(1, 2)


class VideoViT(nn.Module):
    """Video ViT of a :class:`VideoViTConfig` (its encoder fields) over tubelet tokens; a classifier when
    ``num_classes > 0``, else a token encoder (see module doc)."""

    def __init__(
        self,
        config: VideoViTConfig = VideoViTConfig(),
        *,
        drop_path_rate: float = 0.0,
        num_classes: int = 0,
        head_drop_rate: float = 0.0,
        init_scale: float = 0.001,
    ):
        super().__init__()
        c = config
        if c.img_size % c.patch or c.frames % c.tubelet:
            raise ValueError(f"img_size {c.img_size} must be a multiple of patch {c.patch} and frames {c.frames} "
                             f"of tubelet {c.tubelet}")
        if c.in_chans != 3:
            raise ValueError(f"in_chans must be 3 (RGB, normalized with ImageNet mean/std), got {c.in_chans}")
        self.config = config
        self._settings = dict(drop_path_rate=drop_path_rate, num_classes=num_classes, head_drop_rate=head_drop_rate,
                              init_scale=init_scale)
        self.embed_dim = self.num_features = c.embed_dim
        self.grid = c.grid
        self.num_patches = math.prod(self.grid)
        self.init_scale = init_scale
        self.grad_checkpointing = False

        self.patch_embed = TubeletEmbed(tubelet=c.tubelet, patch=c.patch, in_chans=c.in_chans, embed_dim=c.embed_dim)
        self.register_buffer("pos_embed", sinusoid_table(self.num_patches, c.embed_dim), persistent=False)
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1, 1), persistent=False)
        self.blocks = transformer_blocks(c.embed_dim, c.depth, c.num_heads, c, drop_path_rate)
        init_linear_layers(self.blocks, "trunc_normal")
        self.head_drop = nn.Dropout(head_drop_rate)
        self.norm = self.fc_norm = self.head = None
        self.reset_classifier(num_classes)

    @property
    def model_config(self) -> dict:
        """What a checkpoint stores to rebuild this model, one flat dict: the encoder's config fields and the
        keyword settings (drop_path_rate, num_classes, head_drop_rate, init_scale); :meth:`from_model_config`."""
        return {**self.config.encoder_dict(), **self._settings}

    @classmethod
    def from_model_config(cls, model_config: dict) -> "VideoViT":
        """The model a checkpoint's ``model_config`` describes (an unknown entry raises TypeError)."""
        config, settings = VideoViTConfig.split(model_config)
        return cls(config, **settings)

    def reset_classifier(self, num_classes: int) -> None:
        """Give the model a fresh head for num_classes (0: token encoder with a final norm, no head).

        Switching between encoder and classifier swaps the final token norm for mean pooling + ``fc_norm``; a module
        created here is freshly initialised, one that stays (the encoder's norm, a classifier's ``fc_norm``) is kept.
        """
        classify = num_classes > 0
        if classify:
            self.norm = nn.Identity()
            if not isinstance(self.fc_norm, nn.LayerNorm):
                self.fc_norm = LayerNorm(self.embed_dim)
            self.head = nn.Linear(self.embed_dim, num_classes)
            init_linear_layers(self.head, "trunc_normal")
            with torch.no_grad():  # VideoMAE starts fine-tuning from a near-zero head
                self.head.weight.mul_(self.init_scale)
                self.head.bias.mul_(self.init_scale)
        else:
            if not isinstance(self.norm, nn.LayerNorm):
                self.norm = LayerNorm(self.embed_dim)
            self.fc_norm = nn.Identity()
            self.head = nn.Identity()
        self.num_classes = num_classes
        self._settings["num_classes"] = num_classes
        # A module built after .to(device) must follow the model there.
        self.to(self.patch_embed.proj.weight.device)

    def get_classifier(self) -> nn.Module:
        """The linear head (Identity without one)."""
        return self.head

    def get_num_layers(self) -> int:
        """Number of transformer blocks (layer-decay depth)."""
        return len(self.blocks)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names excluded from weight decay; timm excludes every 1-D parameter (norms, biases) by itself."""
        return {"pos_embed"}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """timm layer groups: embeddings, then one per block, then norms + head (VideoMAE's layer-decay ids)."""
        return dict(stem=r"^patch_embed", blocks=r"^blocks\.(\d+)", head=r"^norm|^fc_norm|^head")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward to save memory."""
        self.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Videos (B, 3, T, H, W) in [0, 1] -> tokens (B, N, D); with ``visible``, only those tokens (B, N_vis, D).

        ``visible`` is a bool (B, N) mask with the same count per sample, or indices (B, N_vis); the blocks then run
        on the visible tokens only (the MAE encoder). Token index = (t * H/p + h) * W/p + w.
        """
        c = self.config
        expected = (c.in_chans, c.frames, c.img_size, c.img_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected videos (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        x = (x - self.pixel_mean) / self.pixel_std
        x = self.patch_embed(x) + self.pos_embed.to(x.dtype)
        if visible is not None:
            b, _, d = x.shape
            if visible.dtype == torch.bool:
                x = x[visible].reshape(b, -1, d)
            else:
                x = x.gather(1, visible[..., None].expand(-1, -1, d))
        for block in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, N, D) -> logits (B, num_classes); mean-pooled (and fc-normed) features (B, D) if pre_logits."""
        x = self.fc_norm(x.mean(dim=1))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Videos (B, 3, T, H, W) in [0, 1] -> logits (B, num_classes), or pooled features (B, D) without a head."""
        return self.forward_head(self.forward_features(x))
