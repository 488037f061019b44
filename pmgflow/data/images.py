"""Image sources as one bank of square uint8 images at a storage size, built once and cached on disk.

Every source (fractal, folder, frames of videos) becomes the same thing: `images.npy` (N, S, S, 3) uint8,
opened memory-mapped, `labels.npy` and `meta.json` (category names, unreadable files), in a cache folder
named by the spec's hash and the storage size. The bank is written one image at a time, so a folder of
100k photos never sits in memory, and it is written to a temporary folder that is renamed when complete,
so a crash never leaves a half-built cache. The pre-training loop draws batches from the bank and takes
random resized crops of them on the training device.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from pmgflow.data.fractal import iter_fractal_set
from pmgflow.errors import DataError
from pmgflow.paths import cache_dir
from pmgflow.spec.base import spec_hash
from pmgflow.spec.data import FolderSource, FractalSource, VideoFramesSource

Progress = Callable[[int, int | None], None]  # progress(done, total); total is None when not known ahead
ImageSource = FractalSource | FolderSource | VideoFramesSource


@dataclass
class ImageBank:
    """Square images at one storage size with their category labels."""

    images: np.ndarray  # (N, S, S, 3) uint8, may be a np.memmap
    labels: np.ndarray  # (N,) int64 category index
    categories: list[str]
    skipped: list[tuple[str, str]]  # (path, reason) of unreadable files, reported once by the caller

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices: Sequence[int] | np.ndarray | torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """The images at `indices` as a uint8 tensor (B, 3, S, S); `channels_last`: in their stored layout
        (channels innermost, no copy to make them contiguous)."""
        idx = np.asarray(indices, dtype=np.int64)
        batch = torch.from_numpy(self.images[idx]).permute(0, 3, 1, 2)
        return batch if channels_last else batch.contiguous()


def fit_square(image: Image.Image, size: int) -> np.ndarray:
    """Resize so the short side is `size` and centre-crop to a square: (size, size, 3) uint8."""
    return np.asarray(ImageOps.fit(image.convert("RGB"), (size, size), method=Image.Resampling.BICUBIC))


def read_image(path: str | Path, size: int) -> np.ndarray:
    """Decode an image file to (size, size, 3) uint8 (short side resized, centre crop); PIL errors propagate."""
    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that still covers `size`
        return fit_square(image, size)


class _NpyWriter:
    """Appends (S, S, 3) uint8 images to a .npy file whose length is known only at the end.

    np.lib.format.open_memmap needs the count up front, but unreadable files and video iterators make it
    known only afterwards. The header numpy writes leaves room for the first axis to grow, so it is
    rewritten in place with the final count.
    """

    def __init__(self, path: Path, size: int):
        self.file = open(path, "wb")
        self.item_shape = (size, size, 3)
        self.count = 0
        self._write_header()
        self.data_offset = self.file.tell()

    def _write_header(self) -> None:
        header = {"descr": "|u1", "fortran_order": False, "shape": (self.count, *self.item_shape)}
        np.lib.format.write_array_header_1_0(self.file, header)

    def append(self, image: np.ndarray) -> None:
        """Write one image after the last."""
        if image.shape != self.item_shape or image.dtype != np.uint8:
            raise ValueError(f"expected uint8 {self.item_shape}, got {image.dtype} {image.shape}")
        self.file.write(np.ascontiguousarray(image).tobytes())
        self.count += 1

    def close(self) -> None:
        """Rewrite the header with the final count and close the file."""
        self.file.seek(0)
        self._write_header()
        if self.file.tell() != self.data_offset:
            raise RuntimeError("npy header changed length on rewrite")
        self.file.close()


# --- sources: each gives (categories, total, items); an item is (image or None if unreadable, label) -------

Items = Iterator[tuple[np.ndarray | None, int]]


def _fractal(spec: FractalSource, size: int) -> tuple[list[str], int, Items]:
    """Rendered at spec.size by as many threads as torch may use here, then resized to the storage size."""

    def items() -> Items:
        for image, label in iter_fractal_set(spec, workers=torch.get_num_threads()):
            yield (image if spec.size == size else fit_square(Image.fromarray(image), size)), label

    return [f"{c:05d}" for c in range(spec.categories)], spec.images, items()


def _extensions(spec: FolderSource) -> tuple[str, ...]:
    """The spec's extensions, lower case with a leading dot."""
    return tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in spec.extensions)


def _sorted_entries(path: str | Path) -> list[os.DirEntry]:
    """The non-hidden entries of one directory, sorted by name."""
    with os.scandir(path) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _scan(path: str | Path, extensions: tuple[str, ...]) -> Iterator[str]:
    """Files under `path` with one of `extensions`, depth first in sorted order, one directory read at a time."""
    for entry in _sorted_entries(path):
        if entry.is_dir():
            yield from _scan(entry.path, extensions)
        elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in extensions:
            yield entry.path


def _folder_files(spec: FolderSource) -> tuple[list[str], list[tuple[str, int]]]:
    """Category names and (path, label) of the image files: top-level files form category ".", then one
    category per sub-folder that holds images (sorted, the first `spec.categories`)."""
    root, extensions = Path(spec.path), _extensions(spec)
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found (folder source `path`)")
    entries = _sorted_entries(root)
    groups = [(".", [e.path for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in extensions])]
    groups += [(e.name, _scan(e.path, extensions)) for e in entries if e.is_dir()]
    categories: list[str] = []
    files: list[tuple[str, int]] = []
    for name, paths in groups:
        if spec.categories is not None and len(categories) == spec.categories:
            break
        found = [(p, len(categories)) for p in paths]
        if found:
            categories.append(name)
            files += found
    if not files:
        raise DataError(f"{root}: no images with extensions {', '.join(extensions)} in the folder or its sub-folders")
    if spec.images is not None and spec.images < len(files):
        pick = np.random.default_rng(spec.seed % 2**64).choice(len(files), spec.images, replace=False)
        files = [files[i] for i in np.sort(pick)]
    return categories, files


def _folder(spec: FolderSource, size: int, skipped: list[tuple[str, str]]) -> tuple[list[str], int, Items]:
    """Photos decoded with PIL; unreadable ones are recorded in `skipped` and yielded as None."""
    categories, files = _folder_files(spec)

    def items() -> Items:
        for path, label in files:
            try:
                yield read_image(path, size), label
            except Exception as exc:  # PIL's format plugins raise many types on corrupt or truncated data
                skipped.append((path, f"{type(exc).__name__}: {exc}"))
                yield None, label

    return categories, len(files), items()


def _video_frames(spec: VideoFramesSource, size: int) -> tuple[list[str], int | None, Items]:
    """Evenly spaced frames of the training videos of a dataset."""
    from pmgflow.data.layouts import index_dataset
    from pmgflow.data.video import iter_video_frames

    def items() -> Items:
        for frame, label, _path in iter_video_frames(spec.dataset, spec.frames_per_video, limit=spec.images):
            yield fit_square(Image.fromarray(frame), size), label

    return index_dataset(spec.dataset, "train").classes, spec.images, items()


# --- the cache --------------------------------------------------------------------------------------------


def _build(spec: ImageSource, size: int, folder: Path, progress: Progress | None) -> None:
    """Write images.npy, labels.npy and (last) meta.json of a source into `folder`."""
    skipped: list[tuple[str, str]] = []
    if isinstance(spec, FractalSource):
        categories, total, items = _fractal(spec, size)
    elif isinstance(spec, FolderSource):
        categories, total, items = _folder(spec, size, skipped)
    elif isinstance(spec, VideoFramesSource):
        categories, total, items = _video_frames(spec, size)
    else:
        raise TypeError(f"not an image source spec: {type(spec).__name__}")
    writer, labels = _NpyWriter(folder / "images.npy", size), []
    try:
        for done, (image, label) in enumerate(items, 1):
            if image is not None:
                writer.append(image)
                labels.append(label)
            if progress is not None:
                progress(done, total)
    finally:
        writer.close()
    if not labels:
        where = spec.path if isinstance(spec, FolderSource) else f"{spec.kind} source"
        first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"{where}: no readable images{first}")
    np.save(folder / "labels.npy", np.asarray(labels, np.int64))
    meta = {"spec": spec.model_dump(mode="json"), "size": size, "count": len(labels),
            "categories": categories, "skipped": skipped}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def _open(folder: Path) -> ImageBank:
    """The bank stored in a complete cache folder, images memory-mapped read-only."""
    meta = json.loads((folder / "meta.json").read_text())
    return ImageBank(
        images=np.load(folder / "images.npy", mmap_mode="r"),
        labels=np.load(folder / "labels.npy"),
        categories=list(meta["categories"]),
        skipped=[tuple(s) for s in meta["skipped"]],
    )


def load_image_source(spec: ImageSource, size: int, *, progress: Progress | None = None) -> ImageBank:
    """The bank of an image source spec at storage size `size`, built on first use and cached by spec hash."""
    parent = cache_dir("images")
    final = parent / f"{spec_hash(spec)}-{size}"
    if not (final / "meta.json").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=parent))
        try:
            _build(spec, size, tmp, progress)
            if final.exists() and not (final / "meta.json").is_file():
                shutil.rmtree(final)  # incomplete (made by hand or by an old version): build it anew
            try:
                tmp.rename(final)
            except OSError:
                if not (final / "meta.json").is_file():  # not just another process finishing first
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _open(final)


# --- use of a bank ----------------------------------------------------------------------------------------


def random_crop_boxes(b: int, h: int, w: int, scale: tuple[float, float] = (0.35, 1.0),
                      ratio: tuple[float, float] = (3 / 4, 4 / 3),
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """The crops of `random_resized_crop` for b images of h x w: (b, 2, 3) affine matrices from output to image
    coordinates (grid_sample's normalized ones), [[cw, 0, x], [0, ch, y]], on the generator's device."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(4, b, generator=generator, device=device)
    area = scale[0] + (scale[1] - scale[0]) * u[0]
    aspect = torch.exp(math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[1])
    # Crop sides as shares of the image sides: (cw W) * (ch H) = area H W and (cw W) / (ch H) = aspect.
    cw = torch.sqrt(area * aspect * h / w).clamp(max=1.0)
    ch = torch.sqrt(area / aspect * w / h).clamp(max=1.0)
    zero = torch.zeros_like(cw)
    theta = torch.stack([cw, zero, (1 - cw) * (2 * u[2] - 1), zero, ch, (1 - ch) * (2 * u[3] - 1)], 1)
    return theta.view(b, 2, 3)


def random_resized_crop(
    images: torch.Tensor,
    out_size: int,
    *,
    scale: tuple[float, float] = (0.35, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    antialias: bool = True,
) -> torch.Tensor:
    """One random crop per image (area share in `scale`, aspect w/h in `ratio`), resized to out_size.

    Float images (B, C, H, W) in, (B, C, out_size, out_size) out, on the images' device. Crops are drawn on
    the generator's device (CPU by default), so a seed gives the same crops on any device. With `antialias`
    the crop is sampled at up to 4x the output size and average-pooled, so thin fractal lines shrink without
    aliasing; the factor depends only on the shapes, so it costs no device sync.
    """
    b, c, h, w = images.shape
    theta = random_crop_boxes(b, h, w, scale, ratio, generator).to(images.device, images.dtype)
    k = min(4, max(1, math.ceil(max(h, w) / out_size))) if antialias else 1
    grid = F.affine_grid(theta, [b, c, out_size * k, out_size * k], align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.avg_pool2d(out, k) if k > 1 else out


def export_images(bank: ImageBank, out_dir: Path) -> int:
    """Write the bank as PNG files, one sub-folder per category ("." = out_dir itself); returns the count."""
    out_dir = Path(out_dir)
    folders = [out_dir / name for name in bank.categories]
    for folder in set(folders):
        folder.mkdir(parents=True, exist_ok=True)
    for i, label in enumerate(bank.labels):
        Image.fromarray(np.asarray(bank.images[i])).save(folders[label] / f"{i:06d}.png", compress_level=1)
    return len(bank)
