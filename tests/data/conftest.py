"""Tiny video datasets in the official layouts (a few classes x a few 16-frame 32x32 clips), built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from pmgflow.data.decode import write_video
from pmgflow.data.synth import moving_square, write_avi, write_synthetic
from pmgflow.spec.data import ActionsDatasetSpec

FRAMES, SIZE = 16, 32
UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]
HMDB_CLASSES = ["brush_hair", "wave"]
DIVING_CLASSES = ["Back 15som", "Forward 25som", "Inward NoTwis"]


def _tree(kind: str, tmp_path_factory, classes: list[str], train: int, test: int, **extra) -> Path:
    return write_synthetic(kind, tmp_path_factory.mktemp(kind), classes=classes, train_per_class=train,
                           test_per_class=test, frames=FRAMES, size=(SIZE, SIZE), **extra)


@pytest.fixture(scope="session")
def ucf_root(tmp_path_factory) -> Path:
    """UCF101 layout: 3 classes; groups g01, g02 train (2 clips each), g03 test (2 clips); split 1 only."""
    return _tree("ucf101", tmp_path_factory, UCF_CLASSES, 4, 2)


@pytest.fixture(scope="session")
def hmdb_root(tmp_path_factory) -> Path:
    """HMDB51 layout: 2 classes x 4 videos, split 1 marks them 1, 1, 2, 0 (train, train, test, unused)."""
    return _tree("hmdb51", tmp_path_factory, HMDB_CLASSES, 2, 1, unused_per_class=1)


@pytest.fixture(scope="session")
def diving_root(tmp_path_factory) -> Path:
    """Diving48 layout (V2 labels): 3 classes, 2 train and 1 test video each in rgb/, with the vocabulary."""
    return _tree("diving48", tmp_path_factory, DIVING_CLASSES, 2, 1)


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
