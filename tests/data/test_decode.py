"""Decoding with decord and PyAV, clear errors on broken files, atomic h264 writing."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pmgflow.data.decode import available_backends, read_video, video_info, write_video
from pmgflow.errors import DataError

needs_decord = pytest.mark.skipif("decord" not in available_backends(), reason="decord not installed")


def test_available_backends_prefers_decord():
    names = available_backends()
    assert "pyav" in names
    if "decord" in names:
        assert names.index("decord") < names.index("pyav")


@needs_decord
def test_decord_and_pyav_agree(mp4_file, square):
    a = read_video(mp4_file, backend="decord")
    b = read_video(mp4_file, backend="pyav")
    assert a.dtype == b.dtype == np.uint8
    assert a.shape == b.shape == (16, 32, 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3
    assert np.abs(b.astype(int) - square(3, width=64).astype(int)).mean() < 6  # h264 at crf 18 is near lossless


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_resize_keeps_aspect(mp4_file, backend):
    video = read_video(mp4_file, size=16, backend=backend)
    assert video.shape == (16, 16, 32, 3)


def test_auto_falls_back_to_pyav_on_gif(tmp_path, square):
    frames = [Image.fromarray(f) for f in square(1)[:6]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0)
    video = read_video(path)
    assert video.shape[1:] == (32, 32, 3) and len(video) >= 2


@pytest.fixture
def broken_files(tmp_path, mp4_file) -> dict[str, Path]:
    data = mp4_file.read_bytes()
    files = {"truncated": data[: len(data) // 2], "text": b"not a video at all\n", "empty": b""}
    out = {}
    for name, content in files.items():
        out[name] = tmp_path / f"{name}.mp4"
        out[name].write_bytes(content)
    out["missing"] = tmp_path / "missing.mp4"
    return out


@pytest.mark.parametrize("backend", ["auto", "pyav", pytest.param("decord", marks=needs_decord)])
@pytest.mark.parametrize("kind", ["truncated", "text", "empty", "missing"])
def test_broken_file_raises_data_error_naming_it(broken_files, kind, backend):
    path = broken_files[kind]
    with pytest.raises(DataError, match="cannot read video|not found") as info:
        read_video(path, backend=backend)
    assert str(path) in str(info.value)


def test_unknown_backend():
    with pytest.raises(DataError, match="unknown video backend"):
        read_video("x.mp4", backend="opencv")


def test_video_info(mp4_file, tmp_path):
    info = video_info(mp4_file)
    assert (info.frames, info.height, info.width) == (16, 32, 64)
    assert info.fps == pytest.approx(25.0)
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    with pytest.raises(DataError, match="bad.mp4"):
        video_info(bad)


def test_write_video_is_atomic_and_checks_sizes(tmp_path, square):
    path = write_video(tmp_path / "sub" / "v.mp4", square(0), fps=30)
    assert read_video(path).shape == (16, 32, 32, 3)
    assert video_info(path).fps == pytest.approx(30.0)
    assert os.listdir(path.parent) == ["v.mp4"]  # no temporary file left behind
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 31, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "float.mp4", np.zeros((2, 32, 32, 3), np.float32))
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".*"))


def _shipped_footage() -> Path | None:
    """A real video file shipped inside an installed package, if any (one walk over site-packages)."""
    suffixes = (".mp4", ".avi", ".webm", ".mkv", ".mov")
    for base in sorted({p for p in sys.path if p.endswith("site-packages")}):
        for folder, _, files in os.walk(base):
            for name in sorted(files):
                path = Path(folder) / name
                if name.lower().endswith(suffixes) and path.stat().st_size > 10_000:
                    return path
    return None


def test_real_footage_reads_with_both_backends():
    path = _shipped_footage()
    if path is None:
        pytest.skip("no installed package ships a sample video")
    pyav = read_video(path, size=64, backend="pyav")
    assert pyav.ndim == 4 and pyav.shape[-1] == 3 and min(pyav.shape[1:3]) == 64
    if "decord" in available_backends():
        assert read_video(path, size=64, backend="decord").shape == pyav.shape


@pytest.fixture
def garbage(tmp_path) -> dict[str, Path]:
    """Bytes that no demuxer takes, under an .mp4 and an .avi name."""
    out = {}
    for suffix in ("mp4", "avi"):
        out[suffix] = tmp_path / f"garbage.{suffix}"
        out[suffix].write_bytes(b"RIFF" + bytes(range(256)) * 8)
    return out


def test_decoder_logs_go_into_the_reason_not_to_stderr(garbage, capfd):
    with pytest.raises(DataError) as info:
        video_info(garbage["mp4"])  # PyAV: ffmpeg's log line (only there) joins the error
    assert "moov atom not found" in str(info.value)
    if "decord" in available_backends():
        with pytest.raises(DataError) as info:
            read_video(garbage["avi"], backend="auto")  # decord's C++ log (fd 2), then PyAV's error
        text = str(info.value)
        assert "decord: ERROR opening: garbage.avi, Invalid data found" in text and "pyav: Invalid data" in text
        assert text.count("moov atom not found") <= 1
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_check_and_probe_quote_the_decoder_once(tmp_path, garbage, capfd, monkeypatch):
    from pmgflow.data.layouts import check_dataset
    from pmgflow.data.store import probe_videos
    from pmgflow.data.synth import write_synthetic
    from pmgflow.spec.data import VideoDatasetSpec

    monkeypatch.setenv("PMGFLOW_CACHE", str(tmp_path / "cache"))
    root = write_synthetic("ucf101", tmp_path / "ucf", classes=2, train_per_class=1, test_per_class=1, frames=4,
                           size=(32, 24))
    bad = next((root / "videos").rglob("*.avi"))
    bad.write_bytes(garbage["mp4"].read_bytes())
    spec = VideoDatasetSpec(kind="ucf101", root=root)
    for full in (False, True):
        (path, reason), = check_dataset(spec, full=full).unreadable
        assert path == bad and "Invalid data found when processing input" in reason
    assert "moov atom not found" in probe_videos([garbage["mp4"]])[garbage["mp4"]].error
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_python_stderr_stays_on_the_terminal_while_native_output_is_captured():
    import subprocess

    code = ("import os, sys\nfrom pmgflow.data.decode import _fd2_lines\nwith _fd2_lines() as said:\n"
            "    print('progress bar', file=sys.stderr)\n    os.write(2, b'native noise\\n')\nprint(said)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.stdout, done.stderr) == ("['native noise']\n", "progress bar\n")
