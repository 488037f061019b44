"""Checkpoint interop and dataset commands through the CLI: export, import, data check, mixed pre-training."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from pmgflow.cli import app
from pmgflow.model.checkpoints import build_model_from_checkpoint, load_checkpoint
from pmgflow.spec.train import PretrainSpec
from pmgflow.train.pretrain import RealClips, pretrain

runner = CliRunner()
TINY_MODEL = {"preset": "tiny", "frames": 4, "img_size": 16, "patch": 4, "embed_dim": 32, "depth": 2,
              "num_heads": 2, "decoder_embed_dim": 32, "decoder_depth": 1, "decoder_num_heads": 2}
TINY_ACTIONS = {"kind": "actions", "classes": 3, "train_per_class": 4, "test_per_class": 2, "frames": 12, "size": 32}


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    spec = PretrainSpec(model=TINY_MODEL, source={"kind": "fractal", "categories": 2, "images": 16, "size": 32},
                        epochs=1, batch_size=8, threads=1)
    return pretrain(spec, root=root)["checkpoint"]


def test_export_then_import_round_trips_through_transformers(tmp_path, pretrained):
    transformers = pytest.importorskip("transformers")
    r = invoke("export", pretrained, "--format", "hf", "--out", tmp_path / "hf")
    assert r.exit_code == 0, r.output
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "hf").iterdir()}
    assert isinstance(transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf"),
                      transformers.VideoMAEForPreTraining)
    r = invoke("import", tmp_path / "hf", "--out", tmp_path / "back.pt")
    assert r.exit_code == 0 and "pretrain checkpoint" in r.output, r.output
    ours, back = load_checkpoint(pretrained)["model"], load_checkpoint(tmp_path / "back.pt")["model"]
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

    official = build_videomae(tiny).state_dict()
    torch.save({"module": official}, tmp_path / "official_tiny.pth")
    r = invoke("import", tmp_path / "official_tiny.pth", "--out", tmp_path / "imported.pt", "--preset", "tiny")
    assert r.exit_code == 0 and "pretrain checkpoint" in r.output, r.output
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
