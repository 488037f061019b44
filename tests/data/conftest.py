"""Tiny video datasets in the official layouts (a few classes x a few 16-frame 32x32 clips), built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from pmgflow.data.decode import write_video
from pmgflow.spec.data import ActionsDatasetSpec

FRAMES, SIZE = 16, 32


def moving_square(seed: int, frames: int = FRAMES, height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """uint8 (T, H, W, 3): a bright square moving over a smooth gradient (easy to encode, clearly moving)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (60 + 80 * xx / width + 40 * yy / height)[..., None] * rng.uniform(0.6, 1.0, size=3)
    video = np.repeat(base[None], frames, axis=0)
    side = max(4, min(height, width) // 4)
    for t in range(frames):
        y = (t * 2 + seed) % (height - side)
        x = (t * 3 + 2 * seed) % (width - side)
        video[t, y : y + side, x : x + side] = rng.uniform(180, 255, size=3)
    return video.astype(np.uint8)


def write_avi(path: Path, frames: np.ndarray, fps: int = 25) -> Path:
    """An MPEG-4 Part 2 .avi, as the official UCF101 and HMDB51 archives ship (DivX/XviD)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]


@pytest.fixture(scope="session")
def ucf_root(tmp_path_factory) -> Path:
    """UCF101 layout: 3 classes; groups g01, g02 train (2 clips each), g03 test (2 clips); split 1 only."""
    root = tmp_path_factory.mktemp("ucf101")
    (root / "splits").mkdir()
    train, test, seed = [], [], 0
    for label, name in enumerate(UCF_CLASSES):
        for group in (1, 2, 3):
            for clip in (1, 2):
                rel = f"{name}/v_{name}_g{group:02d}_c{clip:02d}.avi"
                write_avi(root / "videos" / rel, moving_square(seed))
                seed += 1
                (train if group < 3 else test).append(rel + (f" {label + 1}" if group < 3 else ""))
    (root / "splits" / "classInd.txt").write_text("".join(f"{i + 1} {n}\r\n" for i, n in enumerate(UCF_CLASSES)))
    (root / "splits" / "trainlist01.txt").write_text("\r\n".join(train) + "\r\n")
    (root / "splits" / "testlist01.txt").write_text("\r\n".join(test) + "\r\n")
    return root


HMDB_CLASSES = ["brush_hair", "wave"]


@pytest.fixture(scope="session")
def hmdb_root(tmp_path_factory) -> Path:
    """HMDB51 layout: 2 classes x 4 videos, split 1 marks them 1, 1, 2, 0 (train, train, test, unused)."""
    root = tmp_path_factory.mktemp("hmdb51")
    (root / "splits").mkdir()
    for c, name in enumerate(HMDB_CLASSES):
        lines = []
        for i, mark in enumerate("1120"):
            file = f"Movie{c}{i // 2}_{name}_f_cm_np1_ba_med_{i}.avi"
            write_avi(root / "videos" / name / file, moving_square(10 * c + i))
            lines.append(f"{file} {mark} ")
        (root / "splits" / f"{name}_test_split1.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def diving_root(tmp_path_factory) -> Path:
    """Diving48 layout (V2 labels): 3 classes, 4 train and 2 test videos in rgb/, with the vocabulary."""
    root = tmp_path_factory.mktemp("diving48")
    entries = {"train": [], "test": []}
    for i in range(6):
        name = f"yt{i // 2:03d}id_{i:05d}"
        write_video(root / "rgb" / f"{name}.mp4", moving_square(i), fps=30)
        subset = "train" if i < 4 else "test"
        entries[subset].append({"vid_name": name, "label": i % 3, "start_frame": 0, "end_frame": FRAMES - 1})
    for subset, items in entries.items():
        (root / f"Diving48_V2_{subset}.json").write_text(json.dumps(items))
    vocab = [["Back", "15som"], ["Forward", "25som"], ["Inward", "NoTwis"]]
    (root / "Diving48_vocab.json").write_text(json.dumps(vocab))
    return root


@pytest.fixture(scope="session")
def mp4_file(tmp_path_factory) -> Path:
    """A 16-frame 32x64 h264 mp4 written by pmgflow."""
    return write_video(tmp_path_factory.mktemp("mp4") / "square.mp4", moving_square(3, width=2 * SIZE))


@pytest.fixture(scope="session")
def actions_spec(tmp_path_factory) -> ActionsDatasetSpec:
    """A tiny embedded action set: 3 classes x (6 train + 2 test) videos of 16 frames at 32x32."""
    root = tmp_path_factory.mktemp("actions")
    return ActionsDatasetSpec(classes=3, train_per_class=6, test_per_class=2, frames=FRAMES, size=SIZE, root=root)


@pytest.fixture(scope="session")
def square():
    """The moving-square video maker, for tests that build their own files."""
    return moving_square


@pytest.fixture(scope="session")
def avi():
    """The .avi writer, for tests that build their own files."""
    return write_avi
