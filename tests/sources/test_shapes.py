"""Synthetic moving shapes: what the videos hold (range, seeds, motion laws, occlusion) and what the plans draw."""

import contextlib
import math
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from pmgflow.sources import shapes
from pmgflow.sources.shapes import MAX_CORNERS, ShapesGenerator, ShapesPlan, power_law, reference_times
from pmgflow.spec.sources import ShapesVideos

FRAMES, SIZE = 8, 32


def random_images(m: int, g: torch.Generator) -> torch.Tensor:
    """A texture source: m random images (not at the clip size, so they are resized)."""
    return torch.rand(m, 3, 20, 20, generator=g)


def make(spec: ShapesVideos, n: int = 3, seed: int = 0, frames: int = FRAMES, size: int = SIZE) -> torch.Tensor:
    return ShapesGenerator(spec, frames, size)(n, torch.Generator().manual_seed(seed), textures=random_images)


def video_plan(objects: list[dict], background=(0.0, 0.0, 0.0)) -> ShapesPlan:
    """A plan of one video whose depth slots hold `objects` far to near (dicts of centre, velocity, accel,
    radius, colour, corners, angles, angle0, spin, growth, present; defaults: a still white circle)."""
    def field(name, default, dtype=torch.float32):
        return torch.tensor([[o.get(name, default) for o in objects]], dtype=dtype)

    angles = torch.tensor([[o.get("angles", [0.0] * MAX_CORNERS) for o in objects]], dtype=torch.float32)
    return ShapesPlan(present=field("present", True, torch.bool), corners=field("corners", 0, torch.long),
                      angles=angles, radius=field("radius", 0.15), centre=field("centre", [0.0, 0.0]),
                      velocity=field("velocity", [0.0, 0.0]), accel=field("accel", [0.0, 0.0]),
                      angle0=field("angle0", 0.0), spin=field("spin", 0.0), growth=field("growth", 0.0),
                      colour=field("colour", [1.0, 1.0, 1.0]), background=torch.tensor([background]))


def render(plan: ShapesPlan, frames: int = FRAMES, size: int = SIZE, **spec) -> torch.Tensor:
    """The video (3,T,S,S) of a one-video plan, rendered by the generator (flat textures)."""
    spec = {"objects": (1, 1), "shapes": ["circle"], "texture": "flat", "background": "black", **spec}
    gen = ShapesGenerator(ShapesVideos(**spec), frames, size)
    with mock.patch.object(gen, "plan", lambda n, g: plan):
        return gen(1, torch.Generator().manual_seed(0))[0]


def centroids(mass: torch.Tensor) -> torch.Tensor:
    """Mass-weighted centroids (T,2) of frames (T,S,S), in pixel indices (x, y)."""
    idx = torch.arange(mass.shape[-1], dtype=torch.float64)
    mass = mass.double()
    total = mass.sum((1, 2))
    return torch.stack([(mass.sum(1) * idx).sum(-1) / total, (mass.sum(2) * idx).sum(-1) / total], -1)


def to_pixels(normalized: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """grid_sample normalized coordinates -> pixel indices (pixel i's centre is at (2i+1)/size - 1)."""
    return (normalized.double() + 1) * size / 2 - 0.5


@pytest.mark.parametrize("motion", ["static", "moving", "transforming", "accelerating"])
@pytest.mark.parametrize("texture", ["flat", "noise", "image"])
def test_videos_have_the_clip_shape_and_stay_in_range(motion, texture):
    spec = ShapesVideos(motion=motion, texture=texture, objects=(2, 4))
    video = make(spec)
    assert video.shape == (3, 3, FRAMES, SIZE, SIZE) and video.dtype == torch.float32
    assert bool(torch.isfinite(video).all())
    assert video.min() >= 0 and video.max() <= 1
    assert video.amax() > 0.05  # the objects show on the black background
    moved = (video[:, :, 1:] - video[:, :, :1]).abs().amax().item()
    if motion == "static":
        assert moved == 0
    else:
        assert moved > 0.05


@pytest.mark.parametrize("background", ["black", "flat", "noise", "image"])
def test_backgrounds(background):
    spec = ShapesVideos(background=background, objects=(1, 2), radius=(0.05, 0.1), motion="static")
    video = make(spec, n=4)
    assert video.shape == (4, 3, FRAMES, SIZE, SIZE) and video.min() >= 0 and video.max() <= 1
    frame = video[:, :, 0].flatten(2)  # (n,3,S*S); small objects leave most of each frame to the background
    common = frame.median(-1).values  # (n,3): the background's colour where it is flat
    share = (frame == common[..., None]).all(1).float().mean(-1)  # (n,) pixels of exactly that colour
    if background == "black":
        assert bool((common == 0).all()) and share.min() > 0.5
    elif background == "flat":  # one colour per video, another in each video
        assert share.min() > 0.5 and common.std(0).amax() > 0.05
    else:  # textured: hardly two pixels alike
        assert share.max() < 0.05 and frame.std(-1).amin() > 0.01


def test_a_seed_gives_the_same_videos_and_another_seed_other_videos():
    for texture, background in (("flat", "black"), ("noise", "flat"), ("image", "image")):
        spec = ShapesVideos(texture=texture, background=background)
        a, b, c = make(spec, seed=5), make(spec, seed=5), make(spec, seed=6)
        assert torch.equal(a, b), texture
        assert (a - c).abs().amax() > 0.1, texture


def test_videos_are_written_into_the_given_buffer():
    gen = ShapesGenerator(ShapesVideos(texture="noise"), FRAMES, SIZE)
    buffer = torch.full((2, 3, FRAMES, SIZE, SIZE), -1.0)
    made = gen(2, torch.Generator().manual_seed(1), out=buffer)
    assert made is buffer and buffer.min() >= 0
    assert torch.equal(buffer, gen(2, torch.Generator().manual_seed(1)))


def test_image_fills_need_a_texture_source():
    for spec in (ShapesVideos(texture="image"), ShapesVideos(background="image")):
        with pytest.raises(ValueError, match="textures"):
            ShapesGenerator(spec, FRAMES, SIZE)(1, torch.Generator())


def test_the_nearer_slot_hides_the_farther_one():
    red = {"centre": [-0.1, 0.0], "radius": 0.2, "colour": [1.0, 0.0, 0.0]}
    green = {"centre": [0.1, 0.0], "radius": 0.2, "colour": [0.0, 1.0, 0.0]}
    overlap, red_only, green_only = (16, 16), (16, 10), (16, 22)  # (row, column); disks of 6.4 px radius
    green_near = render(video_plan([red, green]))[:, 0]
    red_near = render(video_plan([green, red]))[:, 0]
    assert green_near[:, overlap[0], overlap[1]].tolist() == [0.0, 1.0, 0.0]
    assert red_near[:, overlap[0], overlap[1]].tolist() == [1.0, 0.0, 0.0]
    for video in (green_near, red_near):  # away from the overlap each shows its own colour
        assert video[:, red_only[0], red_only[1]].tolist() == [1.0, 0.0, 0.0]
        assert video[:, green_only[0], green_only[1]].tolist() == [0.0, 1.0, 0.0]


def test_a_texture_of_one_colour_draws_as_that_flat_colour():
    """Flat fills composite a colour by the sampled alpha, image fills a sampled texture: the same objects with
    textures of their flat colours give the same video (occlusion, moving and turning edges included)."""
    red = {"centre": [-0.1, 0.0], "radius": 0.2, "colour": [1.0, 0.0, 0.0], "velocity": [0.01, 0.02]}
    green = {"centre": [0.1, 0.0], "radius": 0.25, "colour": [0.0, 1.0, 0.0], "corners": 4, "spin": 0.1,
             "angles": [0.0, 1.5, 3.0, 4.5, 4.5, 4.5]}
    plan = video_plan([red, green], background=(0.2, 0.3, 0.4))
    colours = plan.colour.flatten(0, 1)  # the filled slots, far to near

    def one_colour(m: int, g: torch.Generator) -> torch.Tensor:
        assert m == len(colours)
        return colours[:, :, None, None].expand(-1, -1, 20, 20)

    spec = {"objects": (2, 2), "shapes": ["circle", "polygon"], "motion": "transforming", "background": "flat"}
    flat = render(plan, **spec)
    gen = ShapesGenerator(ShapesVideos(**spec, texture="image"), FRAMES, SIZE)
    with mock.patch.object(gen, "plan", lambda n, g: plan):
        textured = gen(1, torch.Generator().manual_seed(0), textures=one_colour)[0]
    for colour in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.4]):  # both objects and the background show
        assert bool(((flat - torch.tensor(colour)[:, None, None, None]).abs().amax(0) < 1e-6).any())
    assert torch.allclose(textured, flat, atol=1e-5)


def whole_frames(gen: ShapesGenerator, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, shapes.Boxes]:
    """The generator's videos drawn the plain way, every object sampled over whole frames (as in the bench's
    naive renderer, batched over frames), each object's alpha over whole frames (n,K,T,S,S), and the boxes."""
    g = torch.Generator().manual_seed(seed)
    t, size = gen.frames, gen.size
    plan = gen.plan(n, g)
    boxes = plan.boxes(gen.times, size)
    sprites = gen.sprites(plan, gen.layout(plan, boxes), g, torch.device("cpu"), random_images)
    video = gen.backgrounds(plan, g, torch.device("cpu"), random_images)[:, :, None].repeat(1, 1, t, 1, 1)
    poses = plan.poses(gen.times, size)[..., :2, :]
    alphas = torch.zeros(n, plan.present.shape[1], t, size, size)
    for v, slot in plan.present.nonzero().tolist():  # video-major: far to near within a video
        grid = F.affine_grid(poses[v, slot], [t, 1, size, size], align_corners=False)
        alpha = F.grid_sample(sprites.alpha(v, slot).expand(t, -1, -1, -1), grid, align_corners=False)
        fill = sprites.fill(v, slot)
        if fill.dim() == 3 and fill.shape[-1] > 1:
            fill = F.grid_sample(fill.expand(t, -1, -1, -1), grid, align_corners=False)
        video[v] = video[v].transpose(0, 1).lerp(fill.expand(t, 3, size, size), alpha).transpose(0, 1)
        alphas[v, slot] = alpha[:, 0]
    return video.clamp(0, 1), alphas, boxes


@contextlib.contextmanager
def exact_boxes():
    """Boxes of exactly the side needed: no rounding up to a size class, so a box too small shows."""
    with mock.patch.object(shapes, "BOX_CLASSES", 10 ** 6), mock.patch.object(shapes, "MIN_BOX_STEP", 1):
        yield


@pytest.mark.parametrize("spec", [
    {"texture": "image"},
    {"texture": "noise", "background": "noise", "objects": (1, 4)},
    {"radius": (0.3, 2.0), "scaling": 0.2, "rotation": 45, "speed": (0.1, 0.5), "acceleration": 0.1},
    {"radius": (0.005, 0.05), "radius_power": 0, "shapes": ["polygon"], "scaling": 0.2},
    {"radius": (0.1, 0.4), "radius_power": 0, "objects": (12, 12)},
])
@pytest.mark.parametrize("frames, size", [(8, 32), (4, 19), (3, 64)])
@pytest.mark.parametrize("exact", [False, True])
def test_drawing_in_boxes_gives_the_whole_frames(spec, frames, size, exact):
    """Objects are sampled only inside their boxes: the videos equal those drawn over whole frames, and no
    object's alpha reaches a pixel outside its box in any frame (huge, tiny, fast, growing objects included;
    also with boxes of exactly the side needed, no rounding up to a size class)."""
    gen = ShapesGenerator(ShapesVideos(**spec), frames, size)
    with exact_boxes() if exact else contextlib.nullcontext():
        expected, alphas, boxes = whole_frames(gen, 6, seed=3)
        made = gen(6, torch.Generator().manual_seed(3), textures=random_images)
    assert (made - expected).abs().max() < 1e-4
    assert bool((outside_alpha(alphas, boxes) == 0).all())
    assert bool(((boxes.side >= 1) & (boxes.side <= size)).all())
    assert bool(((boxes.origin >= 0) & (boxes.origin + boxes.side[..., None, None] <= size)).all())


def outside_alpha(alphas: torch.Tensor, boxes) -> torch.Tensor:
    """The objects' alpha (n,K,T,S,S) at the pixels outside their boxes."""
    idx = torch.arange(alphas.shape[-1])
    x0, y0 = boxes.origin[..., 0, None], boxes.origin[..., 1, None]  # (n,K,T,1)
    side = boxes.side[..., None, None]
    inside_x, inside_y = (idx >= x0) & (idx < x0 + side), (idx >= y0) & (idx < y0 + side)
    return alphas[~(inside_y[..., :, None] & inside_x[..., None, :])]


def test_an_acute_corner_stays_within_its_box():
    """The soft edge past a very acute polygon corner (its spike) is cut at the shape's circle, so the corner
    stays within the box drawn for the circle."""
    # A 0.05 rad corner pointing along the sprite's diagonal, where the sprite reaches farthest past the circle.
    sharp = [0.75 * math.pi, 1.75 * math.pi - 0.05, 1.75 * math.pi + 0.05]
    plan = video_plan([{"corners": 3, "angles": sharp + sharp[-1:] * 3, "radius": 0.15, "angle0": 0.3}])
    gen = ShapesGenerator(ShapesVideos(objects=(1, 1), shapes=["polygon"], motion="static"), 2, 48)
    with mock.patch.object(gen, "plan", lambda n, g: plan), exact_boxes():
        expected, alphas, boxes = whole_frames(gen, 1, seed=0)
        made = gen(1, torch.Generator().manual_seed(0))
    assert bool((outside_alpha(alphas, boxes) == 0).all())
    assert (made - expected).abs().max() < 1e-4
    assert alphas.amax() > 0.5  # the triangle is drawn


def test_an_accelerating_object_follows_its_trajectory():
    """Centroid of a white disk on black: c0 + v t + a t^2 / 2 at the reference times, in pixels."""
    centre, velocity, accel = [-0.4, 0.3], [0.03, -0.02], [0.002, -0.003]
    plan = video_plan([{"centre": centre, "velocity": velocity, "accel": accel, "radius": 0.15}])
    video = render(plan, motion="accelerating", rotation=0, scaling=0)
    t = reference_times(FRAMES).double()
    expected = torch.tensor(centre)[None] + torch.tensor(velocity)[None] * t[:, None] \
        + 0.5 * torch.tensor(accel)[None] * t[:, None] ** 2
    # Inside the frame all the way (radius 0.3 normalized, the path stays within +-0.6).
    assert bool((expected.abs() + 0.3 < 1).all())
    measured = centroids(video[0])
    assert (measured - to_pixels(expected)).abs().amax() < 0.15
    assert torch.allclose(plan.positions(reference_times(FRAMES))[0, 0].double(), expected, atol=1e-6)
    # The disk keeps its area (pi r^2 pixels, r = 0.15 x 32; its edge is sampled, so within 3 %) and colour.
    assert video[0].sum((1, 2)).div(math.pi * (0.15 * SIZE) ** 2).sub(1).abs().amax() < 0.03
    assert torch.equal(video[0], video[1]) and torch.equal(video[0], video[2])


def test_drawn_objects_follow_their_planned_positions():
    """The generator's own plans (drawn first from the generator) are the ones rendered."""
    spec = ShapesVideos(objects=(1, 1), shapes=["circle"], radius=(0.1, 0.1), motion="accelerating",
                        rotation=0, scaling=0, speed=(0.01, 0.02), acceleration=0.001)
    gen = ShapesGenerator(spec, FRAMES, SIZE)
    plan = gen.plan(24, torch.Generator().manual_seed(3))
    video = gen(24, torch.Generator().manual_seed(3))
    path = plan.positions(gen.times)[:, 0]  # (n,T,2)
    inside = (path.abs() + 0.2 < 0.97).flatten(1).all(1)
    assert int(inside.sum()) >= 3
    alpha = video.amax(1) / plan.colour[:, 0].amax(-1)[:, None, None, None]  # flat colour x coverage
    for i in inside.nonzero().flatten().tolist():
        measured = centroids(alpha[i])
        assert (measured - to_pixels(path[i])).abs().amax() < 0.15


def test_a_moving_object_covers_the_same_path_at_any_frame_count():
    plan = video_plan([{"centre": [-0.5, 0.2], "velocity": [0.06, -0.02], "radius": 0.12}])
    short, long = render(plan, frames=8, motion="moving")[0], render(plan, frames=16, motion="moving")[0]
    for video in (short, long):
        moved = centroids(video[-1:]) - centroids(video[:1])
        assert torch.allclose(moved[0], torch.tensor([0.06, -0.02], dtype=torch.float64) * 15 * SIZE / 2, atol=0.15)
    # Per frame, the 8-frame clip steps 15/7 times as far as the 16-frame one.
    step_short = (centroids(short[1:2]) - centroids(short[:1]))[0]
    step_long = (centroids(long[1:2]) - centroids(long[:1]))[0]
    assert torch.allclose(step_short, step_long * 15 / 7, atol=0.1)


def test_first_and_last_frames_do_not_depend_on_the_frame_count():
    spec = ShapesVideos(motion="accelerating", texture="noise", background="noise")
    short, long = make(spec, n=3, seed=4, frames=8), make(spec, n=3, seed=4, frames=16)
    assert torch.allclose(short[:, :, 0], long[:, :, 0], atol=1e-6)
    assert torch.allclose(short[:, :, -1], long[:, :, -1], atol=1e-6)
    assert (short[:, :, -1] - short[:, :, 0]).abs().amax() > 0.1


def test_a_static_video_is_one_frame_repeated():
    video = make(ShapesVideos(motion="static", texture="noise", rotation=45, scaling=0.2, acceleration=0.1), n=4)
    assert torch.equal(video, video[:, :, :1].expand_as(video))


def test_rotation_and_scale_change_pose_the_shape():
    """A square spinning and growing: its last frame equals a still square drawn at the end pose."""
    square = [math.pi / 4 * k for k in (1, 3, 5, 7)] + [7 * math.pi / 4] * 2
    moving = {"corners": 4, "angles": square, "radius": 0.15, "spin": 0.05, "growth": 0.03}
    end = {"corners": 4, "angles": square, "radius": 0.15 * 1.03 ** 15, "angle0": 0.05 * 15}
    video = render(video_plan([moving]), motion="transforming", shapes=["polygon"])[0]
    still = render(video_plan([end]), motion="static", shapes=["polygon"])[0]
    assert torch.allclose(video[-1], still[0], atol=1e-4)
    # A square of circumradius r covers 2 r^2 (its edges are sampled: within 7 % at r = 4.8 px); grown by
    # 1.03^15 its area grows by 1.03^30.
    area = video.sum((1, 2))
    r = 0.15 * SIZE
    assert area[0].item() == pytest.approx(2 * r * r, rel=0.07)
    assert area[-1].item() == pytest.approx(2 * r * r * 1.03 ** 30, rel=0.07)
    assert (video[-1] - video[0]).abs().amax() > 0.5  # turned and grown


def test_polygons_have_three_to_six_corners_and_their_area():
    gen = ShapesGenerator(ShapesVideos(shapes=["polygon"], objects=(2, 5)), FRAMES, SIZE)
    plan = gen.plan(200, torch.Generator().manual_seed(0))
    corners = plan.corners[plan.present]
    assert set(corners.tolist()) == {3, 4, 5, 6}
    circles = ShapesGenerator(ShapesVideos(shapes=["circle"]), FRAMES, SIZE).plan(50, torch.Generator())
    assert bool((circles.corners == 0).all())
    # The rendered polygon covers the area of its corners on the circle: r^2/2 sum sin(gap).
    for i in range(6):
        k = int(plan.corners[i, -1])
        a = plan.angles[i, -1].double().unique()  # past its corner count a polygon repeats a corner
        assert len(a) == k
        gaps = torch.diff(torch.cat([a, a[:1] + 2 * math.pi]))
        obj = {"corners": k, "angles": plan.angles[i, -1].tolist(), "radius": 0.3}
        area = render(video_plan([obj]), motion="static", shapes=["polygon"])[0, 0].sum().item()
        expected = 0.5 * (0.3 * SIZE) ** 2 * torch.sin(gaps).sum().item()
        assert area == pytest.approx(expected, rel=0.04)


def test_radii_follow_the_power_law_within_their_range():
    lo, hi = 0.08, 0.4
    g = torch.Generator().manual_seed(0)
    small = ShapesGenerator(ShapesVideos(radius=(lo, hi), radius_power=3), FRAMES, SIZE).plan(500, g).radius
    uniform = ShapesGenerator(ShapesVideos(radius=(lo, hi), radius_power=0), FRAMES, SIZE).plan(500, g).radius
    for r in (small, uniform):
        assert r.min() >= lo - 1e-6 and r.max() <= hi + 1e-6
    # p(r) ~ r^-3 on [0.08, 0.4]: median (lo^-2 / 2 + hi^-2 / 2)^-1/2 = 0.111, far below the midpoint 0.24.
    median = (0.5 * lo ** -2 + 0.5 * hi ** -2) ** -0.5
    assert small.median().item() == pytest.approx(median, abs=0.008)
    assert uniform.median().item() == pytest.approx((lo + hi) / 2, abs=0.02)
    assert power_law(torch.tensor([0.0, 1.0]), lo, hi, 1.0).tolist() == pytest.approx([lo, hi])
    assert power_law(torch.tensor([0.5]), lo, hi, 1.0).item() == pytest.approx(math.sqrt(lo * hi))


def test_plans_draw_within_the_spec():
    spec = ShapesVideos(objects=(2, 5), speed=(0.01, 0.03), acceleration=0.004, rotation=10, scaling=0.05)
    plan = ShapesGenerator(spec, FRAMES, SIZE).plan(300, torch.Generator().manual_seed(2))
    count = plan.present.sum(1)
    assert plan.present.shape == (300, 5) and count.min() == 2 and count.max() == 5
    assert bool((count[:-1] >= count[1:]).all())  # most objects first
    # A video of c objects fills the c nearest slots (the last ones); farther slots stay empty.
    k = plan.present.shape[1]
    assert torch.equal(plan.present, torch.arange(k)[None] >= (k - count)[:, None])
    speed = plan.velocity.norm(dim=-1)
    assert speed.min() >= 2 * 0.01 - 1e-6 and speed.max() <= 2 * 0.03 + 1e-6
    assert plan.accel.norm(dim=-1).max() <= 2 * 0.004 + 1e-6 and plan.accel.norm(dim=-1).max() > 2 * 0.003
    assert plan.spin.abs().max() <= math.radians(10) + 1e-6 and plan.spin.abs().max() > math.radians(9)
    assert plan.growth.abs().max() <= 0.05 + 1e-6
    assert plan.centre.abs().max() <= 1
    moving = ShapesGenerator(spec.model_copy(update={"motion": "moving"}), FRAMES, SIZE).plan(20, torch.Generator())
    assert bool((moving.accel == 0).all() and (moving.spin == 0).all() and (moving.growth == 0).all())
    assert bool((moving.velocity != 0).any())


def test_empty_slots_add_nothing():
    """An empty slot, though its object would show, leaves the video as its filled slots alone make it."""
    hidden = {"present": False, "centre": [0.0, 0.0], "radius": 0.4, "colour": [1.0, 0.0, 0.0]}
    shown = {"centre": [0.3, -0.2], "velocity": [-0.02, 0.01], "radius": 0.1, "colour": [0.2, 0.5, 0.9]}
    with_empty = render(video_plan([hidden, shown], background=(0.1, 0.1, 0.1)), background="flat")
    alone = render(video_plan([shown], background=(0.1, 0.1, 0.1)), background="flat")
    assert torch.equal(with_empty, alone)
    assert with_empty[:, 0, 16, 16].tolist() == pytest.approx([0.1] * 3)  # no red where the empty slot's disk would be
    # Drawn plans: whatever an empty slot's object would be, it does not show.
    gen = ShapesGenerator(ShapesVideos(objects=(1, 3), motion="moving"), FRAMES, SIZE)
    plan = gen.plan(6, torch.Generator().manual_seed(0))
    assert not bool(plan.present.all())
    empty = ~plan.present
    loud = ShapesPlan(**{**plan.__dict__, "radius": torch.where(empty, 0.5, plan.radius),
                         "colour": torch.where(empty[..., None], 1.0, plan.colour)})
    videos = []
    for p in (plan, loud):
        with mock.patch.object(gen, "plan", lambda n, g, p=p: p):
            videos.append(gen(6, torch.Generator().manual_seed(0)))
    assert torch.equal(videos[0], videos[1])
