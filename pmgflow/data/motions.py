"""The embedded motion set: rigid objects whose classes are told apart by their trajectory (no download).

Where the action set's classes differ in how the parts of an articulated body move, here one rigid object moves
as a whole and the class is its kinematics: drifting, circling, spinning, approaching, swinging, falling,
bouncing, zigzagging, stopping and going, pulsing, spiralling or wandering (:data:`MOTIONS`).

Each video shows one object -- a disk, square, triangle, split ring or blob, 0.15 to 0.3 of the frame
across, plain, striped, checked or two-tone, in colours that contrast with the background -- on the smooth,
low-contrast background of the action set; about a third of the videos add a second object as a distractor,
static or drifting slowly, behind the first. The looks are drawn before the motion and the same way for every
class, and the start position, direction, speed, phase and a slow turn of the object are random per video, so
no single frame tells the class. Speeds are about 0.02 to 0.05 of the frame per frame (about 1 to 2 px at 32 px
after a random resized crop) and periods 10 to 16 frames: an 8-frame clip at stride 2 sees the cue.

Written in the UCF101 layout and cached by :mod:`pmgflow.data.embedded` (:data:`MOTION_SET`, spec kind
``motions``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pmgflow.data.embedded import EmbeddedSet, background, colour_near

# Bump when the renderer changes: a cached set written by another version is rendered again.
RENDER_VERSION = 1

# Ordered most distinct first: a spec with N classes takes the first N (translation, rotation about a far
# centre, rotation in place and scaling first; look-alikes such as orbit/spiral or approach/pulse apart).
MOTIONS = [
    "linear", "orbit", "spin", "approach", "oscillate", "fall",
    "bounce", "zigzag", "stop_and_go", "pulse", "spiral", "jitter",
]  # fmt: skip

SHAPES = ("disk", "square", "triangle", "ring", "blob")
TEXTURES = ("plain", "stripes", "checker", "halves")
DISTRACTOR = 0.3  # chance of a second, slow object behind the main one
_LO, _HI = 0.12, 0.88  # range of an object's centre (frame units): at most a little of it leaves the frame

# Motion: (rng, t, radius) -> centre (T, 2) in frame units (x right, y down), turn (T,) radians, scale (T,).
Motion = Callable[[np.random.Generator, np.ndarray, float], tuple[np.ndarray, np.ndarray | float, np.ndarray | float]]


def _unit(angle: np.ndarray | float) -> np.ndarray:
    """Unit vectors (..., 2) at the given angles."""
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1)


def _cycle(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """Phase (T,) of a periodic motion: a period of 10 to 16 frames, either way round, a random start."""
    return rng.choice([-1.0, 1.0]) * 2 * np.pi * t / rng.uniform(10, 16) + rng.uniform(0, 2 * np.pi)


def _place(rng: np.random.Generator, path: np.ndarray, lo: float = _LO, hi: float = _HI) -> np.ndarray:
    """Move a relative path (T, 2) to a random place where it stays within [lo, hi]^2; shrunk first if it cannot.

    Shrinking keeps the path's shape (a long drift becomes slower, a high parabola has weaker gravity).
    """
    extent = np.ptp(path, axis=0).max()
    if extent > hi - lo:
        path = path * ((hi - lo) / extent)
    room = np.maximum(hi - lo - np.ptp(path, axis=0), 0.0)
    return path + (lo - path.min(axis=0)) + rng.uniform(0, 1, size=2) * room


def _still(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A fixed centre (T, 2) at a random place."""
    return _place(rng, np.zeros((len(t), 2)))


def _linear(rng, t, radius):
    """Constant velocity along a random heading."""
    return _place(rng, rng.uniform(0.02, 0.035) * t[:, None] * _unit(rng.uniform(0, 2 * np.pi))), 0.0, 1.0


def _orbit(rng, t, radius):
    """A circle around a fixed centre at constant angular speed, either way round."""
    return _place(rng, rng.uniform(0.06, 0.1) * _unit(_cycle(rng, t))), 0.0, 1.0


def _spin(rng, t, radius):
    """Rotation about its own centre, either way, 0.15 to 0.3 rad per frame (under the shapes' aliasing limit)."""
    return _still(rng, t), rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3) * t, 1.0


def _approach(rng, t, radius):
    """Grows or shrinks exponentially in place (coming closer or going away): the area doubles in 10 to 17 frames."""
    return _still(rng, t), 0.0, np.exp(rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.035) * t)


def _oscillate(rng, t, radius):
    """Back and forth along a line through a fixed point, sinusoidally."""
    line = _unit(rng.uniform(0, np.pi))
    return _place(rng, rng.uniform(0.07, 0.13) * np.sin(_cycle(rng, t))[:, None] * line), 0.0, 1.0


def _fall(rng, t, radius):
    """A projectile under gravity (y down): constant horizontal speed, constant downward acceleration."""
    apex = rng.uniform(0.0, 0.7) * t[-1]  # from a throw upwards to a plain fall
    path = np.stack([rng.uniform(-0.015, 0.015) * t, 0.5 * rng.uniform(0.003, 0.005) * (t - apex) ** 2], axis=-1)
    return _place(rng, path), 0.0, 1.0


def _bounce(rng, t, radius):
    """Constant velocity, mirrored where the object touches a frame edge; diagonal, so both axes bounce."""
    heading = rng.uniform(np.pi / 6, np.pi / 3) + np.pi / 2 * rng.integers(4)
    lo, width = radius, 1 - 2 * radius
    free = rng.uniform(0, width, size=2) + rng.uniform(0.04, 0.055) * t[:, None] * _unit(heading)
    folded = np.mod(free, 2 * width)
    return lo + np.minimum(folded, 2 * width - folded), 0.0, 1.0


def _zigzag(rng, t, radius):
    """Straight legs turning alternately left and right of a heading every 5 to 8 frames."""
    leg = rng.uniform(5, 8)
    side = np.where(np.floor(t / leg + rng.uniform(0, 2)) % 2 == 0, 1.0, -1.0)
    heading = rng.uniform(0, 2 * np.pi) + np.radians(rng.uniform(35, 55)) * side
    return _place(rng, np.cumsum(rng.uniform(0.03, 0.045) * _unit(heading), axis=0)), 0.0, 1.0


def _stop_and_go(rng, t, radius):
    """Moves a stretch along a heading (easing in and out), rests, moves on: once per period."""
    period, moving = rng.uniform(10, 16), rng.uniform(0.4, 0.6)
    cycles = (t + rng.uniform(0, period)) / period
    within = np.clip((cycles % 1) / moving, 0, 1)
    progress = np.floor(cycles) + within * within * (3 - 2 * within)
    return _place(rng, rng.uniform(0.15, 0.24) * progress[:, None] * _unit(rng.uniform(0, 2 * np.pi))), 0.0, 1.0


def _pulse(rng, t, radius):
    """Swells and shrinks periodically in place."""
    return _still(rng, t), 0.0, 1 + rng.uniform(0.2, 0.35) * np.sin(_cycle(rng, t))


def _spiral(rng, t, radius):
    """An orbit whose radius grows or shrinks exponentially (spiralling out or in): 1.7 to 2.4 times in 16 frames."""
    k = rng.choice([-1.0, 1.0]) * rng.uniform(0.035, 0.055)
    distance = rng.uniform(0.06, 0.1) * np.exp(k * (t - t.mean()))
    return _place(rng, distance[:, None] * _unit(_cycle(rng, t))), 0.0, 1.0


def _jitter(rng, t, radius):
    """A random walk: the velocity is redrawn every frame with little memory (an AR(1) process)."""
    keep = rng.uniform(0.3, 0.6)
    noise = rng.normal(0, rng.uniform(0.02, 0.03), size=(len(t), 2)) * np.sqrt(1 - keep**2)
    velocity = noise.copy()
    for i in range(1, len(t)):
        velocity[i] += keep * velocity[i - 1]
    return _place(rng, np.cumsum(velocity, axis=0)), 0.0, 1.0


_MOTIONS: dict[str, Motion] = {
    "linear": _linear, "orbit": _orbit, "spin": _spin, "approach": _approach, "oscillate": _oscillate,
    "fall": _fall, "bounce": _bounce, "zigzag": _zigzag, "stop_and_go": _stop_and_go, "pulse": _pulse,
    "spiral": _spiral, "jitter": _jitter,
}  # fmt: skip
assert list(_MOTIONS) == MOTIONS


@dataclass(frozen=True)
class _Look:
    """How one object looks: shape, radius (frame units), two colours and a texture of the second one."""

    shape: str
    radius: float
    colours: tuple[np.ndarray, np.ndarray]
    texture: str
    frequency: float  # stripes or checks per radius
    offset: float  # texture phase
    blob: np.ndarray  # blob outline: amplitudes and phases of its 2nd and 3rd harmonics


def _random_look(rng: np.random.Generator, level: float, sign: float) -> _Look:
    """A random object whose colours are lighter (sign +1) or darker (-1) than the background's level."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    # A plain disk would hide a turn (spin); every disk carries a texture.
    textures = TEXTURES[1:] if shape == "disk" else TEXTURES
    texture = textures[rng.integers(len(textures))]
    main = colour_near(rng, float(np.clip(level + sign * rng.uniform(0.3, 0.45), 0.03, 0.97)), 0.25)
    second = colour_near(rng, float(np.clip(level + sign * rng.uniform(0.1, 0.22), 0.03, 0.97)), 0.25)
    blob = np.concatenate([rng.uniform(0.1, 0.22, size=2), rng.uniform(0, 2 * np.pi, size=2)])
    return _Look(shape, rng.uniform(0.075, 0.15), (main, second), texture, rng.uniform(1.2, 1.8),
                 rng.uniform(0, 2 * np.pi), blob)  # fmt: skip


# Sizes in units of the radius, chosen so that every shape covers about the area of the unit disk (pi) and is
# centred on its centroid (a turn leaves the centroid in place).
_SQUARE = np.sqrt(np.pi) / 2  # apothem
_TRIANGLE = np.sqrt(np.pi / (3 * np.sqrt(3)))  # apothem
_RING, _RING_HALF, _GAP = 0.9, 0.32, 0.2  # mid radius, half width, half width of the slot that cuts it in two
_REACH = 2 * _TRIANGLE  # farthest point of any shape (a triangle's corner), in units of the radius


def _blob_radius(look: _Look, angle: np.ndarray) -> np.ndarray:
    """A blob's outline in polar form: two harmonics, scaled so that the mean of its square (its area / pi) is 1."""
    a2, a3, p2, p3 = look.blob
    return (1 + a2 * np.cos(2 * angle + p2) + a3 * np.cos(3 * angle + p3)) / np.sqrt(1 + (a2**2 + a3**2) / 2)


def _outline(look: _Look, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Signed distance to the outline (negative inside) at object coordinates (units of the radius)."""
    if look.shape == "disk":
        return np.hypot(u, v) - 1
    if look.shape in ("square", "triangle"):
        sides, apothem = (4, _SQUARE) if look.shape == "square" else (3, _TRIANGLE)
        normals = _unit(2 * np.pi * np.arange(sides) / sides).astype(np.float32)
        return np.max([u * nx + v * ny for nx, ny in normals], axis=0) - apothem
    if look.shape == "ring":  # two arcs: a ring cut by a slot through its centre, so that a turn shows
        return np.maximum(np.abs(np.hypot(u, v) - _RING) - _RING_HALF, _GAP - np.abs(v))
    # A blob's centroid is off its polar origin: x = 2/3 mean(r^3 cos) / mean(r^2), likewise y.
    polar = np.linspace(0, 2 * np.pi, 360, endpoint=False)
    r = _blob_radius(look, polar)
    x, y = 2 / 3 * (r**3 * _unit(polar).T).mean(axis=1) / (r**2).mean()
    u, v = u + np.float32(x), v + np.float32(y)
    return np.hypot(u, v) - _blob_radius(look, np.arctan2(v, u))


def _pattern(look: _Look, u: np.ndarray, v: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Weight of the second colour (0..1) at object coordinates; `pixels` per radius sets the anti-aliasing."""
    if look.texture == "plain":
        return np.zeros_like(u)
    if look.texture == "halves":
        return np.clip(0.5 + u * pixels, 0, 1)
    wave = np.pi * look.frequency
    level = np.sin(wave * u + look.offset)
    if look.texture == "checker":
        level = level * np.sin(wave * v + look.offset)
    return np.clip(0.5 + level * pixels / wave, 0, 1)  # a one-pixel ramp at each edge


def _draw(image: np.ndarray, look: _Look, centre: np.ndarray, turn: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Paint an anti-aliased object over float32 (T, H, W, 3) in place; returns its coverage (T, H, W) in [0, 1].

    Only a window around the object in each frame is computed (one size for all frames, placed per frame), so
    the cost follows the object's size rather than the frame's.
    """
    frames, size = image.shape[:2]
    radius = (look.radius * scale).astype(np.float32)
    side = min(size, int(np.ceil(2 * _REACH * radius.max() * size)) + 3)
    corner = np.clip(np.floor(centre * size).astype(int) - side // 2, 0, size - side)  # (T, 2): x, y
    steps = np.arange(side)
    yy, xx = corner[:, 1, None, None] + steps[None, :, None], corner[:, 0, None, None] + steps[None, None, :]
    cx, cy = (centre * size).astype(np.float32).T
    pixels = (radius * size)[:, None, None]  # pixels per unit of the radius
    dx, dy = (xx + 0.5 - cx[:, None, None]) / pixels, (yy + 0.5 - cy[:, None, None]) / pixels
    cos, sin = np.cos(turn).astype(np.float32)[:, None, None], np.sin(turn).astype(np.float32)[:, None, None]
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    alpha = np.clip(0.5 - _outline(look, u, v) * pixels, 0, 1)[..., None]
    first, second = (c.astype(np.float32) for c in look.colours)
    colour = first + _pattern(look, u, v, pixels)[..., None] * (second - first)
    coverage = np.zeros(image.shape[:3], np.float32)
    for k, (x0, y0) in enumerate(corner):  # slices: much faster than gathering with index arrays
        region = image[k, y0 : y0 + side, x0 : x0 + side]
        region += alpha[k] * (colour[k] - region)
        coverage[k, y0 : y0 + side, x0 : x0 + side] = alpha[k, ..., 0]
    return coverage


def render_motion(
    motion: str, rng: np.random.Generator, frames: int, size: int, *, with_mask: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render one video of `motion`: uint8 (frames, size, size, 3); with_mask: also the main object's coverage.

    The coverage (float32 (frames, size, size) in [0, 1]) is the object's anti-aliased silhouette inside the
    frame, never hidden by the distractor (drawn behind it): its centroid and area track the kinematics.
    """
    if motion not in _MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; expected one of {', '.join(MOTIONS)}")
    t = np.arange(frames, dtype=float)
    grid = (np.arange(size) + 0.5) / size
    still, level = background(rng, grid[None], grid[None])  # a still camera: one frame, repeated
    image = np.repeat(still, frames, axis=0)
    # Objects lighter or darker than the background's mean luminance (by chance near mid-grey).
    sign = 1.0 if level < 0.5 else -1.0
    if rng.random() < 0.3 and 0.3 < level < 0.7:
        sign = -sign

    def turn(extra: np.ndarray | float) -> np.ndarray:
        """A random orientation turning slowly (up to 0.04 rad per frame), plus the motion's own turn."""
        return rng.uniform(0, 2 * np.pi) + rng.uniform(-0.04, 0.04) * t + extra

    # The looks are drawn before the motion: one seed gives the same object, distractor and background in every
    # class.
    look = _random_look(rng, level, sign)
    if rng.random() < DISTRACTOR:
        other = _random_look(rng, level, sign)
        drift = _place(rng, rng.uniform(0, 0.01) * t[:, None] * _unit(rng.uniform(0, 2 * np.pi)))
        _draw(image, other, drift, turn(0.0), np.ones(frames))
    centre, extra, scale = _MOTIONS[motion](rng, t, look.radius)
    scale = np.broadcast_to(np.asarray(scale, float), (frames,))
    scale = scale / np.sqrt(np.mean(scale**2))  # the mean area over the video is the drawn one, in every class
    mask = _draw(image, look, centre, turn(extra), scale)
    video = np.clip(image * 255 + 0.5, 0, 255).astype(np.uint8)
    return (video, mask) if with_mask else video


MOTION_SET = EmbeddedSet("motions", tuple(MOTIONS), render_motion, RENDER_VERSION)
