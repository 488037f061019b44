import dataclasses
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from pmgflow.errors import PmgflowError
from pmgflow.model import VideoMAE, VideoViT, checkpoint_state, save_checkpoint
from pmgflow.model.interop import (
    _hf_state_dict,
    export_hf,
    from_transformers,
    import_videomae_checkpoint,
    to_pixel_values,
    to_transformers,
)

from ..conftest import randomize

# Every model is randomized (all weights and biases, the key bias too) before it is converted and compared, so a
# conversion that lost a bias fails.


@pytest.fixture(scope="module")
def config(tiny_config):
    """The tiny model with a decoder of two layers, narrower than the encoder (each decoder index and width mapped)."""
    return dataclasses.replace(tiny_config, decoder_embed_dim=16, decoder_depth=2)


def videos():
    return torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))


def encoder(config):
    return randomize(VideoViT(config))


def classifier(config):
    return randomize(VideoViT(config, num_classes=5))


def pretrainer(config):
    return randomize(VideoMAE(config))


def test_encoder_matches_videomae_model(config):
    ours = encoder(config)
    hf = to_transformers(ours)
    assert type(hf) is transformers.VideoMAEModel
    with torch.no_grad():
        expected = hf(to_pixel_values(videos())).last_hidden_state
        torch.testing.assert_close(ours.forward_features(videos()), expected, atol=1e-5, rtol=0)


def test_classifier_matches_videomae_for_video_classification(config):
    ours = classifier(config)
    hf = to_transformers(ours)
    assert type(hf) is transformers.VideoMAEForVideoClassification and hf.config.num_labels == 5
    with torch.no_grad():
        logits = ours(videos())
        assert logits.shape == (2, 5)
        torch.testing.assert_close(logits, hf(to_pixel_values(videos())).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("norm_pix_loss", [True, False])
def test_pretrainer_matches_videomae_for_pretraining(norm_pix_loss, config):
    ours = randomize(VideoMAE(config, norm_pix_loss=norm_pix_loss))
    hf = to_transformers(ours)
    assert type(hf) is transformers.VideoMAEForPreTraining
    mask = ours.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss, pred, _ = ours(videos(), mask)
        out = hf(to_pixel_values(videos()), bool_masked_pos=mask)
    torch.testing.assert_close(pred, out.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, out.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("make", [encoder, classifier, pretrainer])
def test_weights_map_one_to_one_and_back(make, config):
    ours = make(config)
    hf = to_transformers(ours)
    missing, unexpected = hf.load_state_dict(_hf_state_dict(ours), strict=False)
    assert missing == [] and unexpected == []
    again = from_transformers(hf)
    assert type(again) is type(ours) and again.model_config == ours.model_config
    theirs, mine = again.state_dict(), ours.state_dict()
    assert set(theirs) == set(mine)
    for name, tensor in mine.items():
        if name.endswith("attn.qkv.bias"):
            q, k, v = theirs[name].chunk(3)
            q0, _, v0 = tensor.chunk(3)
            assert torch.equal(q, q0) and torch.equal(v, v0) and q.abs().min() > 0 and v.abs().min() > 0
            assert not k.any()  # transformers has no key bias
        else:
            assert torch.equal(theirs[name], tensor), name


def test_dropping_the_key_bias_is_exact(config):
    ours = classifier(config)
    again = from_transformers(to_transformers(ours)).eval()  # key bias now zero
    with torch.no_grad():
        torch.testing.assert_close(again(videos()), ours(videos()), atol=1e-6, rtol=0)


def test_export_hf_writes_a_loadable_folder(tmp_path, config):
    ours = classifier(config)
    path = save_checkpoint(tmp_path / "finetune.pt", checkpoint_state(ours))
    out = export_hf(path, tmp_path / "hf")
    assert {"config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    assert json.loads((out / "config.json").read_text())["model_type"] == "videomae"
    hf = transformers.VideoMAEForVideoClassification.from_pretrained(out).eval()
    with torch.no_grad():
        # transformers reloads fc_norm with eps 1e-5 (ours 1e-6): a tiny difference.
        torch.testing.assert_close(hf(to_pixel_values(videos())).logits, ours(videos()), atol=1e-4, rtol=0)


def test_from_transformers_rejects_what_pmgflow_cannot_express():
    hf_config = transformers.VideoMAEConfig(
        image_size=16, patch_size=4, num_frames=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=128, use_mean_pooling=True,
    )
    with pytest.raises(PmgflowError, match="use_mean_pooling=True"):
        from_transformers(transformers.VideoMAEModel(hf_config))


def test_the_comparisons_would_see_lost_attention_biases(config):
    """The randomized biases matter: transformers' model with its query and value biases zeroed, as a conversion
    that dropped them would leave it, is far from ours."""
    ours = classifier(config)
    hf = to_transformers(ours)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith(("query.bias", "value.bias")):
                p.zero_()
        gap = (hf(to_pixel_values(videos())).logits - ours(videos())).abs().max()
    assert gap > 1e-2


def official_state(model):
    """model's weights as an official VideoMAE checkpoint names them: separate q/v biases, no key bias."""
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("attn.qkv.bias"):
            q, _, v = tensor.chunk(3)
            block = name[: -len("qkv.bias")]
            state[block + "q_bias"], state[block + "v_bias"] = q.clone(), v.clone()
        else:
            state[name] = tensor.clone()
    return state


def test_import_official_finetune_checkpoint_from_a_file(tmp_path, config):
    ours = classifier(config)
    path = tmp_path / "official.pth"
    torch.save({"module": {"module." + k: v for k, v in official_state(ours).items()}, "epoch": 9}, path)
    state = import_videomae_checkpoint(path)
    vit = VideoViT(config, num_classes=5).eval()
    vit.load_state_dict(state, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(vit(videos()), ours(videos()), atol=1e-6, rtol=0)


def test_import_official_pretrain_checkpoint(config):
    ours = pretrainer(config)
    state = import_videomae_checkpoint({"model": official_state(ours)})
    mae = VideoMAE(config).eval()
    mae.load_state_dict(state, strict=True)
    for name, tensor in ours.state_dict().items():
        if not name.endswith("qkv.bias"):
            assert torch.equal(mae.state_dict()[name], tensor), name
    mask = ours.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(mae(videos(), mask)[0], ours(videos(), mask)[0], atol=1e-6, rtol=0)


def test_import_rejects_a_learned_position_embedding(config):
    state = official_state(classifier(config))
    state["pos_embed"] = torch.randn(1, 32, 32)
    with pytest.raises(PmgflowError, match="learned position embedding"):
        import_videomae_checkpoint(state)
