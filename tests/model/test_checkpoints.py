from fractions import Fraction

import pytest
import torch

from pmgflow.errors import PmgflowError
from pmgflow.model import (
    VideoMAE,
    VideoViT,
    build_model_from_checkpoint,
    checkpoint_state,
    load_checkpoint,
    save_checkpoint,
)

def videos():
    return torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0))


def test_pretrain_round_trip_gives_identical_outputs(tmp_path, tiny_config):
    torch.manual_seed(0)
    mae = VideoMAE(tiny_config).eval()
    path = save_checkpoint(tmp_path / "runs" / "a" / "pretrain.pt", checkpoint_state(mae, epoch=3))
    ckpt = load_checkpoint(path)
    assert ckpt["kind"] == "pretrain" and ckpt["epoch"] == 3 and ckpt["model_config"] == mae.model_config
    again = build_model_from_checkpoint(ckpt).eval()
    assert isinstance(again, VideoMAE)
    mask = mae.tube_mask(2, "cpu", generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(mae(videos(), mask), again(videos(), mask)):
            assert torch.equal(a, b)


def test_finetune_round_trip_from_a_path(tmp_path, tiny_config):
    torch.manual_seed(0)
    vit = VideoViT(tiny_config, num_classes=5).eval()
    path = save_checkpoint(tmp_path / "finetune.pt", checkpoint_state(vit))
    again = build_model_from_checkpoint(path).eval()
    assert isinstance(again, VideoViT) and again.num_classes == 5
    with torch.no_grad():
        assert torch.equal(vit(videos()), again(videos()))


def test_save_is_atomic_and_overwrites(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})
    save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, {"step": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"step": lambda: 2})  # not picklable
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_load_is_weights_only(tmp_path):
    path = tmp_path / "unsafe.pt"
    torch.save({"model": {}, "payload": Fraction(1, 3)}, path)  # an arbitrary object needs full unpickling
    with pytest.raises(PmgflowError, match="unsafe.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_corrupt_checkpoint_names_the_file(tmp_path, content):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(content)
    with pytest.raises(PmgflowError, match=r"corrupt\.pt is corrupt"):
        load_checkpoint(path)


def test_truncated_checkpoint_names_the_file(tmp_path, tiny_config):
    path = save_checkpoint(tmp_path / "cut.pt", checkpoint_state(VideoViT(tiny_config)))
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(PmgflowError, match=r"cut\.pt is corrupt"):
        build_model_from_checkpoint(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(PmgflowError, match=r"nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_mismatched_config_is_a_clear_error(tmp_path, tiny_config):
    state = checkpoint_state(VideoViT(tiny_config))
    state["model_config"]["depth"] = 3
    path = save_checkpoint(tmp_path / "bad.pt", state)
    with pytest.raises(PmgflowError, match=r"bad\.pt: weights do not match model_config"):
        build_model_from_checkpoint(path)
    with pytest.raises(PmgflowError, match="kind 'other'"):
        build_model_from_checkpoint({**state, "kind": "other"})
