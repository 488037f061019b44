"""Video decoding (decord or PyAV) and h264 writing; every failure is a DataError that names the file.

Two ways in: :func:`read_video` decodes a whole file (fast per frame: small datasets are decoded once and kept),
and :class:`VideoReader` reads only the frames a clip needs (decord ``get_batch``, PyAV seek to the keyframe
before them): what paper-scale datasets use, in DataLoader workers. Random access is cheap when keyframes are
close together, which is what ``pmgflow data prepare`` (h264, short keyframe interval) gives.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pmgflow.errors import DataError

# Frames resized per call: bounds the float32 copy a resize needs on long, large videos.
_CHUNK = 64
# Distinct decoder messages kept in an unreadable file's reason.
_MAX_MESSAGES = 3


def available_backends() -> list[str]:
    """Installed decoding backends, preferred first ("decord", then "pyav")."""
    names = {"decord": "decord", "pyav": "av"}
    return [name for name, module in names.items() if importlib.util.find_spec(module) is not None]


def short_side_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the short side equal to `size` and the aspect ratio kept (long side rounded)."""
    if height <= width:
        return size, max(size, round(width * size / height))
    return max(size, round(height * size / width)), size


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 (T, H, W, 3) frames with antialiased bilinear filtering (the same for every backend).

    Resized in uint8 on channels-last memory, torch's vectorised path: several times faster than in float32 (it
    was most of a streamed 16x224x224 clip's time) and within one grey level of it.
    """
    if frames.shape[1:3] == (height, width):
        return frames
    out = np.empty((len(frames), height, width, 3), np.uint8)
    for i in range(0, len(frames), _CHUNK):
        x = torch.from_numpy(np.ascontiguousarray(frames[i : i + _CHUNK])).permute(0, 3, 1, 2)
        y = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        out[i : i + _CHUNK] = y.permute(0, 2, 3, 1).numpy()
    return out


def _resize_to(chunks: list[np.ndarray], size: int | None) -> np.ndarray:
    """Concatenate decoded chunks, resizing each so the short side is `size` (memory stays at the output's)."""
    if not chunks:
        raise ValueError("no video frames decoded (empty or truncated file)")
    if size is not None:
        h, w = short_side_shape(*chunks[0].shape[1:3], size)
        chunks = [resize_frames(c, h, w) for c in chunks]
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def _read_decord(path: Path, size: int | None) -> np.ndarray:
    import decord

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    n = len(reader)
    chunks = [reader.get_batch(list(range(i, min(i + _CHUNK, n)))).asnumpy() for i in range(0, n, _CHUNK)]
    if chunks and chunks[0].shape[-1] != 3:
        # decord mislabels the pixel layout of some frame sizes; let the caller fall back to PyAV.
        raise ValueError(f"decord returned {chunks[0].shape[-1]} channels")
    return _resize_to(chunks, size)


def _read_pyav(path: Path, size: int | None) -> np.ndarray:
    import av

    chunks: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_count = 1
        for frame in container.decode(stream):
            pending.append(frame.to_ndarray(format="rgb24"))
            if len(pending) == _CHUNK:
                chunks.append(np.stack(pending))
                pending = []
    if pending:
        chunks.append(np.stack(pending))
    return _resize_to(chunks, size)


_BACKENDS: dict[str, Callable[[Path, int | None], np.ndarray]] = {"decord": _read_decord, "pyav": _read_pyav}


# --- the decoders' own messages: kept off the terminal, quoted in the reason a file cannot be read --------------

_fd2_lock = threading.RLock()
_pyav_logging_ready = False


def _on_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced by a non-file object, or closed
        return False


@contextlib.contextmanager
def _fd2_lines() -> Iterator[list[str]]:
    """What native code writes to file descriptor 2 during the block, as lines (filled when the block ends).

    decord logs from C++ (and its bundled ffmpeg through its default callback) straight to fd 2. fd 2 belongs to
    the whole process: a lock keeps one capture at a time (DataLoader workers are processes, each with its own),
    and Python's `sys.stderr` (progress bars, warnings) points at the real stderr meanwhile.
    """
    lines: list[str] = []
    with _fd2_lock, tempfile.TemporaryFile() as sink:
        python_stderr, ours = sys.stderr, None
        with contextlib.suppress(Exception):
            python_stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(sink.fileno(), 2)
            if _on_fd2(python_stderr):
                ours = io.TextIOWrapper(io.FileIO(saved, "w", closefd=False), encoding=python_stderr.encoding,
                                        errors=python_stderr.errors, line_buffering=True, write_through=True)
                sys.stderr = ours
            yield lines
        finally:
            if ours is not None:
                ours.flush()
                if sys.stderr is ours:
                    sys.stderr = python_stderr
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines += sink.read().decode("utf-8", "replace").splitlines()


@contextlib.contextmanager
def _pyav_lines() -> Iterator[list[str]]:
    """PyAV's (its ffmpeg's) error messages of this thread during the block, as lines (filled when it ends).

    PyAV drops ffmpeg's messages unless a level is set; at ERROR they reach Python logging ("libav"), where a
    thread-local capture takes those of our calls. A NullHandler keeps stray ones off the terminal (they still
    reach handlers an application installs).
    """
    global _pyav_logging_ready
    import av.logging

    if not _pyav_logging_ready:
        logging.getLogger("libav").addHandler(logging.NullHandler())
        av.logging.set_skip_repeated(False)  # its repeat tally is global: it would report another call's message
        av.logging.set_level(av.logging.ERROR)
        _pyav_logging_ready = True
    lines: list[str] = []
    with av.logging.Capture() as logs:
        try:
            yield lines
        finally:
            lines += [f"{name}: {line}" if name else line for _, name, message in logs for line in message.splitlines()]


def _decoder_lines(backend: str):
    """Capture the messages of `backend` ("decord" or "pyav") during a block; yields the list they go into."""
    return _fd2_lines() if backend == "decord" else _pyav_lines()


def _clean(line: str) -> str:
    """A decoder log line without decord's "[12:00:00] src/file.cc:83: " prefix or ffmpeg's object address."""
    line = re.sub(r"^\[[\d:]+\] \S+: ", "", line.strip())
    return re.sub(r"^\[([^\]@]+?) @ 0x[0-9a-fA-F]+\] ", r"\1: ", line)


def _reason(exc: BaseException, said: Sequence[str] = (), path: Path | None = None,
            quoted: set[str] | None = None) -> str:
    """A library's error in one line (no errno numbers, no log prefix), then what the decoder logged.

    Each logged line is quoted once: not when the error says it already, nor when it is in `quoted` (the lines
    an earlier backend's reason for the same file quoted; updated). The file's path is shortened to its name:
    the reason is shown after the path.
    """
    quoted = set() if quoted is None else quoted
    if isinstance(getattr(exc, "strerror", None), str):
        text = exc.strerror
    else:
        lines = str(exc).strip().splitlines()
        text = _clean(lines[0]) if lines else type(exc).__name__
    extra = [line for line in dict.fromkeys(map(_clean, said)) if line and line not in quoted and line not in text]
    extra = extra[:_MAX_MESSAGES]
    quoted.update(extra)
    if extra and text.startswith("Error reading "):  # decord's generic wrapper: its log says what went wrong
        text = "; ".join(extra)
    elif extra:
        text += f" [{'; '.join(extra)}]"
    return text.replace(str(path), path.name) if path is not None else text


def read_video(path: str | Path, *, size: int | None = None, backend: str = "auto") -> np.ndarray:
    """Decode a whole video to uint8 (T, H, W, 3), short side resized to `size` when given.

    `backend` is "decord", "pyav" or "auto" (decord when installed, PyAV when decord fails or is missing:
    decord cannot read Theora .ogv or GIF). A missing, empty, corrupt or unreadable file raises DataError.
    """
    path = Path(path)
    order = _backend_order(backend)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: cannot read video (empty file)")
    reasons, quoted = [], set()
    for name in order:
        try:
            with _decoder_lines(name) as said:
                return _BACKENDS[name](path, size)
        except Exception as exc:  # each library raises its own types; all mean "this backend cannot read it"
            reasons.append(f"{name}: {_reason(exc, said, path, quoted)}")
    raise DataError(f"{path}: cannot read video ({'; '.join(reasons)})")


def _backend_order(backend: str) -> list[str]:
    """The backends to try, in order, for `backend` ("auto", "decord" or "pyav")."""
    installed = available_backends()
    if backend == "auto":
        order = installed
    elif backend in _BACKENDS:
        if backend not in installed:
            have = ", ".join(installed) or "none"
            raise DataError(f"video backend {backend!r} is not installed (installed: {have})")
        order = [backend]
    else:
        raise DataError(f"unknown video backend {backend!r}; expected 'auto' or one of {', '.join(_BACKENDS)}")
    if not order:
        raise DataError("no video backend installed: pip install av (or decord on x86_64)")
    return order


class _DecordFrames:
    """Random access through decord (it seeks to the keyframe before each run of frames)."""

    def __init__(self, path: Path):
        import decord

        self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        self.length = len(self._reader)

    def read(self, indices: list[int]) -> np.ndarray:
        frames = self._reader.get_batch(indices).asnumpy()
        if frames.shape[-1] != 3:
            raise ValueError(f"decord returned {frames.shape[-1]} channels")
        return frames

    def close(self) -> None:
        del self._reader


class _PyAVFrames:
    """Random access through PyAV: seek to the keyframe before the first wanted frame, decode to the last.

    Frame numbers come from presentation timestamps at the stream's average rate (constant frame rate, which
    is what the action datasets and ``pmgflow data prepare`` output have).
    """

    def __init__(self, path: Path):
        import av

        self._container = av.open(str(path))
        if not self._container.streams.video:
            self._container.close()
            raise ValueError("no video stream")
        self._stream = stream = self._container.streams.video[0]
        stream.thread_count = 1
        rate = stream.average_rate or stream.guessed_rate
        self._fps = float(rate) if rate else 0.0
        self._start = stream.start_time or 0
        self.length = int(stream.frames or 0)
        if self.length <= 0 and stream.duration and self._fps:
            self.length = int(round(float(stream.duration * stream.time_base) * self._fps))
        if self.length <= 0:  # the container records neither: count by decoding once
            self.length = sum(1 for _ in self._container.decode(stream))
            self._container.seek(0)

    def _number(self, frame) -> int:
        return int(round(float((frame.pts - self._start) * self._stream.time_base) * self._fps))

    def read(self, indices: list[int]) -> np.ndarray:
        wanted, got = set(indices), {}
        first, last = min(indices), max(indices)
        seekable = self._fps > 0
        if seekable:
            target = self._start + int(first / self._fps / self._stream.time_base)
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        count = 0
        for frame in self._container.decode(self._stream):
            n = self._number(frame) if seekable and frame.pts is not None else count
            count += 1
            if n in wanted:
                got[n] = frame.to_ndarray(format="rgb24")
            if n >= last:
                break
        missing = wanted - got.keys()
        if missing:
            raise ValueError(f"frames {sorted(missing)[:5]} not found (the file has fewer than {last + 1})")
        return np.stack([got[i] for i in indices])

    def close(self) -> None:
        self._container.close()


_READERS = {"decord": _DecordFrames, "pyav": _PyAVFrames}


class VideoReader:
    """Random access to one video's frames: ``len(reader)`` frames, ``reader.read(indices)`` decodes just those.

    Frames come back uint8 (n, H, W, 3), the short side resized to `size` when given (the same filter as
    :func:`read_video`, so a clip read here equals the same frames of a whole decode). With backend "auto",
    decord is tried first and PyAV takes over when decord cannot open or read the file. Failures raise
    DataError naming the file.
    """

    def __init__(self, path: str | Path, *, size: int | None = None, backend: str = "auto"):
        self.path, self.size = Path(path), size
        self._order = _backend_order(backend)
        if not self.path.is_file():
            raise DataError(f"{self.path}: video file not found")
        if self.path.stat().st_size == 0:
            raise DataError(f"{self.path}: cannot read video (empty file)")
        self._reasons: list[str] = []
        self._quoted: set[str] = set()
        self._impl = self._open_next()

    def _open_next(self):
        while self._order:
            name = self._order.pop(0)
            try:
                with _decoder_lines(name) as said:
                    impl = _READERS[name](self.path)
                if impl.length <= 0:
                    raise ValueError("no video frames (empty or truncated file)")
                self._name = name
                return impl
            except Exception as exc:  # each library raises its own types; all mean "this backend cannot read it"
                self._reasons.append(f"{name}: {_reason(exc, said, self.path, self._quoted)}")
        raise DataError(f"{self.path}: cannot read video ({'; '.join(self._reasons)})")

    def __len__(self) -> int:
        return self._impl.length

    def read(self, indices) -> np.ndarray:
        """uint8 (len(indices), H, W, 3): the frames at `indices` (any order, repeats allowed)."""
        indices = [int(i) for i in indices]
        if not indices or min(indices) < 0 or max(indices) >= len(self):
            raise DataError(f"{self.path}: frame indices must lie in [0, {len(self)}), got {indices[:5]}...")
        unique = sorted(set(indices))
        while True:
            try:
                with _decoder_lines(self._name) as said:
                    frames = self._impl.read(unique)
                break
            except Exception as exc:
                self._reasons.append(f"{self._name}: {_reason(exc, said, self.path, self._quoted)}")
                self._impl.close()
                self._impl = self._open_next()
        if self.size is not None:
            frames = resize_frames(frames, *short_side_shape(*frames.shape[1:3], self.size))
        where = {t: k for k, t in enumerate(unique)}
        return frames[[where[i] for i in indices]]

    def close(self) -> None:
        """Release the file."""
        self._impl.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class VideoInfo:
    """Stream metadata of a video file (frames may be 0 when the container does not record it)."""

    frames: int
    height: int
    width: int
    fps: float


def video_info(path: str | Path) -> VideoInfo:
    """Read a video's stream metadata without decoding it (PyAV); an unreadable file raises DataError."""
    import av

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: video file not found")
    try:
        with _pyav_lines() as said, av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or 0
            return VideoInfo(int(stream.frames or 0), stream.height, stream.width, float(rate))
    except Exception as exc:
        raise DataError(f"{path}: cannot read video ({_reason(exc, said, path)})") from None


def write_video(
    path: str | Path,
    frames: np.ndarray,
    *,
    fps: float = 25.0,
    crf: int = 18,
    preset: str = "veryfast",
    threads: int = 1,
    keyframe_interval: int | None = None,
) -> Path:
    """Write uint8 (T, H, W, 3) frames as an h264 (yuv420p) mp4, atomically (temporary file, then rename).

    yuv420p needs an even height and width. `crf` is x264's quality (0 lossless, 18 visually lossless, 23 default);
    `threads` 0 lets x264 choose (worth it for large frames; one thread is fastest for small clips).
    `keyframe_interval` caps the frames between keyframes (x264's default is 250): a clip read then decodes at
    most that many frames before its first one.
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"expected uint8 frames of shape (T, H, W, 3) with T > 0, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"h264 yuv420p needs even frame sizes, got {height}x{width}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".mp4", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "preset": preset}
            if keyframe_interval is not None:
                stream.options |= {"g": str(keyframe_interval), "keyint_min": str(keyframe_interval)}
            stream.thread_count = threads
            for image in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
