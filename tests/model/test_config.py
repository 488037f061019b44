"""VideoViTConfig: one architecture object for the models, the spec, checkpoints and transformers."""

import dataclasses

import pytest

from pmgflow.model import VideoMAE, VideoViT, VideoViTConfig
from pmgflow.spec.model import PRESETS, ModelSpec

# The model_config a VideoViT checkpoint held before VideoViTConfig existed (the constructor's keyword arguments).
OLD_VIT_CONFIG = dict(img_size=16, frames=4, tubelet=2, patch=4, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                      mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0, num_classes=5, head_drop_rate=0.0,
                      init_scale=0.001)
OLD_MAE_CONFIG = dict(img_size=16, frames=4, tubelet=2, patch=4, in_chans=3, embed_dim=32, depth=2, num_heads=2,
                      mlp_ratio=4.0, qkv_bias=True, drop_path_rate=0.0, decoder_embed_dim=16, decoder_depth=1,
                      decoder_num_heads=2, mask_ratio=0.75, norm_pix_loss=True, decoder_mask_ratio=0.0)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_model_spec_gives_its_architecture(preset):
    spec = ModelSpec(preset=preset)
    config = VideoViTConfig.from_spec(spec)
    for name in PRESETS[preset]:
        assert getattr(config, name) == getattr(spec, name), name
    assert (config.mlp_ratio, config.in_chans, config.qkv_bias) == (4.0, 3, True)


def test_the_config_is_frozen_and_describes_the_tokens(tiny_config):
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_config.depth = 3
    assert tiny_config.grid == (2, 4, 4) and tiny_config.patch_dim == 96
    assert VideoViTConfig() == VideoViTConfig(img_size=224, frames=16, patch=16, embed_dim=768, depth=12,
                                              num_heads=12, decoder_embed_dim=384, decoder_depth=4,
                                              decoder_num_heads=6)  # the paper's ViT-B with VideoMAE's decoder


def test_checkpoints_keep_the_model_config_keys_of_before():
    vit = VideoViT.from_model_config(OLD_VIT_CONFIG)
    mae = VideoMAE.from_model_config(OLD_MAE_CONFIG)
    assert vit.model_config == OLD_VIT_CONFIG and mae.model_config == OLD_MAE_CONFIG
    assert vit.num_classes == 5 and mae.config.decoder_embed_dim == 16 and mae.encoder.config == mae.config


def test_an_unknown_model_config_entry_is_refused():
    with pytest.raises(TypeError):
        VideoViT.from_model_config({**OLD_VIT_CONFIG, "colour": "blue"})
