"""What the embedded downstream sets share: their colours and background, and writing a set once to disk.

Two sets ship with pmgflow (no download): articulated figures performing actions (:mod:`pmgflow.data.actions`)
and rigid objects told apart by their trajectories (:mod:`pmgflow.data.motions`). Each module describes itself
as an :class:`EmbeddedSet` (class names, a video renderer, a renderer version); this module writes any of them
in the UCF101 layout (``videos/<Class>/v_<Class>_gNN_cMM.mp4``, ``splits/classInd.txt``, ``trainlist01.txt``,
``testlist01.txt``), train and test from disjoint seed streams and disjoint groups, cached by spec hash.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pmgflow.data.decode import write_video
from pmgflow.paths import cache_dir
from pmgflow.spec.base import spec_hash
from pmgflow.spec.data import EmbeddedDatasetSpec

FPS = 25
CLIPS_PER_GROUP = 5
_MARKER = ".pmgflow-complete"


@dataclass(frozen=True)
class EmbeddedSet:
    """An embedded set: its spec kind, class names (most distinct first), renderer and renderer version."""

    kind: str
    names: tuple[str, ...]  # a spec with N classes takes the first N
    render: Callable[[str, np.random.Generator, int, int], np.ndarray]  # (name, rng, frames, size) -> uint8 video
    version: int  # bumped when the renderer changes: a cached set written by another version is rendered again


def embedded_set(kind: str) -> EmbeddedSet:
    """The embedded set a spec kind names ("actions" or "motions")."""
    from pmgflow.data.actions import ACTION_SET
    from pmgflow.data.motions import MOTION_SET

    return {s.kind: s for s in (ACTION_SET, MOTION_SET)}[kind]


def class_name(name: str) -> str:
    """UCF101-style class name ("jumping_jacks" -> "JumpingJacks")."""
    return "".join(word.capitalize() for word in name.split("_"))


def colour_near(rng: np.random.Generator, luminance: float, chroma: float) -> np.ndarray:
    """An RGB colour in [0, 1] of roughly the given luminance and a random hue."""
    tint = rng.normal(size=3)
    tint -= tint.mean()
    return np.clip(luminance + chroma * tint / (np.abs(tint).max() + 1e-6), 0.0, 1.0)


def background(rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, float]:
    """Smooth low-contrast background (a gradient plus soft blobs), float32 (T, H, W, 3) in [0, 1], and its level.

    `ys` (T, H) and `xs` (T, W) are the pixel coordinates (frame units) seen by each frame's camera. Every term is
    a product of a function of y, one of x and an RGB vector, so the frames are one batched matrix product.
    """
    level = rng.uniform(0.25, 0.75)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = rng.uniform(-0.12, 0.12, size=3)
    ones_y, ones_x = np.ones_like(ys), np.ones_like(xs)
    fy = [ones_y, ones_y, np.sin(angle) * ys]  # terms: base colour, gradient in x, gradient in y
    fx = [ones_x, np.cos(angle) * xs, ones_x]
    rgb = [colour_near(rng, level, rng.uniform(0.0, 0.15)), ramp, ramp]
    for _ in range(rng.integers(3, 7)):
        cy, cx = rng.uniform(-0.2, 1.2, size=2)
        sigma = rng.uniform(0.12, 0.35)
        fy.append(np.exp(-((ys - cy) ** 2) / (2 * sigma**2)))
        fx.append(np.exp(-((xs - cx) ** 2) / (2 * sigma**2)))
        rgb.append(rng.uniform(-0.08, 0.08, size=3))
    frames, height, width = len(ys), ys.shape[1], xs.shape[1]
    left = np.einsum("kth,kc->thck", np.stack(fy), np.stack(rgb)).reshape(frames, height * 3, -1)
    image = np.matmul(left.astype(np.float32), np.stack(fx, axis=-1).astype(np.float32).transpose(0, 2, 1))
    return np.ascontiguousarray(image.reshape(frames, height, 3, width).transpose(0, 1, 3, 2)), level


def _write_text(path: Path, text: str) -> None:
    """Write a small text file atomically."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_embedded_dataset(
    spec: EmbeddedDatasetSpec, root: str | Path, progress: Callable[[int, int], None] | None = None
) -> Path:
    """Render the set a spec describes into `root` in the UCF101 layout (split 1); returns root."""
    rendered = embedded_set(spec.kind)
    root = Path(root)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    names = [class_name(n) for n in rendered.names[: spec.classes]]
    train_groups = math.ceil(spec.train_per_class / CLIPS_PER_GROUP)
    total_groups = train_groups + math.ceil(spec.test_per_class / CLIPS_PER_GROUP)
    digits = max(2, len(str(total_groups)))
    lists: dict[str, list[str]] = {"train": [], "test": []}
    total, done = spec.classes * (spec.train_per_class + spec.test_per_class), 0
    for label, (raw, name) in enumerate(zip(rendered.names, names)):
        subsets = (("train", spec.train_per_class, 1), ("test", spec.test_per_class, train_groups + 1))
        for subset, count, first_group in subsets:
            for i in range(count):
                group, clip = first_group + i // CLIPS_PER_GROUP, i % CLIPS_PER_GROUP + 1
                rel = f"{name}/v_{name}_g{group:0{digits}d}_c{clip:02d}.mp4"
                # Disjoint seed streams: (seed, 0 = train / 1 = test, class, clip).
                rng = np.random.default_rng([spec.seed % 2**64, int(subset == "test"), label, i])
                write_video(root / "videos" / rel, rendered.render(raw, rng, spec.frames, spec.size), fps=FPS)
                lists[subset].append(rel + (f" {label + 1}" if subset == "train" else ""))
                done += 1
                if progress:
                    progress(done, total)
    _write_text(root / "splits" / "classInd.txt", "".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    _write_text(root / "splits" / "trainlist01.txt", "".join(line + "\n" for line in lists["train"]))
    _write_text(root / "splits" / "testlist01.txt", "".join(line + "\n" for line in lists["test"]))
    return root


def ensure_embedded_dataset(spec: EmbeddedDatasetSpec, progress: Callable[[int, int], None] | None = None) -> Path:
    """The root of the rendered set, writing it first unless a complete copy (same spec and renderer) is there.

    The default root is $PMGFLOW_CACHE/<kind>/<spec hash>. The completion marker is written last, so an
    interrupted run is redone rather than half-used; a file lock lets parallel trials on one machine wait for
    the first one instead of rendering it twice.
    """
    root = Path(spec.root) if spec.root is not None else cache_dir(spec.kind, spec_hash(spec))
    root.mkdir(parents=True, exist_ok=True)
    version = embedded_set(spec.kind).version
    stamp = json.dumps({"version": version, "spec": spec.model_dump(mode="json")}, sort_keys=True)
    marker = root / _MARKER

    def complete() -> bool:
        return marker.is_file() and marker.read_text() == stamp

    if complete():
        return root
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not complete():
            marker.unlink(missing_ok=True)
            write_embedded_dataset(spec, root, progress)
            _write_text(marker, stamp)
    return root
