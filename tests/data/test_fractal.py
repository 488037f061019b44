"""Fractal images: deterministic by seed, categories distinct, instances alike, well-formed systems."""

import numpy as np
import pytest

from pmgflow.data.fractal import MIN_FILL, fill_rate, iter_fractal_set, render_fractal, render_fractal_set, sample_system
from pmgflow.spec.data import FractalSource


@pytest.fixture(scope="module")
def fractal_set():
    spec = FractalSource(categories=8, images=26, size=48, seed=0)
    return spec, *render_fractal_set(spec)


def test_shape_dtype_labels_spread_evenly(fractal_set):
    spec, images, labels = fractal_set
    assert images.shape == (26, 48, 48, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [4, 4, 3, 3, 3, 3, 3, 3]
    assert (np.diff(labels) >= 0).all()


def test_images_are_not_blank(fractal_set):
    _, images, _ = fractal_set
    bright = (images.max(axis=-1) > 96).mean(axis=(1, 2))
    assert (bright > 0.02).all() and (bright < 0.9).all()
    assert (images.reshape(len(images), -1).std(axis=1) > 10).all()


def test_same_seed_same_bytes_other_seed_other_images(fractal_set):
    spec, images, labels = fractal_set
    again, again_labels = render_fractal_set(spec)
    assert again.tobytes() == images.tobytes() and (again_labels == labels).all()
    other, _ = render_fractal_set(spec.model_copy(update={"seed": 1}))
    assert np.abs(other.astype(int) - images).mean() > 10


def test_categories_differ_more_than_instances(fractal_set):
    _, images, labels = fractal_set
    x = images.astype(np.float32)
    dist = np.abs(x[:, None] - x[None]).mean(axis=(2, 3, 4))
    same = labels[:, None] == labels[None]
    within = dist[same & ~np.eye(len(x), dtype=bool)].mean()
    between = dist[~same].mean()
    assert between > 1.2 * within


def test_sample_system_is_a_filling_ifs():
    rng = np.random.default_rng(5)
    for _ in range(5):
        system = sample_system(rng)
        assert 2 <= len(system) <= 4
        assert system.weights.shape == (len(system), 2, 2) and system.shifts.shape == (len(system), 2)
        assert np.isclose(system.probs.sum(), 1)
        det = np.abs(np.linalg.det(system.weights)) + 1e-3
        assert np.allclose(system.probs, det / det.sum())
        assert np.linalg.svd(system.weights, compute_uv=False).max() <= 1 + 1e-9
        assert fill_rate(system, np.random.default_rng(0)) >= MIN_FILL * 0.8


def test_render_fractal_size_and_rng_determinism():
    system = sample_system(np.random.default_rng(1))
    a = render_fractal(system, 40, np.random.default_rng(2))
    b = render_fractal(system, 40, np.random.default_rng(2))
    assert a.shape == (40, 40, 3) and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes()


def test_progress_reports_every_image():
    calls = []
    render_fractal_set(FractalSource(categories=2, images=3, size=16), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]


def test_rendering_threads_change_neither_bytes_nor_order(fractal_set):
    spec, images, labels = fractal_set
    threaded = list(iter_fractal_set(spec, workers=3))
    assert np.stack([image for image, _ in threaded]).tobytes() == images.tobytes()
    assert [label for _, label in threaded] == labels.tolist()
