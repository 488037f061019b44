"""The embedded action set: deterministic, moving, classes that differ in motion, UCF101 layout, written once."""

from __future__ import annotations

import re

import numpy as np
import pytest

from pmgflow.data.actions import ACTIONS, render_action
from pmgflow.data.embedded import class_name, ensure_embedded_dataset
from pmgflow.data.decode import read_video
from pmgflow.data.layouts import ucf101_index
from pmgflow.spec.data import ActionsDatasetSpec


def test_twelve_distinct_actions():
    assert len(ACTIONS) == len(set(ACTIONS)) == 12
    assert class_name("jumping_jacks") == "JumpingJacks"


def test_render_is_deterministic_by_seed():
    a = render_action("wave", np.random.default_rng(3), 16, 32)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_action("wave", np.random.default_rng(3), 16, 32))
    assert not np.array_equal(a, render_action("wave", np.random.default_rng(4), 16, 32))
    with pytest.raises(ValueError, match="unknown action"):
        render_action("moonwalk", np.random.default_rng(0), 4, 32)


def test_render_matches_golden_values():
    # Cached sets are reused while RENDER_VERSION holds: the same seed must keep giving the same pixels.
    video = render_action("run", np.random.default_rng(0), 8, 32).astype(float)
    means = [142.06, 142.091, 142.031, 141.955, 142.073, 142.769, 141.862, 141.859]
    assert np.abs(video.reshape(8, -1).mean(1) - means).max() < 0.01
    assert np.abs(video[4, 16, 16:21] - [[144, 172, 128], [94, 92, 111], [35, 0, 89], [48, 29, 78],
                                         [128, 141, 130]]).max() <= 1  # fmt: skip


@pytest.fixture(scope="module")
def videos() -> dict[str, np.ndarray]:
    """Three videos per action at 16 frames, 32x32, float."""
    return {a: np.stack([render_action(a, np.random.default_rng([k, i]), 16, 32) for i in range(3)]).astype(float)
            for k, a in enumerate(ACTIONS)}  # fmt: skip


def test_every_action_moves(videos):
    for action, v in videos.items():
        motion = np.abs(np.diff(v, axis=1)).mean(axis=(1, 2, 3, 4))  # per video
        assert motion.min() > 0.5, f"{action} barely moves: {motion}"


def test_figure_is_about_half_the_frame(videos):
    for action, v in videos.items():
        background = np.median(v[:, :1], axis=(2, 3), keepdims=True)
        rows = (np.abs(v[:, :1] - background).max(-1) > 40).any(-1)  # rows the figure touches in frame 0
        extent = [np.ptp(np.flatnonzero(r[0])) for r in rows]
        assert min(extent) > 0.35 * 32, f"{action} figure too small: {extent}"


def test_same_seed_different_actions_differ_in_pose():
    # One seed gives the same body, colours and background: what remains is the motion.
    rendered = [render_action(a, np.random.default_rng(11), 16, 32).astype(float) for a in ACTIONS]
    for i in range(len(ACTIONS)):
        for j in range(i + 1, len(ACTIONS)):
            assert np.abs(rendered[i] - rendered[j]).mean() > 0.5, (ACTIONS[i], ACTIONS[j])


def test_motion_profiles_differ_between_classes(videos):
    # Mean absolute frame difference per row band: where in the figure the motion is.
    def profile(v):
        diff = np.abs(np.diff(v, axis=1)).mean(axis=(1, 3, 4))  # (videos, rows)
        return diff.reshape(len(v), 8, 4).mean(-1).mean(0)

    profiles = {a: profile(v) / (profile(v).sum() + 1e-9) for a, v in videos.items()}
    pairs = [(a, b) for i, a in enumerate(ACTIONS) for b in ACTIONS[i + 1 :]]
    distinct = sum(np.abs(profiles[a] - profiles[b]).sum() > 0.05 for a, b in pairs)
    assert distinct >= 0.8 * len(pairs)


def test_written_dataset_layout_and_groups(actions_spec):
    root = ensure_embedded_dataset(actions_spec)
    train, test = ucf101_index(root, 1, "train"), ucf101_index(root, 1, "test")
    assert train.classes == ["Wave", "Clap", "Jump"]
    assert len(train.items) == 18 and len(test.items) == 6
    assert all(re.fullmatch(r"v_[A-Za-z]+_g\d\d_c\d\d\.mp4", it.path.name) for it in train.items + test.items)
    assert not {(it.label, it.group) for it in train.items} & {(it.label, it.group) for it in test.items}
    video = read_video(train.items[0].path)
    assert video.shape == (16, 32, 32, 3)
    # Train and test come from disjoint seed streams: no test video repeats a training video.
    assert all(np.abs(read_video(t.path).astype(float) - video).mean() > 1 for t in test.items if t.label == 0)


def test_ensure_writes_once_and_redoes_interrupted(actions_spec):
    root = ensure_embedded_dataset(actions_spec)
    marker = root / ".pmgflow-complete"
    video = next((root / "videos" / "Wave").glob("*.mp4"))
    stamp = video.stat().st_mtime_ns
    assert ensure_embedded_dataset(actions_spec) == root and video.stat().st_mtime_ns == stamp
    marker.unlink()  # as if the first run had died before finishing
    video.unlink()
    ensure_embedded_dataset(actions_spec)
    assert marker.is_file() and video.is_file()


def test_default_root_is_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PMGFLOW_CACHE", str(tmp_path))
    spec = ActionsDatasetSpec(classes=2, train_per_class=1, test_per_class=1, frames=4, size=16)
    root = ensure_embedded_dataset(spec)
    assert root.parent == tmp_path / "actions" and (root / "splits" / "classInd.txt").is_file()
