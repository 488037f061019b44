"""Fine-tuning data: each video decoded once into memory (or a .npy disk cache), clips sampled from there.

Random-access clip reads from compressed files are slow (tens of clips/s); a whole-file decode is fast, so
:class:`FrameCache` decodes every video once at a small short side and :class:`ClipDataset` cuts clips from
the arrays: random temporal start, random resized crop and flip for training; evenly spaced segments times
spatial crops for testing (VideoMAE's multi-view test).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from pmgflow.data.decode import read_video
from pmgflow.data.layouts import VideoIndex, VideoItem, index_dataset
from pmgflow.errors import DataError
from pmgflow.spec.data import DatasetSpec

log = logging.getLogger(__name__)


class FrameCache:
    """Decodes videos once at short side `size`; keeps them in memory, or as .npy files in `disk_dir`.

    Disk entries are keyed by the video's path, modification time and byte size (and `size`), so a changed file
    is decoded again and the next run reuses the rest (memory-mapped). An unreadable video is skipped and listed
    in `skipped`; more than `max_bad_fraction` of a load unreadable raises DataError naming the files.
    """

    def __init__(
        self,
        size: int,
        max_bad_fraction: float = 0.05,
        disk_dir: str | Path | None = None,
        *,
        backend: str = "auto",
        workers: int = 1,
    ):
        self.size = size
        self.max_bad_fraction = max_bad_fraction
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        self.backend = backend
        self.workers = workers
        self._bad: dict[Path, str] = {}

    @property
    def skipped(self) -> list[tuple[Path, str]]:
        """(path, reason) of every video this cache could not read, in the order met."""
        return list(self._bad.items())

    def _disk_path(self, path: Path) -> Path:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}|{self.size}"
        return self.disk_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"

    def _decode(self, path: Path) -> np.ndarray | str:
        """The frames of one video, or the reason it cannot be read."""
        try:
            if self.disk_dir is None:
                return read_video(path, size=self.size, backend=self.backend)
            if not path.is_file():
                raise DataError(f"{path}: video file not found")
            cached = self._disk_path(path)
            if not cached.is_file():
                frames = read_video(path, size=self.size, backend=self.backend)
                self.disk_dir.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(suffix=".npy", dir=self.disk_dir)
                with os.fdopen(fd, "wb") as f:
                    np.save(f, frames)
                os.replace(tmp, cached)
            return np.load(cached, mmap_mode="r")
        except DataError as exc:
            return str(exc).removeprefix(f"{path}: ")

    def load(
        self, items: Sequence[VideoItem | Path], progress: Callable[[int, int], None] | None = None
    ) -> list[np.ndarray]:
        """uint8 (T, H, W, 3) arrays of the readable items, in order (unreadable ones left out and listed)."""
        paths = [Path(it.path if isinstance(it, VideoItem) else it) for it in items]
        todo = [p for p in paths if p not in self._bad]
        limit = self.max_bad_fraction * len(paths)
        bad_here = [p for p in paths if p in self._bad]
        frames: dict[Path, np.ndarray] = {}
        pool = ThreadPoolExecutor(self.workers) if self.workers > 1 else None
        try:
            results = pool.map(self._decode, todo) if pool else map(self._decode, todo)
            for done, (path, result) in enumerate(zip(todo, results), 1):
                if isinstance(result, str):
                    self._bad[path] = result
                    bad_here.append(path)
                    if len(bad_here) > limit:
                        self._raise_too_many(bad_here, len(paths))
                else:
                    frames[path] = result
                if progress:
                    progress(done, len(todo))
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
        if len(bad_here) > limit:
            self._raise_too_many(bad_here, len(paths))
        if bad_here:
            listing = _listing(bad_here, self._bad)
            log.warning("skipped %d unreadable video(s) of %d: %s", len(bad_here), len(paths), listing)
        return [frames[p] for p in paths if p in frames]

    def _raise_too_many(self, bad: list[Path], total: int) -> None:
        raise DataError(
            f"{len(bad)} of {total} videos cannot be read (more than max_bad_fraction={self.max_bad_fraction:g}): "
            + _listing(bad, self._bad)
        )


def _listing(paths: list[Path], reasons: dict[Path, str], shown: int = 10) -> str:
    text = "; ".join(f"{p} ({reasons[p]})" for p in paths[:shown])
    return text + (f"; and {len(paths) - shown} more" if len(paths) > shown else "")


def _view_starts(length: int, extent: int, views: int) -> list[int]:
    """Start offsets of `views` windows of `extent` spread evenly over `length` (one view: centred)."""
    room = max(length - extent, 0)
    if views == 1:
        return [room // 2]
    return [round(room * k / (views - 1)) for k in range(views)]


def _resize_clip(clip: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 (T, h, w, 3) -> float32 (3, T, size, size) in [0, 1]."""
    x = clip.permute(0, 3, 1, 2).float()
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return (x / 255.0).clamp_(0.0, 1.0).permute(1, 0, 2, 3).contiguous()


class ClipDataset(Dataset):
    """Clips of `frames` frames every `stride` source frames, square `size` crops, from an index and a cache.

    Train: (3, T, size, size) float32 in [0, 1] with a random start (short videos loop), a random resized crop
    (area fraction in `scale`, aspect 3/4 to 4/3) and a random horizontal flip. Test: (segments * crops, 3, T,
    size, size), `segments` evenly spaced clips times `crops` square crops along the long side (1 = centre).
    Randomness comes from a generator per (seed, epoch, item): deterministic with any number of loader workers.
    """

    def __init__(
        self,
        index: VideoIndex,
        cache: FrameCache,
        *,
        frames: int,
        stride: int,
        size: int,
        train: bool,
        segments: int = 1,
        crops: int = 1,
        seed: int = 0,
        scale: tuple[float, float] = (0.4, 1.0),
        progress: Callable[[int, int], None] | None = None,
    ):
        if frames < 1 or stride < 1 or size < 1 or segments < 1 or crops < 1:
            raise ValueError("frames, stride, size, segments and crops must be positive")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.videos = cache.load(index.items, progress)
        bad = {path for path, _ in cache.skipped}
        self.items = [it for it in index.items if it.path not in bad]
        self.classes = index.classes
        self.frames, self.stride, self.size, self.train = frames, stride, size, train
        self.segments, self.crops, self.seed, self.scale = segments, crops, seed, scale
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> list[int]:
        """The label of every clip source, in order."""
        return [it.label for it in self.items]

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws of training clips (call once per epoch, before iterating)."""
        self.epoch = epoch

    def _time_indices(self, length: int, start: int) -> np.ndarray:
        return (start + np.arange(self.frames) * self.stride) % length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        video, label = self.videos[i], self.items[i].label
        length, height, width = video.shape[:3]
        span = (self.frames - 1) * self.stride + 1
        if not self.train:
            views = []
            side = min(height, width)
            for t0 in _view_starts(length, span, self.segments):
                clip = torch.from_numpy(np.ascontiguousarray(video[self._time_indices(length, t0)]))
                for s0 in _view_starts(max(height, width), side, self.crops):
                    crop = clip[:, s0 : s0 + side] if height > width else clip[:, :, s0 : s0 + side]
                    views.append(_resize_clip(crop, self.size))
            return torch.stack(views), label
        rng = np.random.default_rng([self.seed, self.epoch, i])
        t0 = rng.integers(0, length - span + 1) if length >= span else rng.integers(0, length)
        clip = torch.from_numpy(np.ascontiguousarray(video[self._time_indices(length, t0)]))
        y, x, h, w = self._random_box(rng, height, width)
        out = _resize_clip(clip[:, y : y + h, x : x + w], self.size)
        if rng.random() < 0.5:
            out = out.flip(-1)
        return out, label

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
