"""VideoMAE pre-training: tube masking, encoder on visible tokens, narrow decoder, normalized-pixel target, loss.

One method per step of the paper (Tong et al., NeurIPS 2022), matching the reference implementation:

``tube_mask`` -> ``forward_encoder`` (a :class:`VideoViT` on the visible tokens) -> ``forward_decoder`` (mask tokens,
its own sinusoid table, predicts the masked tubelets only) -> ``forward_loss`` (MSE against ``normalized_target``).

Optionally, VideoMAE V2's decoder masking (Wang et al., CVPR 2023; off by default, as the paper):
``running_cell_mask`` leaves ``decoder_mask_ratio`` of the tokens out of the decoder, which then predicts only the
decoded tokens, and the loss covers the tokens both masked and decoded.

Tokens are selected with indices from a stable sort of the masks, not boolean indexing, so shapes are static: no
host sync on CUDA, no graph break under ``torch.compile``, and the meta device can run a step (FLOP counting).
Every mask must therefore hold the model's count per sample, as ``tube_mask`` and ``running_cell_mask`` draw them.

Videos are ``(B, 3, T, H, W)`` in [0, 1]. Tokens are indexed ``(t * H/p + h) * W/p + w``; a tubelet's pixels are
flattened in the order (time in tubelet, row, column, channel) with the channel fastest, as the reference and
Hugging Face transformers' ``VideoMAEForPreTraining`` do, so predictions and checkpoints interoperate.

After pre-training, ``load_encoder(VideoViT(mae.config, num_classes=K), mae.encoder_state_dict())`` starts
fine-tuning; only the classifier (``fc_norm``, ``head``) is missing and the pre-training final ``norm`` is
unexpected (mean pooling + ``fc_norm`` replace it, as in VideoMAE).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn

from pmgflow.errors import PmgflowError
from pmgflow.model.config import VideoViTConfig
from pmgflow.model.vit import LayerNorm, VideoViT, init_linear_layers, sinusoid_table, transformer_blocks


class VideoMAEDecoder(nn.Module):
    """Narrow pre-norm ViT over all tokens; predicts the pixels of the last ``num_masked`` (the mask tokens)."""

    def __init__(self, config: VideoViTConfig, drop_path_rate: float):
        super().__init__()
        width = config.decoder_embed_dim
        self.blocks = transformer_blocks(width, config.decoder_depth, config.decoder_num_heads, config, drop_path_rate)
        self.norm = LayerNorm(width)
        self.head = nn.Linear(width, config.patch_dim)

    def forward(self, x: torch.Tensor, num_masked: int) -> torch.Tensor:
        """Tokens (B, N', Dd) with the mask tokens last -> pixels (B, num_masked, tubelet * p * p * 3)."""
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, -num_masked:]))


def first_true(where: torch.Tensor, count: int) -> torch.Tensor:
    """Indices (B, count), increasing, of the True entries of a bool (B, N) holding `count` per row."""
    torch._assert_async((where.sum(dim=1) == count).all(), f"a mask must select {count} tokens in every sample")
    return where.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :count]


def take_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Tokens x (B, N, D) at index (B, n) -> (B, n, D)."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


class VideoMAE(nn.Module):
    """VideoMAE of a :class:`VideoViTConfig`: a :class:`VideoViT` ``encoder`` plus the pre-training decoder (the
    config's ``decoder_*`` fields); forward gives (loss, pred, mask)."""

    def __init__(
        self,
        config: VideoViTConfig = VideoViTConfig(),
        *,
        drop_path_rate: float = 0.0,
        mask_ratio: float = 0.75,
        norm_pix_loss: bool = True,
        decoder_mask_ratio: float = 0.0,
    ):
        super().__init__()
        self.config = config
        self._settings = dict(drop_path_rate=drop_path_rate, mask_ratio=mask_ratio, norm_pix_loss=norm_pix_loss,
                              decoder_mask_ratio=decoder_mask_ratio)
        self.encoder = VideoViT(config, drop_path_rate=drop_path_rate, num_classes=0)
        self.grid = self.encoder.grid
        self.num_patches = self.encoder.num_patches
        per_slice = self.grid[1] * self.grid[2]
        self.mask_ratio = mask_ratio
        self.num_masked_per_slice = int(mask_ratio * per_slice)
        if not 0 < self.num_masked_per_slice < per_slice:
            raise ValueError(f"mask_ratio {mask_ratio} must mask between 1 and {per_slice - 1} of {per_slice} patches")
        self.num_masked = self.grid[0] * self.num_masked_per_slice
        self.num_visible = self.num_patches - self.num_masked
        self.decoder_mask_ratio = decoder_mask_ratio
        # Running cell (VideoMAE V2): int(4 * ratio) of the 4 positions of every 2x2 cell are left out of the decoder.
        self.decoder_masked_per_cell = int(4 * decoder_mask_ratio)
        even = self.grid[1] % 2 == self.grid[2] % 2 == 0
        if decoder_mask_ratio and not (0 < self.decoder_masked_per_cell < 4 and even):
            raise ValueError(f"decoder_mask_ratio {decoder_mask_ratio} must leave 1 to 3 of the 4 positions of a "
                             "2x2 cell out of the decoder (0.25, 0.5, 0.75; 0 = off), on a grid of even height and "
                             f"width (got {self.grid[1]}x{self.grid[2]})")
        self.num_decoded = self.num_patches - self.num_patches // 4 * self.decoder_masked_per_cell
        self.norm_pix_loss = norm_pix_loss
        self.patch_dim = config.patch_dim

        self.encoder_to_decoder = nn.Linear(config.embed_dim, config.decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_embed_dim))
        self.register_buffer("decoder_pos_embed", sinusoid_table(self.num_patches, config.decoder_embed_dim),
                             persistent=False)
        self.decoder = VideoMAEDecoder(config, drop_path_rate)
        # VideoMAE pre-training initialises every Linear with xavier (fine-tuning heads use trunc normal).
        init_linear_layers(self, "xavier")
        trunc_normal_(self.mask_token, std=0.02, a=-0.02, b=0.02)

    @property
    def model_config(self) -> dict:
        """What a checkpoint stores to rebuild this model, one flat dict: every config field and the keyword
        settings (drop_path_rate, mask_ratio, norm_pix_loss, decoder_mask_ratio); :meth:`from_model_config`."""
        return {**self.config.as_dict(), **self._settings}

    @classmethod
    def from_model_config(cls, model_config: dict) -> "VideoMAE":
        """The model a checkpoint's ``model_config`` describes (an unknown entry raises TypeError)."""
        config, settings = VideoViTConfig.split(model_config)
        return cls(config, **settings)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Names excluded from weight decay (as VideoMAE: the mask token; 1-D parameters are excluded by timm)."""
        return {"mask_token"}

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's weights, in :class:`VideoViT` names (load with :func:`load_encoder`)."""
        return self.encoder.state_dict()

    def tube_mask(self, batch_size: int, device: torch.device | str, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
        """Bool (B, N), True = masked: one random spatial mask per sample, repeated over every time slice.

        Exactly ``int(mask_ratio * H/p * W/p)`` patches are masked per slice, so every sample has the same visible
        count. ``generator``, if given, must live on ``device``.
        """
        t, h, w = self.grid
        noise = torch.rand(batch_size, h * w, device=device, generator=generator)
        masked = noise.argsort(dim=1)[:, : self.num_masked_per_slice]
        spatial = torch.zeros(batch_size, h * w, dtype=torch.bool, device=device).scatter_(1, masked, True)
        return spatial.repeat(1, t)  # token index = t * h*w + spatial index

    def running_cell_mask(self, batch_size: int, device: torch.device | str,
                          generator: torch.Generator | None = None) -> torch.Tensor:
        """Bool (B, N), True = left out of the decoder: VideoMAE V2's running-cell decoder mask.

        The frame grid is tiled by 2x2 cells, all masked alike: position p of a cell (raster order) is left out
        in time slice t when (p + t + phase) mod 4 < decoder_masked_per_cell, with one random phase per sample,
        so the kept positions run one step through the cell per time slice and every slice keeps the same count.
        """
        if not self.decoder_mask_ratio:
            raise ValueError("running_cell_mask needs decoder_mask_ratio > 0")
        t, h, w = self.grid
        cell = (torch.arange(h, device=device)[:, None] % 2) * 2 + torch.arange(w, device=device) % 2  # (h, w)
        time = torch.arange(t, device=device)[:, None, None]
        phase = torch.randint(0, 4, (batch_size, 1, 1, 1), device=device, generator=generator)
        return ((cell + time + phase) % 4 < self.decoder_masked_per_cell).flatten(1)

    def patchify(self, videos: torch.Tensor) -> torch.Tensor:
        """Videos (B, C, T, H, W) -> (B, N, tubelet * p * p * C); per token, order (dt, dy, dx, channel)."""
        b, c = videos.shape[:2]
        t, h, w = self.grid
        p = self.config.patch
        x = videos.reshape(b, c, t, self.config.tubelet, h, p, w, p)
        x = x.permute(0, 2, 4, 6, 3, 5, 7, 1)  # (b, t, h, w, dt, dy, dx, c)
        return x.reshape(b, t * h * w, -1)

    def normalized_target(self, videos: torch.Tensor) -> torch.Tensor:
        """Reconstruction target (B, N, tubelet * p * p * 3) from [0, 1] videos.

        With ``norm_pix_loss``, each channel of each tubelet is normalized over the tubelet's pixels by its mean and
        unbiased std (eps 1e-6 added to the std), as VideoMAE; otherwise the plain [0, 1] pixels.
        """
        patches = self.patchify(videos.float())
        if not self.norm_pix_loss:
            return patches
        b, n, _ = patches.shape
        per_channel = patches.reshape(b, n, -1, self.config.in_chans)
        mean = per_channel.mean(dim=2, keepdim=True)
        std = per_channel.var(dim=2, unbiased=True, keepdim=True).sqrt()
        return ((per_channel - mean) / (std + 1e-6)).reshape(b, n, -1)

    def decoded_tokens(self, mask: torch.Tensor, decoder_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Indices, increasing, of the tokens the decoder predicts: the masked ones (B, num_masked), or with a
        decoder mask every token it keeps (B, num_decoded), visible ones too, as VideoMAE V2: the same count in
        every sample."""
        if decoder_mask is None:
            return first_true(mask, self.num_masked)
        if not self.decoder_mask_ratio:
            raise ValueError("a decoder_mask needs a model built with decoder_mask_ratio > 0")
        return first_true(~decoder_mask, self.num_decoded)

    def forward_encoder(self, videos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Encode only the visible tokens: (B, N_vis, D), in increasing token order."""
        return self.encoder.forward_features(videos, visible=first_true(~mask, self.num_visible))

    def forward_decoder(self, latent: torch.Tensor, mask: torch.Tensor,
                        decoder_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Visible latents (B, N_vis, D) -> predicted pixels of the decoded tokens (B, N_dec, patch_dim).

        The decoded tokens are the masked ones (the order of ``target[mask]``), or with ``decoder_mask`` those it
        keeps; predictions follow increasing token index.
        """
        x = self.encoder_to_decoder(latent)
        pos = self.decoder_pos_embed.to(x.dtype).expand(x.shape[0], -1, -1)
        # Tokens stay in (visible, decoded) order; attention is order-free and the positions travel with them.
        pos_visible = take_tokens(pos, first_true(~mask, self.num_visible))
        pos_decoded = take_tokens(pos, self.decoded_tokens(mask, decoder_mask))
        x = torch.cat([x + pos_visible, self.mask_token.to(x.dtype) + pos_decoded], dim=1)
        return self.decoder(x, pos_decoded.shape[1])

    def forward_loss(self, videos: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor,
                     decoder_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mean squared error between ``pred`` (B, N_dec, patch_dim) and the target of the tokens both masked
        and decoded (without a decoder mask: all masked tokens)."""
        decoded = self.decoded_tokens(mask, decoder_mask)
        with torch.no_grad():
            target = take_tokens(self.normalized_target(videos), decoded)
        if decoder_mask is None:
            return F.mse_loss(pred.float(), target)
        scored = mask.gather(1, decoded).float()  # a decoded visible token is no target
        per_token = (pred.float() - target).square().mean(dim=-1)
        return (per_token * scored).sum() / scored.sum().clamp_min(1)  # none scored (low mask_ratio): loss 0

    def forward(self, videos: torch.Tensor, mask: torch.Tensor | None = None,
                generator: torch.Generator | None = None, decoder_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Videos (B, 3, T, H, W) in [0, 1] -> (loss, pred (B, N_dec, patch_dim), mask (B, N)); draws a tube mask,
        and with ``decoder_mask_ratio`` a running-cell decoder mask, when none is given (N_dec: see
        :meth:`decoded_tokens`)."""
        if mask is None:
            mask = self.tube_mask(videos.shape[0], videos.device, generator)
        if decoder_mask is None and self.decoder_mask_ratio:
            decoder_mask = self.running_cell_mask(videos.shape[0], videos.device, generator)
        pred = self.forward_decoder(self.forward_encoder(videos, mask), mask, decoder_mask)
        return self.forward_loss(videos, pred, mask, decoder_mask), pred, mask


def load_encoder(vit: VideoViT, state_dict: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Load a pre-trained encoder into ``vit``; returns (missing, unexpected) key lists.

    ``state_dict`` is a :class:`VideoViT` state dict or a whole :class:`VideoMAE` one (its ``encoder.`` keys are
    used, the decoder is ignored). Only the classifier (``fc_norm``, ``head``) may be missing; anything else, or a
    shape mismatch, raises PmgflowError.
    """
    if any(k.startswith("encoder.") for k in state_dict):
        state_dict = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
    own = vit.state_dict()
    wrong = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state_dict.items()
             if k in own and v.shape != own[k].shape]
    if wrong:
        raise PmgflowError(f"pre-trained encoder does not fit this model (different config?): {'; '.join(wrong)}")
    missing, unexpected = vit.load_state_dict(state_dict, strict=False)
    not_head = [k for k in missing if not k.startswith(("fc_norm.", "head."))]
    if not_head:
        raise PmgflowError(f"pre-trained encoder lacks weights: {', '.join(not_head)}")
    return list(missing), list(unexpected)
