"""Pseudo-motion clips from still images, the one recipe that pre-training, previews and benchmarks share:
images stored at ``store_size`` -> a random resized crop of each at the clip size -> the Pseudo Motion Generator.

Crops and motions draw from one generator, crops first, so a seed gives the same clips everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pmgflow.data.images import ImageBank, load_image_source, random_resized_crop
from pmgflow.data.store import store_size
from pmgflow.pmg.generator import PseudoMotionGenerator
from pmgflow.spec.data import ImageSourceSpec
from pmgflow.spec.pmg import PMGSpec
from pmgflow.spec.train import PretrainSpec


def random_crops(images: torch.Tensor, size: int, scale: Sequence[float], generator: torch.Generator,
                 antialias: bool = True) -> torch.Tensor:
    """Stored uint8 images (B, 3, S, S) -> float crops (B, 3, size, size) in [0, 1], on the images' device."""
    return random_resized_crop(images.float().div_(255), size, scale=tuple(scale), generator=generator,
                               antialias=antialias)


def pmg_clips(pmg: PseudoMotionGenerator, images: torch.Tensor, scale: Sequence[float], generator: torch.Generator,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Stored uint8 images (B, 3, S, S) -> pseudo-motion clips (B, 3, T, size, size): random crops (area share
    in ``scale``), then the PMG (written into ``out`` if given)."""
    return pmg(random_crops(images, pmg.spec.size, scale, generator), generator=generator, out=out)


class ImageClips:
    """An image source stored for its clips (``source``, or an already loaded ``bank``), with the PMG and the
    crop scale that make clips of it."""

    def __init__(self, pmg: PMGSpec, source: ImageSourceSpec | None, crop_scale: Sequence[float], *,
                 bank: ImageBank | None = None, progress: Callable | None = None):
        self.pmg = PseudoMotionGenerator(pmg)
        self.crop_scale = tuple(crop_scale)
        self.bank = bank if bank is not None else load_image_source(source, store_size(pmg.size), progress=progress)

    @classmethod
    def of(cls, spec: PretrainSpec, bank: ImageBank | None = None) -> "ImageClips":
        """The clips of a pre-training spec (its PMG, image source and crop scale); `bank`: its images, if loaded."""
        return cls(spec.pmg, spec.source, spec.crop_scale, bank=bank)

    def __len__(self) -> int:
        return len(self.bank)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Indices of n different images (all, if the source has fewer), drawn by generator."""
        return torch.randperm(len(self.bank), generator=generator)[:n]

    def images(self, indices: torch.Tensor, device: torch.device | str | None = None,
               channels_last: bool = False) -> torch.Tensor:
        """The stored uint8 images (B, 3, S, S) at indices, on device (`channels_last`: see ImageBank.batch)."""
        batch = self.bank.batch(indices, channels_last)
        return batch if device is None else batch.to(device, non_blocking=True)

    def crops(self, indices: torch.Tensor, generator: torch.Generator,
              device: torch.device | str | None = None, antialias: bool = True) -> torch.Tensor:
        """Random crops (B, 3, size, size) of the images at indices, before any motion (`antialias`: sampled
        finer and pooled, see random_resized_crop)."""
        return random_crops(self.images(indices, device), self.pmg.spec.size, self.crop_scale, generator, antialias)

    def clips(self, indices: torch.Tensor, generator: torch.Generator, device: torch.device | str | None = None,
              out: torch.Tensor | None = None) -> torch.Tensor:
        """Pseudo-motion clips (B, 3, T, size, size) of the images at indices."""
        return pmg_clips(self.pmg, self.images(indices, device), self.crop_scale, generator, out)
