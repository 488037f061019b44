import dataclasses

import pytest
import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2

from pmgflow.errors import PmgflowError
from pmgflow.model.videomae import VideoMAE, load_encoder
from pmgflow.model.vit import VideoViT

# The tiny model (tiny_config): grid (2, 4, 4); 16 patches per slice, 12 masked, N = 32, 8 visible; decoder 32 wide.
N, N_MASKED, PATCH_DIM, DECODER_WIDTH = 32, 24, 2 * 4 * 4 * 3, 32


def videos(batch=2, seed=0):
    return torch.rand(batch, 3, 4, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def tiny_mae(tiny_config):
    """tiny_mae(**kw): a tiny VideoMAE, seeded; the VideoViTConfig fields in kw change its architecture, the others
    are VideoMAE settings (mask_ratio, ...)."""

    def make(**kw):
        fields = {k: kw.pop(k) for k in list(kw) if hasattr(tiny_config, k)}
        torch.manual_seed(0)
        return VideoMAE(dataclasses.replace(tiny_config, **fields), **kw).eval()

    return make


def test_tube_mask_masks_the_same_patches_in_every_slice(tiny_mae):
    mask = tiny_mae().tube_mask(5, "cpu", generator=torch.Generator().manual_seed(1))
    assert mask.shape == (5, N) and mask.dtype == torch.bool
    slices = mask.view(5, 2, 16)  # (batch, time slice, spatial patch)
    assert (slices.sum(dim=2) == int(0.75 * 16)).all()
    assert torch.equal(slices[:, 0], slices[:, 1])
    assert len({tuple(s.tolist()) for s in slices[:, 0]}) > 1  # samples differ


def test_tube_mask_is_reproducible_with_a_generator(tiny_mae):
    mae = tiny_mae()
    a = mae.tube_mask(3, "cpu", generator=torch.Generator().manual_seed(7))
    b = mae.tube_mask(3, "cpu", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("ratio", [0.05, 1.0])
def test_mask_ratio_must_leave_masked_and_visible_patches(ratio, tiny_config):
    with pytest.raises(ValueError, match="mask_ratio"):
        VideoMAE(tiny_config, mask_ratio=ratio)


def test_patchify_order_is_time_row_column_channel(tiny_mae):
    x = videos()
    patches = tiny_mae().patchify(x)
    assert patches.shape == (2, N, PATCH_DIM)
    for b, t, h, w in [(0, 0, 0, 0), (1, 1, 2, 3), (0, 1, 3, 1)]:
        token = (t * 4 + h) * 4 + w
        for dt, dy, dx, c in [(0, 0, 0, 0), (1, 2, 3, 2), (0, 3, 1, 1)]:
            element = ((dt * 4 + dy) * 4 + dx) * 3 + c
            assert patches[b, token, element] == x[b, c, 2 * t + dt, 4 * h + dy, 4 * w + dx]


def test_normalized_target_is_per_patch_per_channel(tiny_mae):
    x = videos()
    target = tiny_mae().normalized_target(x)
    assert target.shape == (2, N, PATCH_DIM)
    for b, t, h, w in [(0, 0, 0, 0), (1, 1, 3, 2)]:
        token = (t * 4 + h) * 4 + w
        for c in range(3):
            pixels = x[b, c, 2 * t: 2 * t + 2, 4 * h: 4 * h + 4, 4 * w: 4 * w + 4].reshape(-1).double()
            mean = pixels.sum() / 32
            std = ((pixels - mean).square().sum() / 31).sqrt()  # unbiased
            expected = (pixels - mean) / (std + 1e-6)
            got = target[b, token].view(32, 3)[:, c]
            torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=1e-5)


def test_plain_pixel_target_without_norm_pix_loss(tiny_mae):
    mae = tiny_mae(norm_pix_loss=False)
    x = videos()
    assert torch.equal(mae.normalized_target(x), mae.patchify(x))


def test_encoder_runs_on_visible_tokens_only(tiny_mae):
    mae = tiny_mae()
    seen = []
    mae.encoder.blocks[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    mask = mae.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    latent = mae.forward_encoder(videos(), mask)
    assert seen == [torch.Size([2, N - N_MASKED, 32])]
    assert latent.shape == (2, N - N_MASKED, 32)


def test_decoder_predicts_masked_tokens_only(tiny_mae):
    mae = tiny_mae()
    mask = mae.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    pred = mae.forward_decoder(mae.forward_encoder(videos(), mask), mask)
    assert pred.shape == (2, N_MASKED, PATCH_DIM)


def test_loss_is_mse_over_masked_tokens(tiny_mae):
    mae = tiny_mae()
    x = videos()
    mask = mae.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    pred = torch.randn(2, N_MASKED, PATCH_DIM, generator=torch.Generator().manual_seed(1))
    target = mae.normalized_target(x)
    expected = torch.stack([(pred[b] - target[b][mask[b]]).square().mean() for b in range(2)]).mean()
    torch.testing.assert_close(mae.forward_loss(x, pred, mask), expected)


def test_loss_ignores_visible_pixels(tiny_mae):
    mae = tiny_mae()
    x = videos()
    mask = mae.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    pred = torch.randn(2, N_MASKED, PATCH_DIM, generator=torch.Generator().manual_seed(1))
    # Scribble over every visible tubelet: its pixels are no target.
    pixel_mask = mask.view(2, 2, 4, 4).repeat_interleave(2, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)
    scribbled = torch.where(pixel_mask[:, None], x, torch.rand_like(x))
    assert not torch.equal(scribbled, x)
    assert torch.equal(mae.forward_loss(scribbled, pred, mask), mae.forward_loss(x, pred, mask))
    # ...while a masked pixel does count.
    masked_token = int(mask[0].nonzero()[0])
    t, h, w = masked_token // 16, (masked_token // 4) % 4, masked_token % 4
    moved = x.clone()
    moved[0, 0, 2 * t, 4 * h, 4 * w] += 0.5
    assert mae.forward_loss(moved, pred, mask) != mae.forward_loss(x, pred, mask)


def test_forward_trains_encoder_decoder_and_mask_token(tiny_mae):
    mae = tiny_mae().train()
    loss, pred, mask = mae(videos(), generator=torch.Generator().manual_seed(0))
    assert loss.shape == () and torch.isfinite(loss)
    assert pred.shape == (2, N_MASKED, PATCH_DIM) and mask.shape == (2, N)
    loss.backward()
    for name in ["mask_token", "encoder.patch_embed.proj.weight", "encoder.blocks.0.attn.qkv.weight",
                 "encoder_to_decoder.weight", "decoder.head.weight"]:
        assert mae.get_parameter(name).grad.abs().sum() > 0, name
    again, _, _ = mae(videos(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loss, again)


def test_a_mask_of_another_count_is_refused(tiny_mae):
    mae = tiny_mae()
    mask = mae.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    mask[0, int((~mask[0]).nonzero()[0])] = True  # one visible token less in sample 0
    with pytest.raises(RuntimeError, match="must select 8 tokens"):
        mae(videos(), mask)


@pytest.mark.parametrize("ratio, left_out", [(0.25, 1), (0.5, 2), (0.75, 3)])
def test_running_cell_mask_keeps_the_ratio_per_slice_and_runs_through_the_cell(ratio, left_out, tiny_mae):
    mae = tiny_mae(frames=8, decoder_mask_ratio=ratio)  # grid (4, 4, 4): four time slices
    mask = mae.running_cell_mask(16, "cpu", generator=torch.Generator().manual_seed(0))
    assert mask.shape == (16, 64) and mask.dtype == torch.bool
    slices = mask.view(16, 4, 16)
    assert (slices.sum(dim=2) == 4 * left_out).all()  # 4 cells of 2x2 per slice
    cells = slices.view(16, 4, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(16, 4, 4, 4)  # (b, t, cell, position)
    assert (cells == cells[:, :, :1]).all()  # every cell of a slice alike
    pattern = cells[:, :, 0]
    assert torch.equal(pattern[:, 1:], pattern[:, :-1].roll(-1, dims=2))  # one position further per time slice
    assert len({tuple(p.flatten().tolist()) for p in pattern}) > 1  # the phase is drawn per sample


def reference_loss(mae, x, mask):
    """Plain VideoMAE with boolean indexing, as before decoder masking existed."""
    b = x.shape[0]
    latent = mae.encoder_to_decoder(mae.encoder.forward_features(x, visible=~mask))
    pos, d = mae.decoder_pos_embed.expand(b, -1, -1), latent.shape[-1]
    tokens = torch.cat([latent + pos[~mask].reshape(b, -1, d), mae.mask_token + pos[mask].reshape(b, -1, d)], dim=1)
    pred = mae.decoder(tokens, N_MASKED)
    return F.mse_loss(pred, mae.normalized_target(x)[mask].reshape(pred.shape))


def test_decoder_mask_ratio_zero_is_plain_videomae(tiny_mae):
    mae, off = tiny_mae(), tiny_mae(decoder_mask_ratio=0.0)
    assert all(torch.equal(a, b) for a, b in zip(mae.state_dict().values(), off.state_dict().values()))
    mask = off.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    loss, pred, _ = off(videos(), mask)
    assert pred.shape == (2, N_MASKED, PATCH_DIM)
    assert torch.equal(loss, reference_loss(mae, videos(), mask))


def decoder_masked(tiny_mae, seed=0):
    mae = tiny_mae(decoder_mask_ratio=0.5)
    g = torch.Generator().manual_seed(seed)
    return mae, mae.tube_mask(2, "cpu", generator=g), mae.running_cell_mask(2, "cpu", generator=g)


def test_decoder_sees_the_visible_tokens_and_the_decoded_mask_tokens_only(tiny_mae):
    mae, mask, decoder_mask = decoder_masked(tiny_mae)
    seen = []
    mae.decoder.blocks[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    loss, pred, _ = mae(videos(), mask, decoder_mask=decoder_mask)
    assert mae.num_decoded == N // 2
    assert seen == [torch.Size([2, N - N_MASKED + N // 2, DECODER_WIDTH])]
    assert pred.shape == (2, N // 2, PATCH_DIM) and torch.isfinite(loss)


def test_decoder_masking_loss_covers_exactly_the_tokens_masked_and_decoded(tiny_mae):
    mae, mask, decoder_mask = decoder_masked(tiny_mae)
    x = videos()
    pred = torch.randn(2, N // 2, PATCH_DIM, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = mae.forward_loss(x, pred, mask, decoder_mask)
    target = mae.normalized_target(x)
    decoded = [(~decoder_mask[b]).nonzero().flatten() for b in range(2)]  # pred rows, in token order
    scored = [mask[b, decoded[b]] for b in range(2)]
    errors = torch.cat([(pred[b][scored[b]] - target[b, decoded[b][scored[b]]]).square().mean(dim=1)
                        for b in range(2)])
    assert 0 < len(errors) < 2 * N // 2  # some decoded tokens are visible: they are no target
    torch.testing.assert_close(loss, errors.mean())
    loss.backward()
    assert torch.equal(pred.grad.abs().sum(dim=2) > 0, torch.stack(scored))


def test_forward_draws_a_running_cell_mask_and_trains(tiny_mae):
    mae = tiny_mae(decoder_mask_ratio=0.5).train()
    loss, pred, _ = mae(videos(), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert pred.shape == (2, N // 2, PATCH_DIM)
    for name in ["mask_token", "encoder.blocks.0.attn.qkv.weight", "decoder.head.weight"]:
        assert mae.get_parameter(name).grad.abs().sum() > 0, name
    again, _, _ = mae(videos(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loss, again)


@pytest.mark.parametrize("kw", [dict(decoder_mask_ratio=0.1), dict(decoder_mask_ratio=0.5, img_size=12)])
def test_decoder_mask_ratio_needs_whole_cell_positions_on_an_even_grid(kw, tiny_mae):
    with pytest.raises(ValueError, match="decoder_mask_ratio"):
        tiny_mae(**kw)


def test_fine_tuning_model_loads_the_encoder(tiny_config, tiny_mae):
    mae = tiny_mae()
    torch.manual_seed(1)
    vit = VideoViT(tiny_config, num_classes=5)
    for state in (mae.encoder_state_dict(), mae.state_dict()):
        missing, unexpected = load_encoder(vit, state)
        assert sorted(missing) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
        assert sorted(unexpected) == ["norm.bias", "norm.weight"]  # replaced by mean pooling + fc_norm
    for name, tensor in mae.encoder.state_dict().items():
        if not name.startswith("norm."):
            assert torch.equal(vit.state_dict()[name], tensor), name


def test_load_encoder_rejects_another_config(tiny_config, tiny_mae):
    mae = tiny_mae()
    with pytest.raises(PmgflowError, match="does not fit"):
        load_encoder(VideoViT(dataclasses.replace(tiny_config, embed_dim=16), num_classes=5), mae.state_dict())
    with pytest.raises(PmgflowError, match="lacks weights: blocks.2"):
        load_encoder(VideoViT(dataclasses.replace(tiny_config, depth=3), num_classes=5), mae.state_dict())


def test_model_config_rebuilds_the_model_and_mask_token_is_not_decayed(tiny_mae):
    mae = tiny_mae()
    again = VideoMAE.from_model_config(mae.model_config)
    assert again.config == mae.config
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in mae.state_dict().items()}
    optimizer = create_optimizer_v2(mae, "adamw", lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95))
    no_decay = [p for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]]
    assert any(p is mae.mask_token for p in no_decay)
