"""Image banks: folders of real photos (scikit-image), fractal and video-frame sources, the cache, crops, export."""

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as photos

from pmgflow.data import images as images_module
from pmgflow.data.images import ImageBank, export_images, load_image_source, random_resized_crop, read_image
from pmgflow.errors import DataError
from pmgflow.paths import cache_dir
from pmgflow.spec.data import ActionsDatasetSpec, FolderSource, FractalSource, VideoFramesSource


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


@pytest.fixture(scope="module")
def photo_tree(tmp_path_factory) -> Path:
    """root/{people,cat,things}/ with JPEG and PNG photos of several sizes and aspect ratios."""
    root = tmp_path_factory.mktemp("photos")
    _save(root / "people" / "astronaut.jpg", photos.astronaut())
    _save(root / "people" / "astronaut_flip.png", photos.astronaut()[:, ::-1].copy())
    _save(root / "cat" / "chelsea.jpg", photos.chelsea())
    _save(root / "cat" / "nested" / "chelsea_crop.png", photos.chelsea()[50:250, 100:400].copy())
    _save(root / "things" / "coffee.jpg", photos.coffee())
    _save(root / "things" / "rocket.png", photos.rocket())
    (root / "things" / "notes.txt").write_text("not an image, wrong extension: ignored")
    return root


def test_folder_categories_shapes_and_labels(photo_tree):
    bank = load_image_source(FolderSource(path=photo_tree), 32)
    assert bank.categories == ["cat", "people", "things"]
    assert len(bank) == 6 and bank.images.shape == (6, 32, 32, 3) and bank.images.dtype == np.uint8
    assert isinstance(bank.images, np.memmap)
    assert bank.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert bank.skipped == []
    assert (bank.images.reshape(6, -1).std(axis=1) > 20).all()  # real content, not padding


def test_short_side_resize_and_centre_crop(tmp_path):
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, 20:60] = 255  # the centre square is white, the side bands black
    _save(tmp_path / "wide.png", wide)
    square = read_image(tmp_path / "wide.png", 20)
    assert square.shape == (20, 20, 3) and square.min() > 200  # edges may blend a little of the bands


def test_top_level_files_form_category_dot(tmp_path):
    _save(tmp_path / "top.png", photos.coffee())
    _save(tmp_path / "sub" / "cat.png", photos.chelsea())
    bank = load_image_source(FolderSource(path=tmp_path), 16)
    assert bank.categories == [".", "sub"] and bank.labels.tolist() == [0, 1]


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    _save(tmp_path / "good" / "coffee.jpg", photos.coffee())
    _save(tmp_path / "good" / "rocket.png", photos.rocket())
    full = (tmp_path / "good" / "coffee.jpg").read_bytes()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "truncated.jpg").write_bytes(full[: len(full) // 3])
    (tmp_path / "bad" / "text.jpg").write_text("this is not a JPEG")
    _save(tmp_path / "bad" / "fine.png", photos.astronaut())
    bank = load_image_source(FolderSource(path=tmp_path), 24)
    assert len(bank) == 3 and bank.categories == ["bad", "good"]
    assert bank.labels.tolist() == [0, 1, 1]
    assert sorted(Path(p).name for p, _ in bank.skipped) == ["text.jpg", "truncated.jpg"]
    assert all(reason for _, reason in bank.skipped)
    assert load_image_source(FolderSource(path=tmp_path), 24).skipped == bank.skipped  # kept in the cache


def test_missing_and_empty_folders_raise_with_the_path(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_image_source(FolderSource(path=tmp_path / "nowhere"), 16)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"empty.*\.jpg"):
        load_image_source(FolderSource(path=tmp_path / "empty"), 16)


def test_all_unreadable_raises(tmp_path):
    (tmp_path / "a.jpg").write_text("no")
    with pytest.raises(DataError, match="no readable images"):
        load_image_source(FolderSource(path=tmp_path), 16)
    assert not any(p.name.startswith(".") for p in cache_dir("images").iterdir())  # no temp folder left


def test_images_and_categories_limits(photo_tree):
    some = load_image_source(FolderSource(path=photo_tree, images=4, seed=3), 16)
    assert len(some) == 4 and set(some.labels.tolist()) <= {0, 1, 2}
    again = images_module._folder_files(FolderSource(path=photo_tree, images=4, seed=3))[1]
    assert again == images_module._folder_files(FolderSource(path=photo_tree, images=4, seed=3))[1]
    other = images_module._folder_files(FolderSource(path=photo_tree, images=4, seed=4))[1]
    assert len(other) == 4
    two = load_image_source(FolderSource(path=photo_tree, categories=2), 16)
    assert two.categories == ["cat", "people"] and two.labels.tolist() == [0, 0, 1, 1]


def test_cache_is_reused_without_decoding(photo_tree, monkeypatch):
    spec = FolderSource(path=photo_tree, seed=11)
    first = load_image_source(spec, 20)
    folders = [p for p in cache_dir("images").iterdir() if p.name.endswith("-20")]
    assert all((p / "meta.json").is_file() for p in folders)
    calls = []
    monkeypatch.setattr(images_module, "read_image", lambda *a: calls.append(a) or 1 / 0)
    second = load_image_source(spec, 20)
    assert calls == [] and second.images.tobytes() == first.images.tobytes()
    assert second.categories == first.categories and (second.labels == first.labels).all()


def test_fractal_source_resized_to_storage_size():
    spec = FractalSource(categories=3, images=6, size=32, seed=2)
    bank = load_image_source(spec, 24)
    assert bank.images.shape == (6, 24, 24, 3)
    assert bank.categories == ["00000", "00001", "00002"] and bank.labels.tolist() == [0, 0, 1, 1, 2, 2]
    same_size = load_image_source(spec, 32)
    from pmgflow.data.fractal import render_fractal_set

    assert same_size.images.tobytes() == render_fractal_set(spec)[0].tobytes()


def test_video_frames_source(monkeypatch):
    rng = np.random.default_rng(0)
    frames = [(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8), i % 2, f"v{i}.avi") for i in range(5)]
    seen = {}

    def fake_iter(dataset, frames_per_video, limit=None):
        seen.update(frames_per_video=frames_per_video, limit=limit)
        return iter(frames[:limit])

    monkeypatch.setitem(sys.modules, "pmgflow.data.video", types.SimpleNamespace(iter_video_frames=fake_iter))
    index = types.SimpleNamespace(classes=["Jump", "Wave"])
    monkeypatch.setattr("pmgflow.data.layouts.index_dataset", lambda spec, subset: index)
    bank = load_image_source(VideoFramesSource(dataset=ActionsDatasetSpec(classes=2), frames_per_video=2, images=4), 16)
    assert seen == {"frames_per_video": 2, "limit": 4}
    assert bank.images.shape == (4, 16, 16, 3) and bank.labels.tolist() == [0, 1, 0, 1]
    assert bank.categories == ["Jump", "Wave"]


def test_batch_is_uint8_channels_first():
    bank = ImageBank(np.arange(4 * 5 * 5 * 3, dtype=np.uint8).reshape(4, 5, 5, 3), np.zeros(4, np.int64), ["a"], [])
    batch = bank.batch([2, 0])
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 5, 5)
    assert torch.equal(batch[0], torch.from_numpy(bank.images[2]).permute(2, 0, 1))


def test_random_resized_crop_shapes_determinism_identity():
    x = torch.rand(6, 3, 32, 48)
    a = random_resized_crop(x, 16, generator=torch.Generator().manual_seed(0))
    b = random_resized_crop(x, 16, generator=torch.Generator().manual_seed(0))
    c = random_resized_crop(x, 16, generator=torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 16, 16) and torch.equal(a, b) and not torch.allclose(a, c)
    assert a.min() >= 0 and a.max() <= 1
    square = torch.rand(3, 3, 24, 24)
    same = random_resized_crop(square, 24, scale=(1, 1), ratio=(1, 1), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(same, square, atol=1e-5)
    # Full-frame crop to half size with antialias is close to 2x2 average pooling.
    half = random_resized_crop(square, 12, scale=(1, 1), ratio=(1, 1))
    assert torch.allclose(half, torch.nn.functional.avg_pool2d(square, 2), atol=1e-5)


def test_export_images_round_trips_through_a_folder(tmp_path):
    bank = load_image_source(FractalSource(categories=2, images=5, size=16, seed=4), 16)
    assert export_images(bank, tmp_path / "out") == 5
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["00000", "00001"]
    assert len(list((tmp_path / "out" / "00000").glob("*.png"))) == 3
    back = load_image_source(FolderSource(path=tmp_path / "out"), 16)
    assert back.categories == bank.categories and (back.labels == bank.labels).all()
    assert back.images.tobytes() == bank.images.tobytes()
