"""The mix of video sources that makes each pre-training batch: batch shares, PMG alone as before, blocks of
rows per source in the order listed."""

import math

import pytest
import torch

from pmgflow.pmg.clips import ImageClips
from pmgflow.sources.mix import VideoClips, split_counts, texture_crops
from pmgflow.sources.mosi import MoSIGenerator
from pmgflow.sources.shapes import ShapesGenerator
from pmgflow.spec.train import PretrainSpec

MODEL = {"preset": "tiny", "frames": 8, "img_size": 32, "patch": 4}
SOURCE = {"kind": "fractal", "categories": 2, "images": 8, "size": 32}
SHAPES_ON_IMAGES = {"kind": "shapes", "texture": "image", "background": "image", "objects": (1, 3)}


def pretrain(videos=None) -> PretrainSpec:
    return PretrainSpec(model=MODEL, source=SOURCE, videos=videos)


@pytest.fixture(scope="module")
def bank():
    """The fractal images every test here shares (rendered once into the session's cache)."""
    return ImageClips.of(pretrain()).bank


@pytest.mark.parametrize("fractions", [[0.5, 0.5], [0.25, 0.75], [0.5, 0.3, 0.2], [0.1, 0.2, 0.3, 0.4],
                                       [1 / 3, 1 / 3, 1 / 3], [1.0]])
def test_split_counts_give_every_source_its_floor_or_ceiling(fractions):
    g = torch.Generator().manual_seed(0)
    for n in (0, 1, 2, 3, 5, 7, 8, 16, 31):
        for _ in range(20):
            counts = split_counts(n, fractions, g)
            assert sum(counts) == n and len(counts) == len(fractions)
            for c, f in zip(counts, fractions):
                assert c in (math.floor(n * f + 1e-9), math.ceil(n * f - 1e-9)), (n, fractions, counts)


@pytest.mark.parametrize("fractions, n", [
    ([0.25, 0.75], 3),
    ([0.4, 0.35, 0.25], 5),
    ([0.2, 0.2, 0.2, 0.2, 0.2], 3),
    ([0.5, 0.3, 0.2], 3),
])
def test_split_counts_give_every_source_its_fraction_on_average(fractions, n):
    g = torch.Generator().manual_seed(1)
    draws = 3000
    total = torch.zeros(len(fractions), dtype=torch.float64)
    for _ in range(draws):
        total += torch.tensor(split_counts(n, fractions, g), dtype=torch.float64)
    share = total / (draws * n)
    assert share.tolist() == pytest.approx(fractions, abs=0.01)


def test_split_counts_draw_from_the_generator_only_for_leftover_rows():
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    assert split_counts(8, [0.25, 0.25, 0.5], g) == [2, 2, 4]
    assert torch.equal(g.get_state(), state)  # nothing was left over: nothing drawn
    splits = {tuple(split_counts(3, [0.5, 0.5], torch.Generator().manual_seed(s))) for s in range(20)}
    assert splits == {(1, 2), (2, 1)}  # the odd row goes either way


def test_pmg_alone_makes_exactly_the_image_clips(bank):
    for videos in (None, [{"kind": "pmg"}], [{"kind": "pmg", "fraction": 1.0}]):
        spec = pretrain(videos)
        assert spec.videos is None
        clips, images = VideoClips(spec, bank), ImageClips.of(spec, bank)
        assert len(clips) == len(images) == 8 and clips.labels == ["pmg"]
        index = clips.draw(5, torch.Generator().manual_seed(0))
        assert torch.equal(index, images.draw(5, torch.Generator().manual_seed(0)))
        made = clips.clips(index, torch.Generator().manual_seed(4))
        assert torch.equal(made, images.clips(index, torch.Generator().manual_seed(4)))


def test_a_mixed_batch_is_each_source_in_turn(bank):
    """Shares 1/4, 1/4, 1/2 of 8 clips: rows 0-1 MoSI, 2-3 PMG, 4-7 shapes, drawn in that order from one
    generator."""
    spec = pretrain([{"kind": "mosi", "fraction": 0.25}, {"kind": "pmg", "fraction": 0.25},
                     {**SHAPES_ON_IMAGES, "fraction": 0.5}])
    clips = VideoClips(spec, bank)
    assert clips.labels == ["mosi", "pmg", "shapes"] and spec.video_kinds == ("mosi", "pmg", "shapes")
    index = clips.draw(8, torch.Generator().manual_seed(0))
    assert sorted(index.tolist()) == list(range(8))
    made = clips.clips(index, torch.Generator().manual_seed(5))
    assert made.shape == (8, 3, 8, 32, 32) and made.dtype == torch.float32
    assert made.min() >= 0 and made.max() <= 1

    images = ImageClips.of(spec, bank)
    g = torch.Generator().manual_seed(5)
    mosi = MoSIGenerator(spec.videos[0], 8, 32)(images.images(index[:2]).float() / 255, g)
    pmg = images.clips(index[2:4], g)
    shapes = ShapesGenerator(spec.videos[2], 8, 32)(
        4, g, "cpu", lambda m, gen: images.crops(torch.randint(len(images), (m,), generator=gen), gen,
                                                 antialias=False))
    assert torch.equal(made[:4], torch.cat([mosi, pmg]))
    # texture_crops makes images.crops' crops with fewer passes over the images: equal up to float rounding
    assert (made[4:] - shapes).abs().max() < 1e-5

    buffer = torch.full_like(made, -1.0)
    assert clips.clips(index, torch.Generator().manual_seed(5), out=buffer) is buffer
    assert torch.equal(buffer, made)
    other = clips.clips(index, torch.Generator().manual_seed(6))
    assert (other - made).abs().amax() > 0.1


def test_texture_crops_are_the_images_crops(bank):
    """The shapes' texture crops: random images, random crops without anti-aliasing, as ImageClips.crops makes
    them from the same draws (up to float rounding), in [0, 1] at the clip size."""
    images = ImageClips.of(pretrain(), bank)
    made = texture_crops(images, 7, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    expected = images.crops(torch.randint(len(images), (7,), generator=g), g, antialias=False)
    assert made.shape == (7, 3, 32, 32) and made.is_contiguous()
    assert (made - expected).abs().max() < 1e-6
    assert made.min() >= 0 and made.max() <= 1 and made.std() > 0.05


def test_every_row_of_a_mixed_batch_is_filled(bank):
    """Whatever the split, no row is left as the buffer had it."""
    spec = pretrain([{"kind": "shapes", "fraction": 0.3}, {"kind": "mosi", "fraction": 0.3},
                     {"kind": "pmg", "fraction": 0.4}])
    clips = VideoClips(spec, bank)
    for seed in range(4):
        index = clips.draw(7, torch.Generator().manual_seed(seed))
        buffer = torch.full((7, 3, 8, 32, 32), -1.0)
        clips.clips(index, torch.Generator().manual_seed(seed), out=buffer)
        assert buffer.min() >= 0 and buffer.max() <= 1


def test_previews_give_every_source_with_numbered_duplicates(bank):
    spec = pretrain([{"kind": "shapes", "fraction": 0.5, "motion": "static"},
                     {**SHAPES_ON_IMAGES, "fraction": 0.25}, {"kind": "mosi", "fraction": 0.25}])
    clips = VideoClips(spec, bank)
    assert clips.labels == ["shapes-1", "shapes-2", "mosi"]
    previews = clips.by_source(3, torch.Generator().manual_seed(0))
    assert list(previews) == ["shapes-1", "shapes-2", "mosi"]
    for label, video in previews.items():
        assert video.shape == (3, 3, 8, 32, 32), label
        assert video.min() >= 0 and video.max() <= 1 and video.amax() > 0.1, label
    still = previews["shapes-1"]
    assert torch.equal(still, still[:, :, :1].expand_as(still))  # the static one
    assert (previews["shapes-2"][:, :, -1] - previews["shapes-2"][:, :, 0]).abs().amax() > 0.05

    three = pretrain([{"kind": "mosi", "fraction": 0.2}, {"kind": "pmg", "fraction": 0.4},
                      {"kind": "mosi", "fraction": 0.2, "one_axis": False}, {"kind": "shapes", "fraction": 0.2}])
    assert VideoClips(three, bank).labels == ["mosi-1", "pmg", "mosi-2", "shapes"]
    assert list(VideoClips(three, bank).by_source(2, torch.Generator())) == ["mosi-1", "pmg", "mosi-2", "shapes"]
