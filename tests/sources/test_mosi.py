"""MoSI pseudo camera motion: the windows stay inside their image, move at their speed class (in whole pixels), and the frames
show the image through them."""

from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from pmgflow.sources.mosi import MoSIGenerator, WindowPlan
from pmgflow.sources.shapes import reference_times
from pmgflow.spec.sources import MoSIVideos

FRAMES, SIZE, IMAGE = 8, 32, 128


def ramps(n: int = 1) -> torch.Tensor:
    """Images (n,3,IMAGE,IMAGE) whose channel 0 is (x+1)/2 and channel 1 is (y+1)/2 at the pixel centres
    (normalized x, y), channel 2 a constant: a window's mean of channels 0 and 1 then gives its centre."""
    c = (torch.arange(IMAGE, dtype=torch.float32) * 2 + 1) / IMAGE - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    image = torch.stack([(x + 1) / 2, (y + 1) / 2, torch.full_like(x, 0.25)])
    return image[None].repeat(n, 1, 1, 1)


def window_centres(video: torch.Tensor) -> torch.Tensor:
    """Centres (n,T,2) of the windows that made videos of `ramps`."""
    return torch.stack([video[:, 0].mean((-2, -1)), video[:, 1].mean((-2, -1))], -1) * 2 - 1


@pytest.mark.parametrize("frames", [8, 16])
@pytest.mark.parametrize("one_axis", [True, False])
def test_windows_stay_inside_the_image(frames, one_axis):
    spec = MoSIVideos(window=(0.3, 0.95), speeds=[-0.5, -0.05, 0.0, 0.02, 0.5], one_axis=one_axis)
    gen = MoSIGenerator(spec, frames, SIZE)
    plan = gen.plan(500, torch.Generator().manual_seed(0))
    centres = plan.centres(reference_times(frames))  # (n,T,2)
    assert bool((centres.abs() + plan.side[:, None, None] <= 1 + 1e-6).all())
    assert plan.side.min() >= 0.3 and plan.side.max() <= 0.95
    # Each start is uniform over the starts that keep the window inside for the whole clip.
    room, travel = (1 - plan.side)[:, None], plan.velocity * float(reference_times(frames)[-1])
    low, high = -room - travel.clamp(max=0), room - travel.clamp(min=0)
    free = high - low > 1e-3  # the fastest windows have no choice: they cross all the room they have
    u = ((plan.start - low) / (high - low))[free]
    assert u.min() >= -1e-5 and u.max() <= 1 + 1e-5
    assert u.mean().item() == pytest.approx(0.5, abs=0.05) and u.min() < 0.02 and u.max() > 0.98


def test_one_axis_moves_a_window_along_x_or_y():
    spec = MoSIVideos(speeds=[-0.02, 0.02], one_axis=True)
    velocity = MoSIGenerator(spec, FRAMES, SIZE).plan(400, torch.Generator().manual_seed(1)).velocity
    moving = velocity != 0
    assert bool((moving.sum(1) == 1).all())  # exactly one axis, as no class is 0
    assert 0.35 < moving[:, 0].float().mean() < 0.65  # x and y alike
    both = MoSIGenerator(spec.model_copy(update={"one_axis": False}), FRAMES, SIZE).plan(
        100, torch.Generator().manual_seed(1)).velocity
    assert bool((both != 0).all())


def test_speeds_are_the_speed_classes_in_whole_pixels_unless_too_fast_for_the_window():
    speeds = [-0.03, -0.01, 0.0, 0.01, 0.03]
    spec = MoSIVideos(window=(0.5, 0.8), speeds=speeds, one_axis=False)
    gen = MoSIGenerator(spec, FRAMES, SIZE)
    plan = gen.plan(1000, torch.Generator().manual_seed(2))
    side = plan.side[:, None]
    # A class speed v (image sides per reference frame) is v * dt * SIZE / side output pixels per frame.
    classes = torch.tensor(speeds)[:, None, None] * gen.frame_time * SIZE / side  # (classes,n,1)
    nearest = classes.abs().round().clamp(min=1) * classes.sign()  # a moving class moves at least one pixel
    # A window of side w keeps inside the image at up to (1 - w) SIZE / (w (T - 1)) pixels per frame.
    fastest = ((1 - side) * SIZE / (side * (FRAMES - 1))).floor()
    allowed = torch.minimum(nearest.abs(), fastest) * nearest.sign()  # (classes,n,1)
    step = plan.step.float()
    is_class = (step[None] == allowed).any(0)
    assert bool(is_class.all())
    slowed = (step[None] == allowed).any(0) & ~(step[None] == nearest).any(0)
    assert int(slowed.sum()) > 50  # the fast class does not fit every window of this range ...
    assert int((step.abs() >= 2).sum()) > 100 and int((step == 0).sum()) > 100  # ... but many fit it
    assert bool((step.abs() <= fastest).all())
    for value in (-3, -1, 0, 1, 3):
        assert bool((plan.step == value).any()), value
    # Unslowed, the realized speed is within half a pixel per frame of its class.
    pixels_per_ref = plan.pitch / gen.frame_time
    unslowed = ~slowed
    off = (plan.velocity[None] - torch.tensor(speeds)[:, None, None] * 2).abs().amin(0)
    assert bool((off[unslowed] <= (pixels_per_ref / 2).expand_as(off)[unslowed] + 1e-6).all())


def test_frames_are_the_image_through_each_window():
    """The canvas and crop path gives the pixels of one grid_sample through each frame's own window, for every
    direction (both axes, negative speeds, still) and at the clip sizes of both scales."""
    for frames, size, one_axis in ((FRAMES, SIZE, False), (16, 56, True), (3, 20, False)):
        spec = MoSIVideos(window=(0.3, 0.9), speeds=[-0.04, -0.01, 0.0, 0.02, 0.05], one_axis=one_axis)
        gen = MoSIGenerator(spec, frames, size)
        images = torch.rand(12, 3, 50, 70, generator=torch.Generator().manual_seed(4))
        plan = gen.plan(12, torch.Generator().manual_seed(5))
        video = gen(images, torch.Generator().manual_seed(5))
        assert bool((plan.step < 0).any() and (plan.step > 0).any() and (plan.step == 0).any())
        centres = plan.centres(gen.times)  # (n,T,2)
        theta = torch.zeros(12, frames, 2, 3)
        theta[..., 0, 0] = theta[..., 1, 1] = plan.side[:, None]
        theta[..., :, 2] = centres
        grid = F.affine_grid(theta.flatten(0, 1), [12 * frames, 3, size, size], align_corners=False)
        expected = F.grid_sample(images.repeat_interleave(frames, 0), grid, mode="bilinear",
                                 padding_mode="border", align_corners=False)
        expected = expected.view(12, frames, 3, size, size).transpose(1, 2)
        assert (video - expected).abs().max() < 1e-5, (frames, size)


def test_the_window_moves_by_its_speed():
    """A ramp image seen through a window of known path: the frames' means give the window's centre."""
    gen = MoSIGenerator(MoSIVideos(), FRAMES, SIZE)
    plan = WindowPlan(side=torch.tensor([0.5, 0.6]), start=torch.tensor([[-0.3, 0.1], [0.2, 0.35]]),
                      step=torch.tensor([[3, 0], [0, -2]]), size=SIZE, frame_time=gen.frame_time)
    with mock.patch.object(gen, "plan", lambda n, g: plan):
        video = gen(ramps(2), torch.Generator())
    assert video.shape == (2, 3, FRAMES, SIZE, SIZE)
    t = reference_times(FRAMES)
    expected = plan.start[:, None] + plan.velocity[:, None] * t[None, :, None]
    assert torch.allclose(window_centres(video), expected, atol=1e-4)
    # First to last frame: 7 frames of 3 pixels of 2 * 0.5 / 32 normalized units each along x.
    assert window_centres(video)[0, -1, 0] - window_centres(video)[0, 0, 0] == pytest.approx(21 / 32, abs=1e-4)
    # Frame t is frame 0 moved by t steps: whole pixels.
    assert torch.allclose(video[0, :, 1:, :, :-3], video[0, :, :-1, :, 3:], atol=1e-6)
    assert torch.allclose(video[1, :, 1:, 2:], video[1, :, :-1, :-2], atol=1e-6)
    # The window spans its side: across a frame channel 0 rises by side x (S-1)/S.
    rise = video[:, 0, :, :, -1] - video[:, 0, :, :, 0]
    assert torch.allclose(rise, (plan.side * (SIZE - 1) / SIZE)[:, None, None].expand_as(rise), atol=1e-4)
    assert torch.allclose(video[:, 2], torch.full_like(video[:, 2], 0.25))


def test_drawn_windows_are_the_ones_rendered():
    spec = MoSIVideos(window=(0.5, 0.8), speeds=[-0.05, 0.03, 0.05], one_axis=False)
    gen = MoSIGenerator(spec, FRAMES, SIZE)
    plan = gen.plan(6, torch.Generator().manual_seed(3))
    video = gen(ramps(6), torch.Generator().manual_seed(3))
    assert torch.allclose(window_centres(video), plan.centres(reference_times(FRAMES)), atol=1e-4)
    moved = window_centres(video)[:, -1] - window_centres(video)[:, 0]
    assert torch.allclose(moved, plan.velocity * 15, atol=1e-4) and bool((moved.abs() > 0.1).all())


def test_a_bright_dot_moves_against_the_window():
    """The camera pans right: a dot in the image moves left in the frames, by the window's travel."""
    image = torch.zeros(1, 3, IMAGE, IMAGE)
    image[:, :, 60:68, 60:68] = 1.0  # pixel centres -0.055 .. 0.055: a dot at (0, 0)
    gen = MoSIGenerator(MoSIVideos(), 16, SIZE)
    plan = WindowPlan(side=torch.tensor([0.6]), start=torch.tensor([[-0.25, 0.0]]),
                      step=torch.tensor([[1, 0]]), size=SIZE, frame_time=gen.frame_time)  # 1.2 / 32 per frame
    with mock.patch.object(gen, "plan", lambda n, g: plan):
        video = gen(image, torch.Generator())[0, 0]  # (T,S,S)
    idx = torch.arange(SIZE, dtype=torch.float64)
    x = (video.double().sum(1) * idx).sum(-1) / video.double().sum((1, 2))  # dot's column per frame
    # The dot at image x = 0 shows at frame x = (0 - centre) / side, in pixels (x + 1) S / 2 - 0.5.
    centre = -0.25 + 1.2 / SIZE * torch.arange(16, dtype=torch.float64)
    expected = (-centre / 0.6 + 1) * SIZE / 2 - 0.5
    assert torch.allclose(x, expected, atol=0.2)  # the dot's edges are point-sampled: 0.1 px of jitter
    assert float(x[-1]) == pytest.approx(float(x[0]) - 15, abs=0.2)  # one pixel a frame


def test_a_seed_gives_the_same_videos_and_another_seed_other_videos():
    images = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    gen = MoSIGenerator(MoSIVideos(), FRAMES, SIZE)
    a = gen(images, torch.Generator().manual_seed(7))
    b = gen(images, torch.Generator().manual_seed(7))
    c = gen(images, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and (a - c).abs().amax() > 0.1
    assert a.shape == (4, 3, FRAMES, SIZE, SIZE) and a.min() >= 0 and a.max() <= 1
    buffer = torch.empty_like(a)
    assert gen(images, torch.Generator().manual_seed(7), out=buffer) is buffer and torch.equal(buffer, a)


def test_a_still_speed_class_gives_still_videos():
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    video = MoSIGenerator(MoSIVideos(speeds=[0.0]), FRAMES, SIZE)(images, torch.Generator().manual_seed(0))
    assert torch.equal(video, video[:, :, :1].expand_as(video))


def test_any_output_buffer_and_no_videos():
    """Clips land in any buffer (strided, other dtype) as they would be returned; no images, no videos."""
    images = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    gen = MoSIGenerator(MoSIVideos(), FRAMES, SIZE)
    expected = gen(images, torch.Generator().manual_seed(1))
    strided = torch.empty(3, FRAMES, 3, SIZE, SIZE).transpose(1, 2)
    assert torch.equal(gen(images, torch.Generator().manual_seed(1), out=strided), expected)
    half = torch.empty(3, 3, FRAMES, SIZE, SIZE, dtype=torch.bfloat16)
    assert torch.equal(gen(images, torch.Generator().manual_seed(1), out=half), expected.bfloat16())
    assert gen(images[:0], torch.Generator()).shape == (0, 3, FRAMES, SIZE, SIZE)
