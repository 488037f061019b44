"""Formula-driven images in the manner of FractalDB: one iterated function system (IFS) per category.

A category is a set of 2-4 random affine maps drawn from its seed. The maps' singular values are drawn so
that the system's sigma-factor lies in the band that Anderson & Farrell ("Improving Fractal Pre-training",
2021) found to give rich, non-degenerate shapes, and a system is drawn again until its attractor fills the
frame (FractalDB's filling-rate check). Instances of a category are small perturbations of its maps, each
with its own random colouring and a dark or smooth background. Rendering is a vectorized chaos game: many
walkers iterate at once and their points are splatted with `np.bincount`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from pmgflow.spec.data import FractalSource

# Walkers iterate in parallel; the first WARMUP steps are not drawn (they converge onto the attractor).
WALKERS = 8192
WARMUP = 12
# Points splatted per pixel of the output: enough for a dense attractor, few enough to stay fast.
POINTS_PER_PIXEL = 4
# Occupied share of a 32x32 grid that an accepted attractor must reach (a line or a dot scores far less).
MIN_FILL = 0.15
# Images rendered per batch of work handed to the rendering threads.
RENDER_WINDOW = 256
# Instance perturbation: standard deviation added to each map coefficient and shift.
INSTANCE_JITTER = 0.04


@dataclass(frozen=True)
class IFS:
    """An iterated function system: maps x -> weights[k] @ x + shifts[k], map k chosen with probs[k]."""

    weights: np.ndarray  # (K, 2, 2)
    shifts: np.ndarray  # (K, 2)
    probs: np.ndarray  # (K,), sums to 1

    def __len__(self) -> int:
        return len(self.probs)


def _rng(*keys: int) -> np.random.Generator:
    """A Generator from integer keys; callers pass keys of equal length (SeedSequence ignores trailing zeros)."""
    return np.random.default_rng([k % 2**64 for k in keys])


def _with_probs(weights: np.ndarray, shifts: np.ndarray) -> IFS:
    """An IFS whose map probabilities are proportional to |det| (the area each map keeps), as in FractalDB."""
    det = np.abs(np.linalg.det(weights)) + 1e-3
    return IFS(weights, shifts, det / det.sum())


def _singular_values(rng: np.random.Generator, maps: int) -> np.ndarray:
    """(maps, 2) singular values s1 >= s2 in [0, 1] whose sigma-factor sum(s1 + 2 s2) is in the good band."""
    low, high = 0.5 * (5 + maps), 0.5 * (6 + maps)
    while True:  # vectorized rejection: a few thousand candidates, keep the first in the band
        s1 = np.sqrt(rng.random((4096, maps)))  # sqrt leans towards 1: large maps are needed to reach the band
        s2 = s1 * rng.random((4096, maps))
        alpha = (s1 + 2 * s2).sum(axis=1)
        hit = np.flatnonzero((alpha >= low) & (alpha <= high))
        if hit.size:
            return np.stack([s1[hit[0]], s2[hit[0]]], axis=1)


def _rotation(angle: np.ndarray) -> np.ndarray:
    """(K, 2, 2) rotation matrices."""
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)


def _draw_system(rng: np.random.Generator) -> IFS:
    """One random IFS (no filling check): W = R(theta) diag(s1, s2) R(phi) D, with D a random reflection."""
    maps = int(rng.integers(2, 5))
    sv = _singular_values(rng, maps)
    reflect = np.where(rng.random((maps, 2)) < 0.5, -1.0, 1.0)
    weights = (
        _rotation(rng.uniform(0, 2 * np.pi, maps))
        @ (sv[:, :, None] * np.eye(2))
        @ _rotation(rng.uniform(0, 2 * np.pi, maps))
        * reflect[:, None, :]
    )
    return _with_probs(weights, rng.uniform(-1, 1, (maps, 2)))


def _choices(probs: np.ndarray, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random map indices with the given probabilities, by a 1024-entry lookup table (faster than searchsorted)."""
    table = np.minimum(np.searchsorted(np.cumsum(probs), (np.arange(1024) + 0.5) / 1024), len(probs) - 1)
    return table[rng.integers(0, 1024, shape)]


def _chaos_game(
    system: IFS, rng: np.random.Generator, walkers: int, steps: int, palette: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Points (2, steps*walkers) on the attractor and, with a palette (K, 3), their colours (3, steps*walkers).

    A point's colour is the running average of the colours of the maps that moved it, so regions that one
    map generates share a hue (the "flame" colouring). Arrays are coordinate-major so every step works on
    contiguous rows.
    """
    coef = np.concatenate([system.weights.reshape(-1, 4), system.shifts], axis=1).T.astype(np.float32)
    x, y = rng.uniform(-1, 1, (2, walkers)).astype(np.float32)
    xy = np.empty((2, steps, walkers), np.float32)
    colour = None if palette is None else np.empty((3, steps, walkers), np.float32)
    if palette is not None:
        palette = np.ascontiguousarray(palette.T, np.float32)
        c = np.repeat(palette.mean(axis=1, keepdims=True), walkers, axis=1)
    for t, k in enumerate(_choices(system.probs, rng, (WARMUP + steps, walkers))):
        m = coef[:, k]
        x, y = m[0] * x + m[1] * y + m[4], m[2] * x + m[3] * y + m[5]
        if palette is not None:
            c = 0.5 * (c + palette[:, k])
        if t >= WARMUP:
            xy[0, t - WARMUP], xy[1, t - WARMUP] = x, y
            if palette is not None:
                colour[:, t - WARMUP] = c
    return xy.reshape(2, -1), None if colour is None else colour.reshape(3, -1)


def _to_pixels(xy: np.ndarray, size: int, margin: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """Flat pixel index of each point inside the frame (and the mask of those points), keeping aspect ratio.

    The frame is fitted to robust quantiles of the last step's points, so a few stray points cannot shrink
    the shape; non-finite points fail the bounds test and drop out.
    """
    sample = xy[:, -WALKERS:]
    sample = sample[:, np.isfinite(sample).all(axis=0)]
    if sample.shape[1] < 16:
        return np.zeros(0, np.int64), np.zeros(xy.shape[1], bool)
    lo, hi = np.quantile(sample, [0.002, 0.998], axis=1)
    scale = (1 - 2 * margin) * size / max(float((hi - lo).max()), 1e-6)
    px = np.floor((xy[0] - (lo[0] + hi[0]) / 2) * scale + size / 2)
    py = np.floor((xy[1] - (lo[1] + hi[1]) / 2) * scale + size / 2)
    inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    return py[inside].astype(np.int64) * size + px[inside].astype(np.int64), inside


def fill_rate(system: IFS, rng: np.random.Generator, grid: int = 32) -> float:
    """Share of a grid x grid frame that the attractor occupies once fitted to the frame."""
    xy, _ = _chaos_game(system, rng, walkers=2048, steps=4)
    idx, _ = _to_pixels(xy, grid)
    return float(np.unique(idx).size) / grid**2


def sample_system(rng: np.random.Generator) -> IFS:
    """A random IFS whose attractor fills the frame reasonably (drawn again until it does)."""
    while True:
        system = _draw_system(rng)
        if fill_rate(system, rng) >= MIN_FILL:
            return system


def perturb_system(system: IFS, rng: np.random.Generator, jitter: float = INSTANCE_JITTER) -> IFS:
    """An instance of a category: every coefficient of every map moved by a small Gaussian step."""
    weights = system.weights + rng.normal(0, jitter, system.weights.shape)
    return _with_probs(weights, system.shifts + rng.normal(0, jitter, system.shifts.shape))


def _bilinear(grid: np.ndarray, size: int) -> np.ndarray:
    """Upsample a (g, g, 3) grid to (size, size, 3) by separable linear interpolation (a smooth field)."""
    g = grid.shape[0]
    pos = np.linspace(0, g - 1, size)
    left = np.minimum(np.floor(pos).astype(int), g - 2)
    frac = pos - left
    interp = np.zeros((size, g))
    interp[np.arange(size), left] = 1 - frac
    interp[np.arange(size), left + 1] = frac
    return (interp @ grid.transpose(2, 0, 1) @ interp.T).transpose(1, 2, 0)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A dark flat background, or a dim smooth colour field (low contrast: clutter makes pre-training harder)."""
    if rng.random() < 0.5:
        return np.broadcast_to(rng.uniform(0, 0.06, 3), (size, size, 3))
    cells = int(rng.integers(2, 5))
    return _bilinear(rng.uniform(0, 0.3, (cells, cells, 3)), size)


def _blur(image: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur with edge padding: softens single-pixel speckle of the splatting."""
    p = np.pad(image, ((1, 1), (1, 1), (0, 0)), mode="edge")
    p = (p[:-2] + 2 * p[1:-1] + p[2:]) / 4
    return (p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]) / 4


def render_fractal(system: IFS, size: int, rng: np.random.Generator, *, blur: bool = True) -> np.ndarray:
    """Render an IFS in colour, (size, size, 3) uint8: a random palette per map, log-density brightness."""
    hue = rng.uniform(0.15, 1.0, (len(system), 3))
    palette = (hue / hue.max(axis=1, keepdims=True)).astype(np.float32)
    steps = max(1, -(-POINTS_PER_PIXEL * size * size // WALKERS))
    xy, colour = _chaos_game(system, rng, WALKERS, steps, palette)
    idx, inside = _to_pixels(xy, size)
    count = np.bincount(idx, minlength=size * size).astype(np.float32)
    rgb = np.stack([np.bincount(idx, weights=ch[inside], minlength=size * size) for ch in colour], -1)
    rgb = rgb / np.maximum(count, 1)[:, None]
    # Log density, scaled so the busiest tenth of the occupied pixels is at full brightness.
    ref = np.quantile(count[count > 0], 0.9) if idx.size else 1.0
    alpha = np.clip(np.log1p(count) / np.log1p(max(ref, 1.0)), 0, 1)[:, None]
    image = (rgb * alpha).reshape(size, size, 3) + _background(rng, size) * (1 - alpha).reshape(size, size, 1)
    if blur:
        image = _blur(image)
    return np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)


def category_system(seed: int, category: int) -> IFS:
    """The IFS of one category, a pure function of (seed, category)."""
    return sample_system(_rng(seed, 0, category, 0))


def _render_instance(spec: FractalSource, system: IFS, category: int, instance: int) -> np.ndarray:
    """One image of a fractal source (``system`` is its category's), a pure function of (seed, category, instance)."""
    rng = _rng(spec.seed, 1, category, instance)
    return render_fractal(perturb_system(system, rng), spec.size, rng)


def iter_fractal_set(spec: FractalSource, workers: int = 1) -> Iterator[tuple[np.ndarray, int]]:
    """(image, label) for every image of a fractal source, category by category, spread evenly.

    Images are rendered by ``workers`` threads (numpy releases the GIL in the chaos game's
    array work) a window of RENDER_WINDOW images at a time, so memory stays bounded; each image has its own
    generator, so the bytes and their order do not depend on ``workers``.
    """
    per, extra = divmod(spec.images, spec.categories)
    systems = [category_system(spec.seed, c) for c in range(spec.categories)]
    tasks = [(c, i) for c in range(spec.categories) for i in range(per + (c < extra))]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(tasks), RENDER_WINDOW):
            window = tasks[start:start + RENDER_WINDOW]
            images = pool.map(lambda task: _render_instance(spec, systems[task[0]], *task), window)
            yield from zip(images, (category for category, _ in window))


def render_fractal_set(
    spec: FractalSource, progress: Callable[[int, int], None] | None = None, workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """All images (N, S, S, 3) uint8 and labels (N,) int64 of a fractal source; progress(done, total)."""
    images = np.empty((spec.images, spec.size, spec.size, 3), np.uint8)
    labels = np.empty(spec.images, np.int64)
    for i, (image, label) in enumerate(iter_fractal_set(spec, workers)):
        images[i], labels[i] = image, label
        if progress is not None:
            progress(i + 1, spec.images)
    return images, labels
