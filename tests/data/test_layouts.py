"""Official layouts indexed from tiny trees; clear errors for missing parts; dataset check and transcode."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pmgflow.data.decode import read_video
from pmgflow.data.layouts import (
    VideoItem,
    check_dataset,
    diving48_index,
    hmdb51_index,
    index_dataset,
    prepare_dataset,
    ucf101_index,
)
from pmgflow.errors import DataError
from pmgflow.spec.data import VideoDatasetSpec


def test_ucf101_index(ucf_root):
    train, test = ucf101_index(ucf_root, 1, "train"), ucf101_index(ucf_root, 1, "test")
    assert train.classes == test.classes == ["ApplyEyeMakeup", "Basketball", "YoYo"]
    assert len(train.items) == 12 and len(test.items) == 6
    first = train.items[0]
    assert first == VideoItem(ucf_root / "videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0, "g01")
    assert [it.label for it in test.items] == [0, 0, 1, 1, 2, 2]
    assert all(it.path.is_file() for it in train.items + test.items)
    assert {it.group for it in train.items} == {"g01", "g02"} and {it.group for it in test.items} == {"g03"}


def test_ucf101_missing_split_file(ucf_root):
    with pytest.raises(DataError, match=r"testlist02\.txt.*not found") as info:
        ucf101_index(ucf_root, 2, "test")
    assert str(ucf_root / "splits") in str(info.value)


def test_missing_root_and_folders(tmp_path):
    with pytest.raises(DataError, match="dataset root not found"):
        ucf101_index(tmp_path / "nowhere", 1, "train")
    with pytest.raises(DataError, match="UCF101 videos folder not found"):
        ucf101_index(tmp_path, 1, "train")
    with pytest.raises(DataError, match="Diving48_V2_train.json"):
        (tmp_path / "rgb").mkdir()
        diving48_index(tmp_path, 1, "train")


def test_ucf101_accepts_official_folder_names(ucf_root, tmp_path):
    root = tmp_path / "official"
    root.mkdir()
    (root / "UCF-101").symlink_to(ucf_root / "videos")
    (root / "ucfTrainTestlist").symlink_to(ucf_root / "splits")
    assert len(ucf101_index(root, 1, "train").items) == 12


def test_hmdb51_index(hmdb_root):
    train, test = hmdb51_index(hmdb_root, 1, "train"), hmdb51_index(hmdb_root, 1, "test")
    assert train.classes == ["brush_hair", "wave"]
    assert [it.label for it in train.items] == [0, 0, 1, 1] and [it.label for it in test.items] == [0, 1]
    assert train.items[0].path == hmdb_root / "videos/brush_hair/Movie00_brush_hair_f_cm_np1_ba_med_0.avi"
    assert train.items[0].group == "Movie00_brush_hair_f_cm_np1_ba_med"
    assert not {it.path for it in train.items} & {it.path for it in test.items}
    with pytest.raises(DataError, match="_test_split2.txt"):
        hmdb51_index(hmdb_root, 2, "train")


def test_diving48_index(diving_root, tmp_path):
    train, test = diving48_index(diving_root, 1, "train"), diving48_index(diving_root, 1, "test")
    assert train.classes == ["Back 15som", "Forward 25som", "Inward NoTwis"]
    assert [it.label for it in train.items] == [0, 1, 2, 0, 1, 2] and len(test.items) == 3
    assert train.items[1].path == diving_root / "rgb/yt000id_00001.mp4" and train.items[1].group == "yt000id"
    # Without the vocabulary the classes are the label numbers, the same for both subsets.
    bare = tmp_path / "bare"
    shutil.copytree(diving_root, bare, ignore=shutil.ignore_patterns("*vocab*"))
    assert diving48_index(bare, 1, "test").classes == ["0", "1", "2"]
    with pytest.raises(DataError, match="splits 1"):
        diving48_index(diving_root, 2, "train")
    (bare / "Diving48_V2_test.json").write_text(json.dumps([{"vid_name": "x"}]))
    with pytest.raises(DataError, match="vid_name"):
        diving48_index(bare, 1, "test")


def test_index_dataset_dispatches(ucf_root, hmdb_root, diving_root, actions_spec):
    for kind, root, count in (("ucf101", ucf_root, 12), ("hmdb51", hmdb_root, 4), ("diving48", diving_root, 6)):
        assert len(index_dataset(VideoDatasetSpec(kind=kind, root=root), "train").items) == count
    actions = index_dataset(actions_spec, "test")
    assert actions.classes == ["Wave", "Clap", "Jump"] and len(actions.items) == 6
    with pytest.raises(ValueError, match="subset"):
        index_dataset(actions_spec, "val")


def test_check_dataset_counts_and_lists_unreadable(hmdb_root, tmp_path):
    root = tmp_path / "hmdb"
    shutil.copytree(hmdb_root, root)
    broken = root / "videos/wave/Movie01_wave_f_cm_np1_ba_med_2.avi"  # a test video
    broken.write_bytes(b"garbage")
    report = check_dataset(VideoDatasetSpec(kind="hmdb51", root=root))
    assert report.counts == {"train": [2, 2], "test": [1, 1]}
    assert not report.ok and [p for p, _ in report.unreadable] == [broken]
    text = report.format()
    assert "brush_hair" in text and str(broken) in text and "1 unreadable" in text


def test_prepare_dataset_transcodes_once(ucf_root, tmp_path):
    calls = []
    spec = VideoDatasetSpec(kind="ucf101", root=ucf_root)
    result = prepare_dataset(spec, tmp_path / "out", 16, progress=lambda done, total: calls.append((done, total)))
    assert (result.written, result.reused, result.unreadable) == (18, 0, [])
    assert calls[-1] == (18, 18)
    prepared = ucf101_index(tmp_path / "out", 1, "train")
    assert all(it.path.suffix == ".mp4" and it.path.is_file() for it in prepared.items)
    assert read_video(prepared.items[0].path).shape == (16, 16, 16, 3)
    assert (tmp_path / "out/splits/classInd.txt").read_text() == (ucf_root / "splits/classInd.txt").read_text()
    again = prepare_dataset(spec, tmp_path / "out", 16)
    assert (again.written, again.reused) == (0, 18)
    with pytest.raises(DataError, match="must differ"):
        prepare_dataset(spec, ucf_root, 16)


def test_prepare_diving48_copies_labels(diving_root, tmp_path):
    result = prepare_dataset(VideoDatasetSpec(kind="diving48", root=diving_root), tmp_path / "d48", 16)
    assert result.written == 9
    index = diving48_index(tmp_path / "d48", 1, "test")
    assert index.classes[0] == "Back 15som" and all(Path(it.path).is_file() for it in index.items)
