"""Frame cache (decode once, skip corrupt files), clip sampling, limited labels, frames of training videos."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import pmgflow.data.store as store_module
from pmgflow.data.layouts import VideoIndex, VideoItem, ucf101_index
from pmgflow.data.store import FrameCache
from pmgflow.data.video import ClipDataset, iter_video_frames, limit_per_class, to_device
from pmgflow.errors import DataError


@pytest.fixture(scope="module")
def ucf_train(ucf_root) -> VideoIndex:
    return ucf101_index(ucf_root, 1, "train")


@pytest.fixture(scope="module")
def train_set(ucf_train) -> ClipDataset:
    return ClipDataset(FrameCache(24).videos(ucf_train), frames=4, stride=2, size=16, train=True, seed=7)


def test_cache_decodes_each_video_once_at_short_side(ucf_train):
    cache = FrameCache(20)
    seen = []
    videos = cache.load(ucf_train.items, progress=lambda done, total: seen.append((done, total)))
    assert len(videos) == 12 and all(v.shape == (16, 20, 20, 3) and v.dtype == np.uint8 for v in videos)
    assert seen[-1] == (12, 12) and cache.skipped == []


def test_disk_cache_is_reused(ucf_train, tmp_path, monkeypatch):
    first = FrameCache(16, disk_dir=tmp_path).load(ucf_train.items[:3])
    assert len(list(tmp_path.glob("*.npy"))) == 3

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(store_module, "read_video", no_decode)
    again = FrameCache(16, disk_dir=tmp_path).load(ucf_train.items[:3])
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


@pytest.fixture
def tree_with_corrupt_video(ucf_root, tmp_path):
    root = tmp_path / "ucf"
    shutil.copytree(ucf_root, root)
    index = ucf101_index(root, 1, "train")
    index.items[3].path.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    return index


def test_cache_skips_corrupt_video_and_counts_it(tree_with_corrupt_video):
    index = tree_with_corrupt_video
    cache = FrameCache(16, max_bad_fraction=0.1)
    dataset = ClipDataset(cache.videos(index), frames=4, stride=2, size=16, train=False)
    assert [p for p, _ in cache.skipped] == [index.items[3].path]
    assert len(dataset) == 11 and index.items[3] not in dataset.items


def test_cache_raises_above_bad_fraction(tree_with_corrupt_video):
    bad = tree_with_corrupt_video.items[3].path
    with pytest.raises(DataError, match="1 of 12 videos cannot be read") as info:
        FrameCache(16, max_bad_fraction=0.05).load(tree_with_corrupt_video.items)
    assert str(bad) in str(info.value)


def test_train_clip_shape_range_and_determinism(train_set, ucf_train):
    clip, label = train_set[5]
    assert clip.shape == (3, 4, 16, 16) and clip.dtype == torch.uint8 and clip.float().std() > 0.05 * 255
    unit = to_device(clip, torch.device("cpu"))
    assert unit.dtype == torch.float32 and 0.0 <= unit.min() and unit.max() <= 1.0
    assert torch.allclose(unit * 255, clip.float(), atol=1e-3)
    assert label == ucf_train.items[5].label
    assert torch.equal(clip, train_set[5][0])
    train_set.set_epoch(1)
    other_epoch = train_set[5][0]
    train_set.set_epoch(0)
    assert not torch.equal(clip, other_epoch)
    twin = ClipDataset(FrameCache(24).videos(ucf_train), frames=4, stride=2, size=16, train=True, seed=7)
    assert torch.equal(clip, twin[5][0])


def test_short_videos_loop(ucf_train):
    dataset = ClipDataset(FrameCache(16).videos(ucf_train), frames=8, stride=4, size=16, train=True)  # 29 > 16 frames
    assert dataset[0][0].shape == (3, 8, 16, 16)


def test_test_views(ucf_train):
    dataset = ClipDataset(FrameCache(16).videos(ucf_train), frames=4, stride=2, size=16, train=False, segments=2, crops=3)
    views, label = dataset[0]
    assert views.shape == (6, 3, 4, 16, 16) and label == 0
    assert not torch.equal(views[0], views[3])  # different temporal segments
    assert torch.equal(views, dataset[0][0])


def test_three_crops_along_long_side(tmp_path, square):
    from pmgflow.data.decode import write_video

    path = write_video(tmp_path / "wide.mp4", square(0, width=64))
    index = VideoIndex([VideoItem(path, 0, "g01")], ["a"])
    views = ClipDataset(FrameCache(32).videos(index), frames=2, stride=1, size=32, train=False, crops=3)[0][0]
    assert views.shape == (3, 3, 2, 32, 32)
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[1], views[2])


def _index(per_class: list[int]) -> VideoIndex:
    items = [VideoItem(f"v{c}_{i}.avi", c, f"g{i}") for c, n in enumerate(per_class) for i in range(n)]
    return VideoIndex(items, [f"c{c}" for c in range(len(per_class))])


def test_limit_per_class():
    index = _index([10, 20, 5])
    small = limit_per_class(index, per_class=3, seed=1)
    assert [sum(it.label == c for it in small.items) for c in range(3)] == [3, 3, 3]
    assert limit_per_class(index, per_class=3, seed=1) == small
    assert limit_per_class(index, per_class=3, seed=2) != small
    assert set(small.items) <= set(limit_per_class(index, per_class=6, seed=1).items)  # nested
    half = limit_per_class(index, fraction=0.5)
    assert [sum(it.label == c for it in half.items) for c in range(3)] == [5, 10, 2]
    assert [sum(it.label == c for it in limit_per_class(index, fraction=0.01).items) for c in range(3)] == [1, 1, 1]
    assert limit_per_class(index, per_class=100).items == index.items
    with pytest.raises(ValueError, match="exactly one"):
        limit_per_class(index, fraction=0.5, per_class=2)


def test_iter_video_frames(actions_spec):
    frames = list(iter_video_frames(actions_spec, 2))
    assert len(frames) == 2 * 3 * 6
    image, label, source = frames[0]
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and source.endswith(".mp4")
    assert [f[1] for f in frames[:6]] == [0, 0, 1, 1, 2, 2]  # classes interleaved
    limited = list(iter_video_frames(actions_spec, 3, limit=7))
    assert len(limited) == 7 and {f[1] for f in limited} == {0, 1, 2}
