"""The videos of a pre-training: each batch split among the spec's video sources by their shares.

Without `videos` in the spec every clip is PMG's (exactly as `ImageClips` makes them). With it, a batch of n
clips gives each source floor(n x fraction) rows, and the rows left over go to sources drawn by their remaining
shares (systematic sampling), so every source makes exactly its fraction of the clips on average, even in small
batches.
Sources fill contiguous rows of the batch in the order listed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from pmgflow.data.images import ImageBank, random_crop_boxes
from pmgflow.pmg.clips import ImageClips
from pmgflow.pmg.generator import pixel_centres
from pmgflow.sources.mosi import MoSIGenerator
from pmgflow.sources.shapes import ShapesGenerator
from pmgflow.spec.sources import MoSIVideos, PMGVideos, ShapesVideos
from pmgflow.spec.train import PretrainSpec

Device = torch.device | str | None
CROP_CHUNK_BYTES = 8 << 20  # float stored images converted at once by texture_crops, on the CPU


def split_counts(n: int, fractions: list[float], g: torch.Generator) -> list[int]:
    """n rows shared by fractions (summing to 1): the floors, then the rows left over by systematic sampling of
    the leftover shares (one uniform offset, equally spaced points), so each source gets floor(n f) or
    floor(n f) + 1 rows and exactly n f on average."""
    counts = [math.floor(n * f) for f in fractions]
    rest = n - sum(counts)
    if rest:
        left = torch.tensor([max(n * f - c, 0.0) for f, c in zip(fractions, counts)], dtype=torch.float64)
        edges = torch.cumsum(left, 0) * (rest / float(left.sum()))  # leftover shares scaled to sum to `rest`
        points = torch.rand(1, generator=g, dtype=torch.float64) + torch.arange(rest, dtype=torch.float64)
        hits = torch.bucketize(points, edges, right=True).clamp_(max=len(fractions) - 1)
        for i in hits.tolist():
            counts[i] += 1
    return counts


class VideoClips:
    """Pre-training clips (B,3,T,size,size) of a spec's video sources. The image source (PMG's stills, MoSI's
    images, shapes' image textures) also sets the epoch's length: one clip per image by default."""

    def __init__(self, spec: PretrainSpec, bank: ImageBank | None = None):
        self.spec = spec
        self.images = ImageClips.of(spec, bank)
        self.sources = spec.videos or [PMGVideos()]
        frames, size = spec.pmg.frames, spec.pmg.size
        self.makers: list[Callable] = []
        for source in self.sources:
            if isinstance(source, ShapesVideos):
                self.makers.append(self._shapes(ShapesGenerator(source, frames, size)))
            elif isinstance(source, MoSIVideos):
                self.makers.append(self._mosi(MoSIGenerator(source, frames, size)))
            else:
                self.makers.append(self._pmg)
        self.fractions = [s.fraction for s in self.sources]

    @property
    def labels(self) -> list[str]:
        """A name per source: its kind, numbered where a kind is listed more than once (shapes-1, shapes-2)."""
        kinds = [s.kind for s in self.sources]
        return [k if kinds.count(k) == 1 else f"{k}-{kinds[:i].count(k) + 1}" for i, k in enumerate(kinds)]

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of n different images (all, if the source has fewer)."""
        return self.images.draw(n, generator)

    def clips(self, indices: torch.Tensor, generator: torch.Generator, device: Device = None,
              out: torch.Tensor | None = None) -> torch.Tensor:
        """One clip per index (B = len(indices)): the images at the indices feed the sources that take stills."""
        if self.spec.videos is None:  # PMG alone: the paper's setting, bit for bit
            return self.images.clips(indices, generator, device, out)
        n, frames, size = len(indices), self.spec.pmg.frames, self.spec.pmg.size
        if out is None:
            out = torch.empty(n, 3, frames, size, size, device=device)
        start = 0
        for make, count in zip(self.makers, split_counts(n, self.fractions, generator)):
            if count:
                make(indices[start:start + count], generator, out.device, out[start:start + count])
                start += count
        return out

    def by_source(self, n: int, generator: torch.Generator, device: Device = None) -> dict[str, torch.Tensor]:
        """n clips of each source (previews): {label: (n,3,T,size,size)}."""
        indices = self.draw(n, generator)
        return {label: make(indices, generator, device, None) for label, make in zip(self.labels, self.makers)}

    def _pmg(self, indices, g, device, out):
        return self.images.clips(indices, g, device, out)

    def _mosi(self, generator: MoSIGenerator):
        def make(indices, g, device, out):
            return generator(self.images.images(indices, device).float().div_(255), g, out)
        return make

    def _shapes(self, generator: ShapesGenerator):
        def make(indices, g, device, out):
            def textures(m: int, gen: torch.Generator) -> torch.Tensor:
                return texture_crops(self.images, m, gen, device)
            return generator(len(indices), g, device or "cpu", textures, out)
        return make


def texture_crops(images: ImageClips, m: int, g: torch.Generator, device: Device = None) -> torch.Tensor:
    """The shapes source's image textures: m random crops (m,3,size,size) of random images of the source, as
    `images.crops(indices, g, device, antialias=False)` makes them (equal up to float rounding), with fewer passes
    over the stored images: they are converted to float in their stored (channels-last) layout, a few at a time
    on the CPU (small buffers are reused by the allocator; a large one is mapped, and faulted in, anew every
    batch), and the crops scaled to [0, 1] afterwards. No anti-aliased crop: a texture is at most a 1.25x
    reduction of its stored image, and posing the sprite resamples it anyway (the anti-aliased crop cost 10x as
    much at 112 px)."""
    indices = torch.randint(len(images), (m,), generator=g)
    size, (h, w) = images.pmg.spec.size, images.bank.images.shape[1:3]
    theta = random_crop_boxes(m, h, w, images.crop_scale, generator=g)
    out = torch.empty(m, 3, size, size, device=device)
    c = pixel_centres(size, out.device)
    step = m if out.device.type != "cpu" else max(1, CROP_CHUNK_BYTES // (3 * h * w * 4))
    for lo in range(0, m, step):
        hi = min(lo + step, m)
        stored = images.images(indices[lo:hi], out.device, channels_last=True).float()
        box = theta[lo:hi].to(out.device)
        # An axis-aligned crop: x depends on the column only, y on the row only (cheaper than affine_grid's matmul).
        grid = torch.empty(hi - lo, size, size, 2, device=out.device)
        grid[..., 0] = (box[:, 0, 0, None] * c + box[:, 0, 2, None])[:, None, :]
        grid[..., 1] = (box[:, 1, 1, None] * c + box[:, 1, 2, None])[:, :, None]
        out[lo:hi] = F.grid_sample(stored, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.mul_(1 / 255)
