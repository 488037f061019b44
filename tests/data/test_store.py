"""Random-access reads, streamed clips equal to decoded ones, loaders deterministic across worker counts, caps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pmgflow.data.decode import VideoReader, available_backends, read_video, write_video
from pmgflow.data.layouts import VideoIndex, VideoItem, ucf101_index
from pmgflow.data.store import FrameCache, StreamedVideos, open_videos, plan_store
from pmgflow.data.video import ClipDataset, EpochSampler, clip_loader
from pmgflow.errors import DataError, SpecError
from pmgflow.spec.data import VideoLoaderSpec

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def long_mp4(tmp_path_factory, square) -> tuple:
    """A 60-frame h264 mp4 with a keyframe every 8 frames, and its frames decoded whole."""
    path = write_video(tmp_path_factory.mktemp("long") / "long.mp4", square(3, frames=60, height=24, width=40),
                       keyframe_interval=8)
    return path, read_video(path, backend="pyav")


@pytest.mark.parametrize("backend", available_backends())
def test_reader_reads_just_the_frames_asked_for(long_mp4, backend):
    path, whole = long_mp4
    with VideoReader(path, backend=backend) as reader:
        assert len(reader) == 60
        indices = [50, 3, 3, 17, 59, 0]
        frames = reader.read(indices)
    assert frames.shape == (6, 24, 40, 3)
    # h264 decoding is exact, so a seek lands on the very frames a sequential decode gives
    assert np.array_equal(frames, whole[indices])


def test_reader_resizes_like_a_whole_decode(long_mp4):
    path, _ = long_mp4
    with VideoReader(path, size=12) as reader:
        assert np.array_equal(reader.read([5, 40]), read_video(path, size=12)[[5, 40]])


def test_reader_refuses_bad_indices_and_files(long_mp4, tmp_path):
    path, _ = long_mp4
    with VideoReader(path) as reader, pytest.raises(DataError, match="frame indices"):
        reader.read([60])
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    with pytest.raises(DataError, match=f"{bad}: cannot read video"):
        VideoReader(bad)


@pytest.fixture(scope="module")
def ucf(ucf_root) -> tuple[VideoIndex, VideoIndex]:
    return ucf101_index(ucf_root, 1, "train"), ucf101_index(ucf_root, 1, "test")


def _pair(index: VideoIndex, **kw) -> tuple[ClipDataset, ClipDataset]:
    decoded = ClipDataset(FrameCache(20).videos(index), **kw)
    streamed = ClipDataset(StreamedVideos(index, 20), **kw)
    return decoded, streamed


def test_streamed_clips_equal_decoded_clips(ucf):
    train, test = ucf
    decoded, streamed = _pair(train, frames=8, stride=3, size=16, train=True, seed=4)  # 22 > 16 frames: loops
    assert streamed.streaming and not decoded.streaming
    for epoch in (0, 1):
        for i in range(len(train.items)):
            a, b = decoded[i, epoch], streamed[i, epoch]
            assert a[1] == b[1] and torch.equal(a[0], b[0])
    decoded, streamed = _pair(test, frames=4, stride=2, size=16, train=False, segments=5, crops=3)
    views = streamed[0][0]
    assert views.shape == (15, 3, 4, 16, 16) and torch.equal(views, decoded[0][0])


def test_epoch_sampler_orders():
    sampler = EpochSampler(5, seed=3)
    first = list(sampler)
    assert sorted(i for i, _ in first) == list(range(5)) and {e for _, e in first} == {0}
    sampler.set_epoch(1)
    assert [i for i, _ in sampler] != [i for i, _ in first] and {e for _, e in sampler} == {1}
    assert [i for i, _ in EpochSampler(3, length=7)] == [0, 1, 2, 0, 1, 2, 0]
    cycled = [i for i, _ in EpochSampler(3, seed=0, length=7)]
    assert len(cycled) == 7 and sorted(cycled[:3]) == sorted(cycled[3:6]) == [0, 1, 2]


def _epochs(data: ClipDataset, workers: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = clip_loader(data, 4, VideoLoaderSpec(workers=workers, prefetch=2), CPU, seed=9, length=8)
    out = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        out += list(loader)
    return out


def test_loader_gives_the_same_clips_with_any_number_of_workers(ucf):
    streamed = ClipDataset(StreamedVideos(ucf[0], 20), frames=4, stride=2, size=16, train=True, seed=2)
    reference = _epochs(streamed, 0)
    assert len(reference) == 4 and not torch.equal(reference[0][0], reference[2][0])  # epochs differ
    for workers in (1, 2):
        again = _epochs(streamed, workers)
        assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(reference, again))


@pytest.fixture
def cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("PMGFLOW_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_plan_follows_the_caps(ucf, cache_root):
    auto = plan_store(ucf, 20, VideoLoaderSpec())
    # 18 videos x 16 frames x 20 x 20 x 3 bytes
    assert auto.mode == "disk" and auto.decoded_gb == pytest.approx(18 * 16 * 20 * 20 * 3 / 1e9)
    tiny = 1e-6
    assert plan_store(ucf, 20, VideoLoaderSpec(memory_cap_gb=tiny)).mode == "stream"
    assert plan_store(ucf, 20, VideoLoaderSpec(disk_cap_gb=tiny)).mode == "memory"
    with pytest.raises(SpecError, match=r"loader\.memory_cap_gb: .* 0\.0 GB, more than 1e-06 GB"):
        plan_store(ucf, 20, VideoLoaderSpec(cache="memory", memory_cap_gb=tiny))
    with pytest.raises(SpecError, match=r"loader\.disk_cap_gb: the frame cache .* more than 1e-06 GB"):
        plan_store(ucf, 20, VideoLoaderSpec(cache="disk", disk_cap_gb=tiny))
    assert not (cache_root / "frames").exists() or not list((cache_root / "frames").iterdir())  # nothing decoded


def test_open_videos_streams_or_decodes(ucf, cache_root):
    (train, test), plan = open_videos(ucf, 20, VideoLoaderSpec(cache="stream"))
    assert plan.mode == "stream" and isinstance(train, StreamedVideos) and len(test.index.items) == 6
    (train, _), plan = open_videos(ucf, 20, VideoLoaderSpec())
    assert plan.mode == "disk" and len(list((cache_root / "frames").glob("*.npy"))) == 18
    assert len(train.open(0)) == 16


def test_unreadable_videos_are_refused_before_decoding(ucf_root, tmp_path, cache_root):
    index = ucf101_index(ucf_root, 1, "train")
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"RIFF nonsense")
    with_bad = VideoIndex(index.items + [VideoItem(bad, 0, "g09")], index.classes)
    with pytest.raises(DataError, match=f"1 of 13 videos cannot be read .*{bad}"):
        plan_store([with_bad], 20, VideoLoaderSpec(max_bad_fraction=0.05))
    (videos,), plan = open_videos([with_bad], 20, VideoLoaderSpec(max_bad_fraction=0.1, cache="stream"))
    assert list(plan.unreadable) == [bad] and len(videos.index.items) == 12


def test_a_video_that_fails_mid_run_is_replaced(ucf, tmp_path):
    items = list(ucf[0].items)
    broken = tmp_path / "gone.avi"
    broken.write_bytes(b"x" * 100)
    items[0] = VideoItem(broken, items[0].label, "g01")
    data = ClipDataset(StreamedVideos(VideoIndex(items, ucf[0].classes), 20), frames=4, stride=2, size=16,
                       train=True)
    clip, label = data[0]
    assert clip.shape == (3, 4, 16, 16) and label == items[1].label
