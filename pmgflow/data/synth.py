"""Small video datasets in the official layouts of UCF101, HMDB51 and Diving48, for tests and smoke runs.

:func:`write_synthetic` renders a few short videos of a moving square (each class moves its own way, so the
classes can be told apart) and writes the official split files; :func:`write_subset` links a handful of a
real dataset's videos into a small tree of the same layout. :func:`pmgflow.data.layouts.index_dataset` reads
either tree like the real thing. UCF101 and HMDB51 videos are MPEG-4 .avi files as in the official archives,
Diving48 videos h264 .mp4 files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pmgflow.errors import DataError
from pmgflow.spec.data import VideoDatasetSpec

KINDS = ("ucf101", "hmdb51", "diving48")
FPS = 25
VIDEO_DIRS = {"ucf101": "videos", "hmdb51": "videos", "diving48": "rgb"}
_MARKER = ".pmgflow-complete"

# Real class names first (so a generated tree reads like the dataset), then numbered ones.
CLASS_NAMES = {
    "ucf101": ["ApplyEyeMakeup", "Archery", "Basketball", "Bowling", "Diving", "JumpRope", "PlayingGuitar", "YoYo"],
    "hmdb51": ["brush_hair", "cartwheel", "climb", "jump", "pour", "run", "wave", "walk"],
    "diving48": ["Back 15som 05Twis FREE", "Forward 25som NoTwis PIKE", "Inward 15som NoTwis TUCK",
                 "Reverse 25som NoTwis PIKE", "Back 25som NoTwis TUCK", "Forward 35som NoTwis TUCK"],
}
_NUMBERED = {"ucf101": "Class{:03d}", "hmdb51": "class_{:03d}", "diving48": "Dive {:03d}"}

# Pixels per frame (dy, dx) of the square, one motion per class (at 32 pixels; scaled with the frame).
MOTIONS = [(2, 3), (-3, 1), (1, -2), (-2, -3), (3, 0), (0, -3), (-1, 2), (3, -1)]


@dataclass(frozen=True)
class Entry:
    """One video of a tree: its path under the videos folder, its label and its subset (train, test, unused)."""

    rel: str
    label: int
    subset: str


def class_names(kind: str, classes: int) -> list[str]:
    """The first `classes` class names of a generated tree of `kind`."""
    known = CLASS_NAMES[kind]
    return known[:classes] + [_NUMBERED[kind].format(i + 1) for i in range(len(known), classes)]


def moving_square(seed: int, frames: int = 16, height: int = 32, width: int = 32,
                  motion: tuple[int, int] = (2, 3)) -> np.ndarray:
    """uint8 (T, H, W, 3): a bright square moving `motion` pixels per frame over a smooth gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (60 + 80 * xx / width + 40 * yy / height)[..., None] * rng.uniform(0.6, 1.0, size=3)
    video = np.repeat(base[None], frames, axis=0)
    side = max(4, min(height, width) // 4)
    for t in range(frames):
        y = (t * motion[0] + seed) % (height - side)
        x = (t * motion[1] + 2 * seed) % (width - side)
        video[t, y : y + side, x : x + side] = rng.uniform(180, 255, size=3)
    return video.astype(np.uint8)


def write_avi(path: Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """An MPEG-4 Part 2 .avi, as the official UCF101 and HMDB51 archives ship (DivX/XviD)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.bit_rate = frames.shape[1] * frames.shape[2] * fps  # one bit per pixel: sharp enough, small files
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


# --- split files of each layout -----------------------------------------------------------------------------


def _write_ucf101(root: Path, classes: list[str], entries: list[Entry], split: int) -> None:
    splits = root / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    (splits / "classInd.txt").write_text("".join(f"{i + 1} {name}\r\n" for i, name in enumerate(classes)))
    train = [f"{e.rel} {e.label + 1}" for e in entries if e.subset == "train"]
    test = [e.rel for e in entries if e.subset == "test"]
    (splits / f"trainlist0{split}.txt").write_text("".join(line + "\r\n" for line in train))
    (splits / f"testlist0{split}.txt").write_text("".join(line + "\r\n" for line in test))


def _write_hmdb51(root: Path, classes: list[str], entries: list[Entry], split: int) -> None:
    splits = root / "splits"
    splits.mkdir(parents=True, exist_ok=True)
    marks = {"unused": 0, "train": 1, "test": 2}
    for label, name in enumerate(classes):
        lines = [f"{Path(e.rel).name} {marks[e.subset]} \n" for e in entries if e.label == label]
        (splits / f"{name}_test_split{split}.txt").write_text("".join(lines))


def _write_diving48(root: Path, classes: list[str], entries: list[Entry], split: int) -> None:
    for subset in ("train", "test"):
        items = [{"vid_name": Path(e.rel).stem, "label": e.label} for e in entries if e.subset == subset]
        (root / f"Diving48_V2_{subset}.json").write_text(json.dumps(items))
    (root / "Diving48_vocab.json").write_text(json.dumps([name.split() for name in classes]))


_SPLIT_WRITERS = {"ucf101": _write_ucf101, "hmdb51": _write_hmdb51, "diving48": _write_diving48}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind {kind!r}; expected one of {', '.join(KINDS)}")


# --- generated trees ----------------------------------------------------------------------------------------


def _synthetic_entries(kind: str, classes: list[str], train: int, test: int, unused: int,
                       clips_per_group: int) -> list[Entry]:
    """The videos of a generated tree, named as the dataset names them, in its usual order."""
    entries = []
    if kind == "diving48":  # one flat folder, classes interleaved, train first (like the V2 label files)
        for subset, count in (("train", train), ("test", test)):
            for _ in range(count):
                for label in range(len(classes)):
                    n = len(entries)
                    entries.append(Entry(f"yt{n // 2:03d}id_{n:05d}.mp4", label, subset))
        return entries
    subsets = ["train"] * train + ["test"] * test + (["unused"] * unused if kind == "hmdb51" else [])
    train_groups = -(-train // clips_per_group)
    for label, name in enumerate(classes):
        for i, subset in enumerate(subsets):
            if kind == "hmdb51":
                rel = f"{name}/Movie{i // 2:02d}_{name}_f_cm_np1_ba_med_{i}.avi"
            else:  # UCF101: train and test clips come from different groups (gNN), as the official splits do
                j = i if subset == "train" else i - train
                group = 1 + j // clips_per_group + (train_groups if subset == "test" else 0)
                rel = f"{name}/v_{name}_g{group:02d}_c{j % clips_per_group + 1:02d}.avi"
            entries.append(Entry(rel, label, subset))
    return entries


def write_synthetic(kind: str, root: str | Path, *, classes: int | Sequence[str] = 3, train_per_class: int = 2,
                    test_per_class: int = 1, unused_per_class: int = 0, frames: int = 2 * FPS,
                    size: tuple[int, int] = (320, 240), split: int = 1, clips_per_group: int = 2,
                    fps: int = FPS) -> Path:
    """Render a small dataset of `kind` in its official layout: videos of moving squares and the split files.

    `classes` is a count or the class names; `size` is (width, height); `unused_per_class` videos are marked 0
    (unused) in HMDB51's split files. Returns the root.
    """
    _check_kind(kind)
    names = class_names(kind, classes) if isinstance(classes, int) else list(classes)
    width, height = size
    if not names or min(train_per_class, test_per_class) < 1 or frames < 1 or min(width, height) < 16:
        raise DataError(f"{root}: a {kind} tree needs at least one class, one train and one test video per "
                        f"class, one frame and 16x16 pixels")
    if width % 2 or height % 2:
        raise DataError(f"{root}: the videos are yuv420p, which needs an even width and height; got {width}x{height}")
    root = Path(root)
    entries = _synthetic_entries(kind, names, train_per_class, test_per_class, unused_per_class, clips_per_group)
    scale = max(1, min(width, height) // 32)
    for seed, entry in enumerate(entries):
        dy, dx = MOTIONS[entry.label % len(MOTIONS)]
        video = moving_square(seed, frames, height, width, (dy * scale, dx * scale))
        path = root / VIDEO_DIRS[kind] / entry.rel
        if kind == "diving48":
            from pmgflow.data.decode import write_video

            write_video(path, video, fps=fps)
        else:
            write_avi(path, video, fps)
    _SPLIT_WRITERS[kind](root, names, entries, split)
    return root


# --- a handful of a real dataset ----------------------------------------------------------------------------


def write_subset(spec: VideoDatasetSpec, root: str | Path, *, classes: int = 2, train_per_class: int = 2,
                 test_per_class: int = 1) -> Path:
    """Link a handful of a real dataset's videos (its first classes with readable files) into a small tree of
    the same layout and split number; returns the root."""
    from pmgflow.data.layouts import index_dataset

    root = Path(root)
    subsets = {"train": (index_dataset(spec, "train"), train_per_class),
               "test": (index_dataset(spec, "test"), test_per_class)}
    names = subsets["train"][0].classes
    picked: dict[int, dict[str, list]] = {}
    for label in range(len(names)):
        found = {s: [it for it in ix.items if it.label == label and it.path.is_file()][:k]
                 for s, (ix, k) in subsets.items()}
        if all(found.values()):
            picked[label] = found
        if len(picked) == classes:
            break
    if len(picked) < min(classes, 2):
        raise DataError(f"{spec.root}: fewer than {min(classes, 2)} classes with both train and test videos on disk")
    entries = []
    for label, old in enumerate(picked):
        for subset, items in picked[old].items():
            for item in items:
                rel = item.path.name if spec.kind == "diving48" else f"{item.path.parent.name}/{item.path.name}"
                link = root / VIDEO_DIRS[spec.kind] / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(item.path.resolve())
                entries.append(Entry(rel, label, subset))
    _SPLIT_WRITERS[spec.kind](root, [names[old] for old in picked], entries, spec.split)
    return root


def ensure_tree(root: Path, stamp: str, write) -> Path:
    """`write(root)` once: reuse a tree whose completion marker holds the same stamp, else write it anew."""
    marker = root / _MARKER
    if marker.is_file() and marker.read_text() == stamp:
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    write(root)
    marker.write_text(stamp)
    return root
