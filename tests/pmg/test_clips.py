"""The image -> random crop -> PMG recipe: golden values of one clip, and the pre-training source of clips."""

import pytest
import torch

from pmgflow.pmg.clips import ImageClips, pmg_clips
from pmgflow.pmg.generator import PseudoMotionGenerator
from pmgflow.spec.pmg import PMGSpec
from pmgflow.spec.train import PretrainSpec


def pattern(size: int = 40) -> torch.Tensor:
    """A fixed uint8 image (3, size, size): a sine-cosine texture, a diagonal ramp and an 8-pixel checkerboard."""
    y, x = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                          indexing="ij")
    image = torch.stack([0.5 + 0.5 * torch.sin(x / 3) * torch.cos(y / 5), (x + y) / (2 * size - 2),
                         (x // 8 + y // 8) % 2])
    return (image * 255).round().to(torch.uint8)


def test_a_clip_keeps_its_golden_values():
    """Golden values, so that a change in the numerics of crops or PMG shows: two stored 40x40 images (the
    pattern and its transpose), default PMG at 8x32x32, crop scale (0.35, 1), seed 0. Obtained once by running
    this recipe (random_resized_crop of the images / 255, then PseudoMotionGenerator, one generator) with the
    code of commit 066766f on the CPU and copying the printed values."""
    images = torch.stack([pattern(), pattern().transpose(1, 2)])
    clip = pmg_clips(PseudoMotionGenerator(PMGSpec(frames=8, size=32)), images, (0.35, 1.0),
                     torch.Generator().manual_seed(0))
    assert clip.shape == (2, 3, 8, 32, 32)
    weights = torch.arange(clip.numel(), dtype=torch.float64).remainder(13)  # position-sensitive checksum
    assert clip.double().mean().item() == pytest.approx(0.4944105894191598, abs=1e-5)
    assert (clip.double().flatten() * weights).sum().item() / weights.sum().item() == pytest.approx(
        0.494091344843191, abs=1e-5)
    assert clip[0, :, 0, 0, 0].tolist() == pytest.approx([0.9161330461502075, 0.06196397542953491, 0.0], abs=1e-5)
    assert clip[1, :, 7, 16, 16].tolist() == pytest.approx([0.40007925033569336, 0.5125452876091003,
                                                            0.30785709619522095], abs=1e-5)
    assert clip[0, :, 4, 5, 27].tolist() == pytest.approx([0.920769214630127, 0.3409636318683624, 1.0], abs=1e-5)


def test_image_clips_of_a_spec_make_its_clips_on_any_device_and_into_a_buffer():
    spec = PretrainSpec(model={"frames": 4, "img_size": 16, "patch": 4},
                        source={"kind": "fractal", "categories": 2, "images": 6, "size": 24}, crop_scale=(0.5, 1.0))
    clips = ImageClips.of(spec)
    assert len(clips) == 6 and clips.bank.images.shape[1] == 20  # stored at store_size(16) = 20
    index = clips.draw(4, torch.Generator().manual_seed(1))
    assert len(set(index.tolist())) == 4 and len(clips.draw(10, torch.Generator())) == 6
    made = clips.clips(index, torch.Generator().manual_seed(2))
    assert made.shape == (4, 3, 4, 16, 16)
    pmg = PseudoMotionGenerator(spec.pmg)
    same = pmg_clips(pmg, clips.bank.batch(index), (0.5, 1.0), torch.Generator().manual_seed(2))
    assert torch.equal(made, same)
    buffer = torch.empty_like(made)
    assert clips.clips(index, torch.Generator().manual_seed(2), "cpu", out=buffer) is buffer
    assert torch.equal(buffer, made)
    crops = clips.crops(index, torch.Generator().manual_seed(2))
    assert crops.shape == (4, 3, 16, 16) and torch.equal(made[:, :, 0], crops)  # motion starts at the crop
