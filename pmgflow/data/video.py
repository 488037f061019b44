"""Fine-tuning clips: random temporal start, random resized crop and flip for training; evenly spaced segments
times spatial crops for testing (VideoMAE's multi-view test); and the DataLoader that feeds them.

Clips come from a :class:`pmgflow.data.store.VideoSource` (videos decoded once, or streamed clip by clip): the
same seed gives the same frames, crop and flip from either, with any number of loader workers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from pmgflow.data.decode import read_video
from pmgflow.data.layouts import VideoIndex, VideoItem, index_dataset
from pmgflow.data.store import StreamedVideos, VideoSource
from pmgflow.errors import DataError
from pmgflow.spec.data import DatasetSpec, VideoLoaderSpec

log = logging.getLogger(__name__)


def _view_starts(length: int, extent: int, views: int) -> list[int]:
    """Start offsets of `views` windows of `extent` spread evenly over `length` (one view: centred)."""
    room = max(length - extent, 0)
    if views == 1:
        return [room // 2]
    return [round(room * k / (views - 1)) for k in range(views)]


def _resize_clip(clip: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, h, w, 3) -> uint8 (3, T, size, size).

    Resized in uint8 (torch's vectorised channels-last path: 4 to 8 times faster than in float32 on the CPU,
    within one grey level of it), and kept in uint8 so loader workers, pinned memory and the copy to the
    device move a quarter of the bytes; :func:`to_device` makes [0, 1] floats on the device.
    """
    x = clip.permute(0, 3, 1, 2)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.permute(1, 0, 2, 3).contiguous()


def to_device(videos: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 clips (..., 3, T, H, W) from a :class:`ClipDataset` -> float32 in [0, 1] on `device`."""
    return videos.to(device, non_blocking=True).float().div_(255)


class ClipDataset(Dataset):
    """Clips of `frames` frames every `stride` source frames, square `size` crops, from a video source.

    Train: (3, T, size, size) uint8 (see :func:`to_device`) with a random start (short videos loop), a random resized crop
    (area fraction in `scale`, aspect 3/4 to 4/3) and a random horizontal flip. Test: (segments * crops, 3, T,
    size, size), `segments` evenly spaced clips times `crops` square crops along the long side (1 = centre).
    Randomness comes from a generator per (seed, epoch, item): deterministic with any number of loader workers.
    An item is an index, or an (index, epoch) pair (what :class:`EpochSampler` yields). A video that fails to
    decode mid-run (streaming) is replaced by the next one, with a warning; `retries` failures in a row stop.
    """

    def __init__(
        self,
        videos: VideoSource,
        *,
        frames: int,
        stride: int,
        size: int,
        train: bool,
        segments: int = 1,
        crops: int = 1,
        seed: int = 0,
        scale: tuple[float, float] = (0.4, 1.0),
        retries: int = 3,
    ):
        if frames < 1 or stride < 1 or size < 1 or segments < 1 or crops < 1:
            raise ValueError("frames, stride, size, segments and crops must be positive")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.videos = videos
        self.items, self.classes = videos.index.items, videos.index.classes
        self.frames, self.stride, self.size, self.train = frames, stride, size, train
        self.segments, self.crops, self.seed, self.scale = segments, crops, seed, scale
        self.retries = retries
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        """The label of every clip source, in order."""
        return [it.label for it in self.items]

    @property
    def streaming(self) -> bool:
        """True when clips are decoded on the fly (worth loader worker processes)."""
        return isinstance(self.videos, StreamedVideos)

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws of training clips (call once per epoch, before iterating)."""
        self.epoch = epoch

    def _time_indices(self, length: int, start: int) -> np.ndarray:
        return (start + np.arange(self.frames) * self.stride) % length

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        i, epoch = key if isinstance(key, tuple) else (key, self.epoch)
        for attempt in range(self.retries):
            j = (i + attempt) % len(self.items)
            try:
                clip = self._clip(j, epoch) if self.train else self._views(j)
                return clip, self.items[j].label
            except DataError as exc:
                log.warning("%s; using the next video instead", exc)
                reason = exc
        raise DataError(f"{self.retries} videos in a row could not be read, the last: {reason}")

    def _views(self, i: int) -> torch.Tensor:
        video = self.videos.open(i)
        try:
            length = len(video)
            span = (self.frames - 1) * self.stride + 1
            starts = _view_starts(length, span, self.segments)
            clips = video.read(np.concatenate([self._time_indices(length, t0) for t0 in starts]))
        finally:
            video.close()
        height, width = clips.shape[1:3]
        side = min(height, width)
        views = []
        for clip in torch.from_numpy(clips).split(self.frames):
            for s0 in _view_starts(max(height, width), side, self.crops):
                crop = clip[:, s0 : s0 + side] if height > width else clip[:, :, s0 : s0 + side]
                views.append(_resize_clip(crop, self.size))
        return torch.stack(views)

    def _clip(self, i: int, epoch: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, epoch, i])
        video = self.videos.open(i)
        try:
            length = len(video)
            span = (self.frames - 1) * self.stride + 1
            t0 = rng.integers(0, length - span + 1) if length >= span else rng.integers(0, length)
            clip = torch.from_numpy(video.read(self._time_indices(length, t0)))
        finally:
            video.close()
        y, x, h, w = self._random_box(rng, *clip.shape[1:3])
        out = _resize_clip(clip[:, y : y + h, x : x + w], self.size)
        if rng.random() < 0.5:
            out = out.flip(-1)
        return out

    def _random_box(self, rng: np.random.Generator, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, h, w) of a crop covering a `scale` fraction of the frame at aspect 3/4 to 4/3."""
        area = height * width
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= width and 0 < h <= height:
                return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
        side = min(height, width)
        return (height - side) // 2, (width - side) // 2, side, side


class EpochSampler(Sampler):
    """Items as (index, epoch) pairs, shuffled by (seed, epoch) or in order, `length` of them (default: all).

    The epoch travels with each index, so loader workers that persist across epochs draw that epoch's clips.
    Asking for more items than there are cycles through fresh permutations.
    """

    def __init__(self, n: int, seed: int | None = None, length: int | None = None):
        self.n, self.seed, self.length, self.epoch = n, seed, length or n, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order (and clips) the next iteration yields."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.seed is None:
            order = np.arange(self.length) % self.n
        else:
            rng = np.random.default_rng([self.seed, self.epoch])
            order = np.concatenate([rng.permutation(self.n) for _ in range(-(-self.length // self.n))])
        return ((int(i), self.epoch) for i in order[: self.length])


def loader_workers(loader: VideoLoaderSpec, streaming: bool) -> int:
    """Worker processes: the spec's, else none for decoded frames and the CPUs given minus one when streaming."""
    if loader.workers is not None:
        return loader.workers
    if not streaming:
        return 0
    cpus = int(os.environ.get("OMP_NUM_THREADS", 0)) or len(os.sched_getaffinity(0))
    return max(1, cpus - 1)


def clip_loader(data: ClipDataset, batch_size: int, loader: VideoLoaderSpec, device: torch.device, *,
                seed: int | None = None, length: int | None = None, drop_last: bool = False) -> DataLoader:
    """A DataLoader over `data` with an :class:`EpochSampler` (``loader.sampler.set_epoch`` before each epoch).

    Workers persist across epochs and prefetch; batches are pinned for a CUDA device.
    """
    workers = loader_workers(loader, data.streaming)
    sampler = EpochSampler(len(data), seed, length)
    return DataLoader(data, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=workers,
                      persistent_workers=workers > 0, prefetch_factor=loader.prefetch if workers else None,
                      pin_memory=device.type == "cuda")


def limit_per_class(
    index: VideoIndex, fraction: float | None = None, per_class: int | None = None, seed: int = 0
) -> VideoIndex:
    """A stratified subset: `per_class` videos (or a `fraction`, at least one) of each class, drawn by seed.

    Smaller subsets of the same seed are contained in larger ones; the original order is kept.
    """
    if (fraction is None) == (per_class is None):
        raise ValueError("give exactly one of fraction and per_class")
    if fraction is not None and not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be at least 1, got {per_class}")
    keep: set[int] = set()
    for label in range(len(index.classes)):
        members = [i for i, it in enumerate(index.items) if it.label == label]
        k = per_class if per_class is not None else max(1, round(fraction * len(members)))
        order = np.random.default_rng([seed, label]).permutation(len(members))
        keep.update(members[j] for j in order[:k])
    return VideoIndex([it for i, it in enumerate(index.items) if i in keep], list(index.classes))


def _interleave_classes(items: list[VideoItem]) -> list[VideoItem]:
    """Round-robin over classes, so that any prefix is balanced."""
    by_class: dict[int, list[VideoItem]] = {}
    for it in items:
        by_class.setdefault(it.label, []).append(it)
    queues = [by_class[c] for c in sorted(by_class)]
    return [q[k] for k in range(max(map(len, queues))) for q in queues if k < len(q)]


def iter_video_frames(
    spec: DatasetSpec, frames_per_video: int, limit: int | None = None
) -> Iterator[tuple[np.ndarray, int, str]]:
    """(uint8 HWC frame, label, source path) of evenly spaced frames of the training videos, classes interleaved.

    At most `limit` frames in all. Unreadable videos are skipped with a warning; none readable is a DataError.
    """
    index = index_dataset(spec, "train")
    yielded, failed = 0, []
    for item in _interleave_classes(index.items):
        if limit is not None and yielded >= limit:
            return
        try:
            video = read_video(item.path)
        except DataError as exc:
            failed.append(str(exc))
            log.warning("%s", exc)
            continue
        count = min(frames_per_video, len(video))
        for t in ((np.arange(count) + 0.5) * len(video) / count).astype(int):
            if limit is not None and yielded >= limit:
                return
            yielded += 1
            yield np.ascontiguousarray(video[t]), item.label, str(item.path)
    if yielded == 0:
        raise DataError(f"no readable training video in {index.items[0].path.parent.parent}: {'; '.join(failed[:5])}")
