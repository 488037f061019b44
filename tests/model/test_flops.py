import dataclasses

import pytest

from pmgflow.model.flops import finetune_flops_per_clip, preset_flops_per_clip, pretrain_flops_per_clip
from pmgflow.model.videomae import VideoMAE
from pmgflow.model.vit import VideoViT

# The tiny model (tiny_config): N = 32 tokens of 2x4x4x3 = 96 values, 8 visible at mask ratio 0.75; width 32.
# Its decoder is narrowed to DD here, so the counts tell the two widths apart.
N, D, PATCH_DIM, DD = 32, 32, 96, 16


def block_macs(tokens: int, width: int) -> int:
    """qkv, projection and a 4x MLP per token, plus the two attention products."""
    return tokens * 12 * width * width + 2 * tokens * tokens * width


def train_flops(forward_macs: int, embed_macs: int) -> int:
    """Forward + backward (twice the forward), less the patch embedding's input gradient (videos need none)."""
    return 3 * 2 * forward_macs - 2 * embed_macs


def test_finetune_flops_are_the_matmuls_of_forward_and_backward(tiny_config):
    vit = VideoViT(tiny_config, num_classes=5)
    embed = N * D * PATCH_DIM
    assert finetune_flops_per_clip(vit) == train_flops(embed + 2 * block_macs(N, D) + D * 5, embed)
    assert next(vit.parameters()).device.type == "cpu"  # counted on a meta copy


@pytest.mark.parametrize("decoder_mask_ratio, decoded", [(0.0, 24), (0.5, 16)])
def test_pretrain_flops_count_the_visible_encoder_tokens_and_the_decoded_ones(decoder_mask_ratio, decoded,
                                                                              tiny_config):
    mae = VideoMAE(dataclasses.replace(tiny_config, decoder_embed_dim=DD), decoder_mask_ratio=decoder_mask_ratio)
    visible, embed = 8, N * D * PATCH_DIM
    forward = (embed + 2 * block_macs(visible, D) + visible * D * DD + block_macs(visible + decoded, DD)
               + decoded * DD * PATCH_DIM)
    assert pretrain_flops_per_clip(mae) == train_flops(forward, embed)


def test_vit_b_flops_per_clip():
    flops = preset_flops_per_clip("base")
    # ViT-B/16 on 1568 tokens: about 180 GMACs forward (VideoMAE's figure), so about 1.08 TFLOP per trained clip.
    assert flops["finetune"] == pytest.approx(1.08e12, rel=0.01)
    assert flops["pretrain"] < flops["finetune"] / 3  # the encoder sees a quarter of the tokens
