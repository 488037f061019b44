"""Where training clips come from: videos decoded once (in memory or a capped disk cache) or streamed.

A small dataset (the embedded action set) is decoded once, whole, at a small short side, and clips are cut from
the arrays: whole-file decoding is fast per frame. A paper-scale one (UCF101 decoded at short side 280 is about
0.7 TB) cannot be kept: its clips are decoded on the fly, only the frames each clip needs, in DataLoader worker
processes. :func:`open_videos` measures the plan (from the files' metadata, before anything is decoded), picks
the mode the loader spec allows, and refuses a plan over a cap with one message naming the field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from pmgflow.data.decode import VideoReader, read_video, short_side_shape, video_info
from pmgflow.data.layouts import VideoIndex, VideoItem
from pmgflow.errors import DataError, SpecError
from pmgflow.paths import cache_dir
from pmgflow.spec.data import VideoLoaderSpec

log = logging.getLogger(__name__)

GB = 1e9

# Images and video frames are stored a little larger than the clips, so random resized crops keep resolution.
STORE_SCALE = 1.25


def store_size(clip_size: int) -> int:
    """Short side at which frames (and still images) are stored for clips of `clip_size` pixels."""
    return math.ceil(clip_size * STORE_SCALE)


class Video(Protocol):
    """One video's frames at the store's short side: ``len(video)``, ``video.read(indices)`` (uint8 n,H,W,3)."""

    def __len__(self) -> int: ...

    def read(self, indices) -> np.ndarray: ...

    def close(self) -> None: ...


class VideoSource(Protocol):
    """The readable videos of one subset (``index``) and a way to open each."""

    index: VideoIndex

    def open(self, i: int) -> Video: ...


class _ArrayVideo:
    """A decoded video (array or memory map) behind the Video interface."""

    def __init__(self, frames: np.ndarray):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, indices) -> np.ndarray:
        return np.ascontiguousarray(self.frames[np.asarray(indices)])

    def close(self) -> None:
        pass


@dataclass
class DecodedVideos:
    """Videos decoded once: clips are cut from memory (or memory-mapped .npy files)."""

    index: VideoIndex
    frames: list[np.ndarray]

    def open(self, i: int) -> Video:
        return _ArrayVideo(self.frames[i])


@dataclass
class StreamedVideos:
    """Videos read clip by clip: each ``read`` decodes only the frames asked for (from the nearest keyframe)."""

    index: VideoIndex
    size: int
    backend: str = "auto"

    def open(self, i: int) -> Video:
        return VideoReader(self.index.items[i].path, size=self.size, backend=self.backend)


class FrameCache:
    """Decodes videos once at short side `size`; keeps them in memory, or as .npy files in `disk_dir`.

    Disk entries are keyed by the video's path, modification time and byte size (and `size`), so a changed file
    is decoded again and the next run reuses the rest (memory-mapped). An unreadable video is skipped and listed
    in `skipped`; more than `max_bad_fraction` of a load unreadable raises DataError naming the files.
    """

    def __init__(self, size: int, max_bad_fraction: float = 0.05, disk_dir: str | Path | None = None, *,
                 backend: str = "auto", workers: int = 1):
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

    def disk_path(self, path: Path) -> Path:
        """The .npy file that holds (or will hold) `path` decoded at this cache's size."""
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
            cached = self.disk_path(path)
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

    def load(self, items: Sequence[VideoItem | Path],
             progress: Callable[[int, int], None] | None = None) -> list[np.ndarray]:
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
                        _raise_too_many(bad_here, len(paths), self._bad, self.max_bad_fraction)
                else:
                    frames[path] = result
                if progress:
                    progress(done, len(todo))
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)
        if bad_here:
            log.warning("skipped %d unreadable video(s) of %d: %s", len(bad_here), len(paths),
                        _listing(bad_here, self._bad))
        return [frames[p] for p in paths if p in frames]

    def videos(self, index: VideoIndex, progress: Callable[[int, int], None] | None = None) -> DecodedVideos:
        """The readable videos of `index`, decoded (unreadable ones left out of the returned index)."""
        arrays = self.load(index.items, progress)
        bad = set(self._bad)
        return DecodedVideos(VideoIndex([it for it in index.items if it.path not in bad], index.classes), arrays)


def _listing(paths: list[Path], reasons: dict[Path, str], shown: int = 10) -> str:
    text = "; ".join(f"{p} ({reasons[p]})" for p in paths[:shown])
    return text + (f"; and {len(paths) - shown} more" if len(paths) > shown else "")


def _raise_too_many(bad: list[Path], total: int, reasons: dict[Path, str], fraction: float) -> None:
    raise DataError(f"{len(bad)} of {total} videos cannot be read (more than max_bad_fraction={fraction:g}): "
                    + _listing(bad, reasons))


@dataclass(frozen=True)
class Probe:
    """A video's stream metadata (frames, height, width), or why it cannot be opened."""

    frames: int = 0
    height: int = 0
    width: int = 0
    error: str | None = None


def _probe_one(path: Path) -> Probe:
    try:
        info = video_info(path)
        frames = info.frames
        if frames <= 0:  # not in the container's header: count it
            with VideoReader(path) as reader:
                frames = len(reader)
        return Probe(frames, info.height, info.width)
    except DataError as exc:
        return Probe(error=str(exc).removeprefix(f"{path}: "))


def probe_videos(paths: Sequence[Path], threads: int = 8) -> dict[Path, Probe]:
    """Metadata of every video, read from the file headers (nothing decoded), cached by path, mtime and size."""
    def stamp(p: Path) -> str:
        try:
            st = p.stat()
            return f"{p}|{st.st_mtime_ns}|{st.st_size}"
        except OSError:
            return f"{p}|missing"

    stamps = [stamp(p) for p in paths]
    key = hashlib.sha1("\n".join(stamps).encode()).hexdigest()
    cached = cache_dir("probe") / f"{key}.json"
    if cached.is_file():
        data = json.loads(cached.read_text())
        return {p: Probe(**data[s]) for p, s in zip(paths, stamps)}
    with ThreadPoolExecutor(threads) as pool:
        probes = dict(zip(paths, pool.map(_probe_one, paths)))
    fd, tmp = tempfile.mkstemp(suffix=".json", dir=cached.parent)
    with os.fdopen(fd, "w") as f:
        json.dump({s: vars(probes[p]) for p, s in zip(paths, stamps)}, f)
    os.replace(tmp, cached)
    return probes


def decoded_bytes(probe: Probe, size: int) -> int:
    """Bytes of one video decoded to uint8 at short side `size`."""
    height, width = short_side_shape(probe.height, probe.width, size)
    return probe.frames * height * width * 3


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.npy")) if folder.is_dir() else 0


@dataclass
class StorePlan:
    """What :func:`plan_store` decided: the mode, the decoded size, and the videos that cannot be opened."""

    mode: str
    decoded_gb: float
    unreadable: dict[Path, str]

    def describe(self) -> str:
        """One line for logs."""
        how = {"memory": "decoded once, in memory", "disk": "decoded once, disk cache",
               "stream": "decoded clip by clip"}[self.mode]
        return f"videos: {how} ({self.decoded_gb:.2f} GB decoded)"


def plan_store(indexes: Sequence[VideoIndex], size: int, loader: VideoLoaderSpec) -> StorePlan:
    """Probe every video and choose how they are read; refuse (SpecError) a plan over a cap, naming the field.

    Unreadable videos beyond `loader.max_bad_fraction` raise DataError, before anything is decoded or trained.
    """
    paths = list(dict.fromkeys(it.path for ix in indexes for it in ix.items))
    probes = probe_videos(paths)
    unreadable = {p: pr.error for p, pr in probes.items() if pr.error is not None}
    for ix in indexes:
        bad = [it.path for it in ix.items if it.path in unreadable]
        if len(bad) > loader.max_bad_fraction * len(ix.items):
            _raise_too_many(bad, len(ix.items), unreadable, loader.max_bad_fraction)
    sizes = {p: decoded_bytes(pr, size) for p, pr in probes.items() if pr.error is None}
    total = sum(sizes.values())
    frames_dir = cache_dir("frames")
    cache = FrameCache(size, disk_dir=frames_dir)
    new_on_disk = sum(n for p, n in sizes.items() if not cache.disk_path(p).is_file())
    disk_after = _folder_bytes(frames_dir) + new_on_disk
    fits_memory, fits_disk = total <= loader.memory_cap_gb * GB, disk_after <= loader.disk_cap_gb * GB
    mode = loader.cache
    if mode == "auto":
        mode = ("disk" if fits_disk else "memory") if fits_memory else "stream"
    elif mode in ("memory", "disk") and not fits_memory:
        raise SpecError(f"loader.memory_cap_gb: the videos decoded at short side {size} take {total / GB:.1f} GB, "
                        f"more than {loader.memory_cap_gb:g} GB; raise the cap or use loader.cache: stream")
    if mode == "disk" and not fits_disk:
        raise SpecError(f"loader.disk_cap_gb: the frame cache {frames_dir} would grow to {disk_after / GB:.1f} GB, "
                        f"more than {loader.disk_cap_gb:g} GB; raise the cap, clear the cache, or use loader.cache: "
                        "stream")
    return StorePlan(mode, total / GB, unreadable)


def open_videos(indexes: Sequence[VideoIndex], size: int, loader: VideoLoaderSpec,
                progress: Callable[[int, int], None] | None = None) -> tuple[list[VideoSource], StorePlan]:
    """A video source per index (same order), read as :func:`plan_store` decides; unreadable videos left out."""
    plan = plan_store(indexes, size, loader)
    if plan.unreadable:
        log.warning("skipped %d unreadable video(s): %s", len(plan.unreadable),
                    _listing(list(plan.unreadable), plan.unreadable))
    readable = [VideoIndex([it for it in ix.items if it.path not in plan.unreadable], ix.classes) for ix in indexes]
    if plan.mode == "stream":
        return [StreamedVideos(ix, size, loader.backend) for ix in readable], plan
    cache = FrameCache(size, loader.max_bad_fraction, cache_dir("frames") if plan.mode == "disk" else None,
                       backend=loader.backend)
    return [cache.videos(ix, progress) for ix in readable], plan
