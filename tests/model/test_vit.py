import dataclasses
import math

import pytest
import torch
from timm.optim import create_optimizer_v2

from pmgflow.model.vit import VideoViT, sinusoid_table

N = 32  # tokens of the tiny model (tiny_config: grid (2, 4, 4), width 32)


def videos(batch=2, seed=0):
    return torch.rand(batch, 3, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_shapes_with_and_without_head(tiny_config):
    torch.manual_seed(0)
    clf, enc = VideoViT(tiny_config, num_classes=5).eval(), VideoViT(tiny_config).eval()
    x = videos()
    assert clf.forward_features(x).shape == (2, N, 32)
    assert clf(x).shape == (2, 5)
    assert clf.forward_head(clf.forward_features(x), pre_logits=True).shape == (2, 32)
    assert enc(x).shape == (2, 32)
    assert isinstance(enc.norm, torch.nn.LayerNorm) and isinstance(enc.head, torch.nn.Identity)
    # A classifier mean-pools into fc_norm instead of normalizing the tokens (VideoMAE's use_mean_pooling).
    assert isinstance(clf.norm, torch.nn.Identity) and isinstance(clf.fc_norm, torch.nn.LayerNorm)


def test_rejects_wrong_input_shape(tiny_config):
    with pytest.raises(ValueError, match=r"expected videos \(B, 3, 4, 16, 16\)"):
        VideoViT(tiny_config)(torch.rand(2, 4, 3, 16, 16))


def test_position_table_is_the_plain_sinusoid_formula():
    table = sinusoid_table(7, 6)
    assert table.shape == (1, 7, 6)
    for pos in range(7):
        for j in range(6):
            angle = pos / 10000 ** (2 * (j // 2) / 6)
            expected = math.sin(angle) if j % 2 == 0 else math.cos(angle)
            assert table[0, pos, j].item() == pytest.approx(expected, abs=1e-6)


def test_fixed_buffers_are_not_saved(tiny_config):
    model = VideoViT(tiny_config)
    assert model.pos_embed.shape == (1, N, 32)
    assert not {"pos_embed", "pixel_mean", "pixel_std"} & set(model.state_dict())


def test_normalizes_with_imagenet_statistics_inside(tiny_config):
    torch.manual_seed(0)
    model = VideoViT(tiny_config).eval()
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)
    # The ImageNet mean colour embeds as the bias alone.
    tokens = model.patch_embed(((mean.expand(1, 3, 4, 16, 16)) - model.pixel_mean) / model.pixel_std)
    torch.testing.assert_close(tokens, model.patch_embed.proj.bias.expand(1, N, 32))
    assert torch.equal(model.pixel_mean, mean) and torch.equal(model.pixel_std, std)


def test_uses_fused_attention(tiny_config):
    assert all(block.attn.fused_attn for block in VideoViT(tiny_config).blocks)


def test_visible_selection_by_mask_or_index(tiny_config):
    torch.manual_seed(0)
    model = VideoViT(tiny_config).eval()
    x = videos()
    visible = torch.zeros(2, N, dtype=torch.bool)
    visible[0, [1, 5, 9, 30]] = True
    visible[1, [0, 2, 3, 31]] = True
    index = torch.tensor([[1, 5, 9, 30], [0, 2, 3, 31]])
    by_mask = model.forward_features(x, visible=visible)
    assert by_mask.shape == (2, 4, 32)
    torch.testing.assert_close(by_mask, model.forward_features(x, visible=index))


def test_head_starts_near_zero(tiny_config):
    torch.manual_seed(0)
    model = VideoViT(tiny_config, num_classes=5, init_scale=0.001)
    # trunc normal std .02 cut at one std, then scaled by init_scale
    assert model.head.weight.abs().max() <= 0.02 * 0.001 + 1e-9
    assert model.head.weight.abs().max() > 0


def test_drop_path_grows_linearly(tiny_config):
    model = VideoViT(dataclasses.replace(tiny_config, depth=3), drop_path_rate=0.2)
    assert isinstance(model.blocks[0].drop_path1, torch.nn.Identity)
    assert model.blocks[1].drop_path1.drop_prob == pytest.approx(0.1)
    assert model.blocks[2].drop_path1.drop_prob == pytest.approx(0.2)


def test_layer_decay_scales_match_videomae(tiny_config):
    torch.manual_seed(0)
    model = VideoViT(dataclasses.replace(tiny_config, depth=3), num_classes=5)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    names = {id(p): n for n, p in model.named_parameters()}
    depth = model.get_num_layers()
    assert depth == 3

    def videomae_layer_id(name):
        if name.startswith("patch_embed"):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return depth + 1

    seen = set()
    for group in optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            seen.add(name)
            assert group["lr_scale"] == pytest.approx(0.75 ** (depth + 1 - videomae_layer_id(name))), name
            assert group["weight_decay"] == (0.0 if p.ndim <= 1 else 0.05), name
    assert seen == set(names.values())
    assert "pos_embed" in model.no_weight_decay()


def test_reset_classifier_switches_structure(tiny_config):
    torch.manual_seed(0)
    model = VideoViT(tiny_config)
    model.reset_classifier(7)
    assert model.num_classes == 7 and model.model_config["num_classes"] == 7
    assert model(videos()).shape == (2, 7)
    fc_norm = model.fc_norm
    model.reset_classifier(3)
    assert model.fc_norm is fc_norm and model.head.out_features == 3
    model.reset_classifier(0)
    assert model(videos()).shape == (2, 32) and isinstance(model.norm, torch.nn.LayerNorm)
    assert set(VideoViT.from_model_config(model.model_config).state_dict()) == set(model.state_dict())


def test_grad_checkpointing_gives_the_same_gradients(tiny_config):
    torch.manual_seed(0)
    model = VideoViT(tiny_config, num_classes=5)
    x = videos()
    model(x).square().sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).square().sum().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(a, p.grad)
