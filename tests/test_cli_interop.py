"""Checkpoint interop and dataset commands through the CLI: export, import, data check, mixed pre-training."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from pmgflow.cli import app
from pmgflow.model.checkpoints import build_model_from_checkpoint, checkpoint_state, load_checkpoint, save_checkpoint
from pmgflow.spec.train import PretrainSpec
from pmgflow.train.pretrain import RealClips, pretrain

from .conftest import TINY_MODEL, randomize

runner = CliRunner()
TINY_ACTIONS = {"kind": "actions", "classes": 3, "train_per_class": 4, "test_per_class": 2, "frames": 12, "size": 32}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    spec = PretrainSpec(model=TINY_MODEL, source={"kind": "fractal", "categories": 2, "images": 16, "size": 32},
                        epochs=1, batch_size=8, threads=1)
    return pretrain(spec, root=root)["checkpoint"]


def randomized_checkpoint(checkpoint, path):
    """The checkpoint's model with every weight and bias random (the query, value and key biases too), saved at
    path: after a short training the biases are still near zero, and a conversion that lost one could pass."""
    model = randomize(build_model_from_checkpoint(checkpoint))
    return save_checkpoint(path, checkpoint_state(model)), model


def test_export_then_import_round_trips_through_transformers(tmp_path, pretrained):
    transformers = pytest.importorskip("transformers")
    from pmgflow.model.interop import to_pixel_values

    source, model = randomized_checkpoint(pretrained, tmp_path / "random.pt")
    r = invoke("export", source, "--format", "hf", "--out", tmp_path / "hf")
    assert r.exit_code == 0, r.output
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    hf = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    videos = torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    mask = model.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss, pred, _ = model(videos, mask)
        out = hf(to_pixel_values(videos), bool_masked_pos=mask)
    # transformers reloads the decoder's final norm with eps 1e-5 (ours 1e-6): a tiny difference.
    torch.testing.assert_close(out.logits, pred, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.loss, loss, atol=1e-4, rtol=0)
    r = invoke("import", tmp_path / "hf", "--out", tmp_path / "back.pt")
    assert r.exit_code == 0 and "pretrain checkpoint" in r.output, r.output
    ours, back = load_checkpoint(source)["model"], load_checkpoint(tmp_path / "back.pt")["model"]
    assert ours.keys() == back.keys()
    for k in ours:
        if k.endswith("attn.qkv.bias"):  # the key bias is dropped on export (it cancels in softmax)
            d = ours[k].shape[0] // 3
            assert torch.equal(ours[k][:d], back[k][:d]) and torch.equal(ours[k][2 * d:], back[k][2 * d:])
        else:
            assert torch.equal(ours[k], back[k]), k


def test_import_official_videomae_checkpoint_and_finetune_it(tmp_path, pretrained):
    model = build_model_from_checkpoint(pretrained)
    official = {}
    for k, v in model.state_dict().items():
        if k.endswith("attn.qkv.bias"):
            d = v.shape[0] // 3
            official[k.replace("qkv.bias", "q_bias")], official[k.replace("qkv.bias", "v_bias")] = v[:d], v[2 * d:]
        else:
            official[k] = v
    torch.save({"model": official}, tmp_path / "official.pth")
    r = invoke("import", tmp_path / "official.pth", "--out", tmp_path / "imported.pt", "--preset", "base")
    assert r.exit_code == 2 and "do not fit preset 'base'" in r.output  # wrong architecture: clear error
    spec_dir = tmp_path / "preset"
    r = invoke("import", tmp_path / "official.pth", "--out", tmp_path / "imported.pt", "--preset", "tiny")
    assert r.exit_code == 2  # the tiny test model is not the tiny preset either
    # an official checkpoint of the real tiny preset imports and fine-tunes
    tiny = PretrainSpec(model={"preset": "tiny"}, epochs=0)
    from pmgflow.train.pretrain import build_videomae

    official = {}  # random weights and biases, q/v biases apart and no key bias, as VideoMAE names them
    for k, v in randomize(build_videomae(tiny)).state_dict().items():
        if k.endswith("attn.qkv.bias"):
            d = v.shape[0] // 3
            official[k.replace("qkv.bias", "q_bias")], official[k.replace("qkv.bias", "v_bias")] = v[:d], v[2 * d:]
        else:
            official[k] = v
    torch.save({"module": official}, tmp_path / "official_tiny.pth")
    r = invoke("import", tmp_path / "official_tiny.pth", "--out", tmp_path / "imported.pt", "--preset", "tiny")
    assert r.exit_code == 0 and "pretrain checkpoint" in r.output, r.output
    imported = load_checkpoint(tmp_path / "imported.pt")["model"]
    for k, v in imported.items():
        if k.endswith("attn.qkv.bias"):
            q, key, value = v.chunk(3)
            assert torch.equal(q, official[k.replace("qkv.bias", "q_bias")]) and not key.any()
            assert torch.equal(value, official[k.replace("qkv.bias", "v_bias")])
        else:
            assert torch.equal(v, official[k]), k
    ft = tmp_path / "ft.yaml"
    ft.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 4, "threads": 1, "test_segments": 1, "test_crops": 1,
                                  "dataset": TINY_ACTIONS}))
    r = invoke("finetune", ft, "--init", tmp_path / "imported.pt", "--out", spec_dir)
    assert r.exit_code == 0, r.output
    (result,) = spec_dir.glob("finetune-*/result.json")
    assert json.loads(result.read_text())["missing_keys"] == 4


def test_data_check_counts_and_lists_unreadable(tmp_path):
    spec = tmp_path / "actions.yaml"
    spec.write_text(yaml.safe_dump({**TINY_ACTIONS, "root": str(tmp_path / "set")}))
    r = invoke("data", "check", spec)
    assert r.exit_code == 0, r.output
    assert "3 classes" in r.output and "0 unreadable" in r.output
    victim = next((tmp_path / "set" / "videos").rglob("*.mp4"))
    victim.write_bytes(b"not a video")
    r = invoke("data", "check", spec)
    assert r.exit_code == 1 and "1 unreadable" in r.output and victim.name in r.output


def test_mixed_pretraining_uses_real_clips(tmp_path):
    spec = PretrainSpec(model=TINY_MODEL, source={"kind": "fractal", "categories": 2, "images": 16, "size": 32},
                        epochs=1, batch_size=8, threads=1, real_mix={"dataset": TINY_ACTIONS, "ratio": 0.5})
    real = RealClips(spec, torch.device("cpu"), micro=8, micro_batches=1)
    real.start_epoch(0)
    videos = torch.zeros(8, 3, 4, 16, 16)
    out = real.replace(videos.clone())
    assert out[:4].abs().sum(dim=(1, 2, 3, 4)).gt(0).all() and out[4:].eq(0).all()
    result = pretrain(spec, root=tmp_path)
    assert result["pretrain_loss"] > 0
