"""MoSI pseudo camera motion: the windows stay inside their image, move at their speed class, and the frames
show the image through them."""

from unittest import mock

import pytest
import torch

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


def test_speeds_are_the_speed_classes_unless_too_fast_for_the_window():
    speeds = [-0.03, -0.01, 0.0, 0.01, 0.03]
    spec = MoSIVideos(window=(0.5, 0.8), speeds=speeds, one_axis=False)
    plan = MoSIGenerator(spec, FRAMES, SIZE).plan(1000, torch.Generator().manual_seed(2))
    classes = torch.tensor(speeds) * 2  # normalized units per reference frame
    # A window of side w keeps inside the image at up to 2 (1 - w) / 15 per frame.
    fastest = (2 * (1 - plan.side) / 15)[:, None].expand_as(plan.velocity)
    is_class = (plan.velocity[..., None] - classes).abs().amin(-1) < 1e-6
    clamped = ((plan.velocity.abs() - fastest).abs() < 1e-6) & (fastest < 2 * 0.03)
    assert bool((is_class | clamped).all())
    assert int(clamped.sum()) > 50 and int(is_class.sum()) > 500  # both happen with this window range
    # Only the fast class is ever slowed, and only where it does not fit.
    assert bool((fastest[clamped] < 0.06).all()) and bool((plan.velocity.abs() <= fastest + 1e-6).all())
    for value in classes.tolist():
        assert bool(((plan.velocity - value).abs() < 1e-6).any()), value


def test_the_window_moves_by_its_speed():
    """A ramp image seen through a window of known path: the frames' means give the window's centre."""
    plan = WindowPlan(side=torch.tensor([0.5, 0.6]), start=torch.tensor([[-0.3, 0.1], [0.2, 0.35]]),
                      velocity=torch.tensor([[0.04, 0.0], [0.0, -0.05]]))
    gen = MoSIGenerator(MoSIVideos(), FRAMES, SIZE)
    with mock.patch.object(gen, "plan", lambda n, g: plan):
        video = gen(ramps(2), torch.Generator())
    assert video.shape == (2, 3, FRAMES, SIZE, SIZE)
    t = reference_times(FRAMES)
    expected = plan.start[:, None] + plan.velocity[:, None] * t[None, :, None]
    assert torch.allclose(window_centres(video), expected, atol=1e-4)
    # First to last frame: 15 reference frames at the speed (0.3 of the image's normalized span of 2 along x).
    assert window_centres(video)[0, -1, 0] - window_centres(video)[0, 0, 0] == pytest.approx(0.6, abs=1e-4)
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
    plan = WindowPlan(side=torch.tensor([0.6]), start=torch.tensor([[-0.25, 0.0]]),
                      velocity=torch.tensor([[0.03, 0.0]]))
    gen = MoSIGenerator(MoSIVideos(), 16, SIZE)
    with mock.patch.object(gen, "plan", lambda n, g: plan):
        video = gen(image, torch.Generator())[0, 0]  # (T,S,S)
    idx = torch.arange(SIZE, dtype=torch.float64)
    x = (video.double().sum(1) * idx).sum(-1) / video.double().sum((1, 2))  # dot's column per frame
    # The dot at image x = 0 shows at frame x = (0 - centre) / side, in pixels (x + 1) S / 2 - 0.5.
    centre = -0.25 + 0.03 * torch.arange(16, dtype=torch.float64)
    expected = (-centre / 0.6 + 1) * SIZE / 2 - 0.5
    assert torch.allclose(x, expected, atol=0.2)  # the dot's edges are point-sampled: 0.1 px of jitter
    assert x[-1] < x[0] - 10  # 0.45 / 0.6 of the half frame: 12 px


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
