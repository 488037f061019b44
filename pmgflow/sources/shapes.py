"""Synthetic videos of moving shapes (after Yu, Chen and Gandelsman, arXiv 2410.24213), generated in batches.

Each object is a *sprite* in its own frame, made once per video: an anti-aliased shape mask (alpha) and the
fill under it, a flat colour or a texture image. A frame of a video is every sprite sampled through its pose at
that time (position c0 + v·t + a·t²/2, rotation θ0 + ω·t, scale (1+g)^t), one `grid_sample` over all objects
and frames of a chunk of videos, then composited far to near ("over"), so a nearer object hides a farther one.
Alpha and texture are sampled apart (on the CPU a sample costs per channel, and a flat fill needs none) and
composited as `lerp(frame, fill, alpha)`: the fill is straight colour, defined over the whole sprite.
Python loops run over objects' depth slots only, never over videos or frames. Every random draw comes from
the caller's CPU generator, so a seed gives the same videos on any device.

Coordinates are grid_sample's normalized ones: the frame spans [-1, 1] on each axis (x right, y down), so a
fraction f of the frame side is 2f.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from pmgflow.pmg.generator import chunk_size, warp_grid
from pmgflow.spec.pmg import REFERENCE_FRAMES
from pmgflow.spec.sources import ShapesVideos

# The sprite spans SPRITE_MARGIN x the object's radius, so the anti-aliased edge and corners fit inside it.
SPRITE_MARGIN = 1.15
MAX_CORNERS = 6

TextureFn = Callable[[int, torch.Generator], torch.Tensor]
"""(m, generator) -> m texture images (m, 3, h, w) in [0, 1] on the render device."""


def reference_times(frames: int) -> torch.Tensor:
    """Time of each frame in frames of a 16-frame clip: a clip of T frames covers the same motion end to end."""
    return torch.arange(frames, dtype=torch.float32) * ((REFERENCE_FRAMES - 1) / max(frames - 1, 1))


def power_law(u: torch.Tensor, lo: float, hi: float, power: float) -> torch.Tensor:
    """Inverse CDF of p(r) ~ r^-power on [lo, hi] at uniform draws u."""
    if lo == hi:
        return torch.full_like(u, lo)
    if abs(power - 1) < 1e-9:
        return lo * (hi / lo) ** u
    e = 1 - power
    return (lo ** e + u * (hi ** e - lo ** e)) ** (1 / e)


def unit(angle: torch.Tensor) -> torch.Tensor:
    """Angles (...) -> unit vectors (..., 2)."""
    return torch.stack([angle.cos(), angle.sin()], -1)


@dataclass
class ShapesPlan:
    """Every object of n videos, K depth slots each (slot K-1 nearest; a video of c objects fills the c nearest);
    CPU tensors, one row a video, rows in order of object count (most first)."""

    present: torch.Tensor  # (n,K) bool: the video has an object in this slot
    corners: torch.Tensor  # (n,K) int: 0 = circle, else the polygon's corner count
    angles: torch.Tensor  # (n,K,MAX_CORNERS) sorted corner angles on the circle (repeated past `corners`)
    radius: torch.Tensor  # (n,K) fraction of the frame side
    centre: torch.Tensor  # (n,K,2) normalized position at t = 0
    velocity: torch.Tensor  # (n,K,2) normalized units per reference frame
    accel: torch.Tensor  # (n,K,2) normalized units per reference frame squared
    angle0: torch.Tensor  # (n,K) radians
    spin: torch.Tensor  # (n,K) radians per reference frame
    growth: torch.Tensor  # (n,K) relative size change per reference frame
    colour: torch.Tensor  # (n,K,3) flat fill in [0, 1]
    background: torch.Tensor  # (n,3) flat background in [0, 1]

    def rows(self, lo: int, hi: int) -> "ShapesPlan":
        return replace(self, **{f.name: getattr(self, f.name)[lo:hi] for f in fields(self)})

    def positions(self, times: torch.Tensor) -> torch.Tensor:
        """Object centres (n,K,T,2) at the given reference times (T,)."""
        t = times[None, None, :, None]
        return self.centre[:, :, None] + self.velocity[:, :, None] * t + 0.5 * self.accel[:, :, None] * t * t

    def poses(self, times: torch.Tensor, size: int) -> torch.Tensor:
        """Sampling matrices (n,K,T,3,3): output frame coordinates -> sprite coordinates (the sprite spans
        [-1, 1], the object's radius is 1 / SPRITE_MARGIN of it)."""
        t = times[None, None, :]
        angle = self.angle0[..., None] + self.spin[..., None] * t
        scale = (1 + self.growth[..., None]) ** t * (2 * self.radius[..., None]) * SPRITE_MARGIN
        cos, sin = angle.cos() / scale, angle.sin() / scale
        # q = R(-angle) (p - c) / scale
        c = self.positions(times)
        mats = torch.zeros(*cos.shape, 3, 3)
        mats[..., 0, 0], mats[..., 0, 1] = cos, sin
        mats[..., 1, 0], mats[..., 1, 1] = -sin, cos
        mats[..., 0, 2] = -(cos * c[..., 0] + sin * c[..., 1])
        mats[..., 1, 2] = -(-sin * c[..., 0] + cos * c[..., 1])
        mats[..., 2, 2] = 1
        return mats


@dataclass
class Sprites:
    """The objects of n videos in their own frames, per depth slot; empty slots are left unset (slot s is drawn
    only in the rows that fill it)."""

    alpha: torch.Tensor  # (n,K,1,S,S) anti-aliased shape masks
    fill: torch.Tensor  # (n,K,3) flat colours, or (n,K,3,S,S) textures (straight colour, the whole sprite)

    @property
    def flat(self) -> bool:
        return self.fill.dim() == 3


def shape_alpha(corners: torch.Tensor, angles: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
    """Anti-aliased masks (m,1,size,size) of m shapes in sprite coordinates: a circle of radius 1/SPRITE_MARGIN,
    or the convex polygon of its corners on that circle (the intersection of its edges' half-planes)."""
    c = (torch.arange(size, device=device, dtype=torch.float32) * 2 + 1) / size - 1
    q = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1)  # (S,S,2): x, y
    r = 1 / SPRITE_MARGIN
    dist = (q.norm(dim=-1) - r)[None].repeat(len(corners), 1, 1)  # circle: signed distance to the rim
    polygon = corners > 0
    if bool(polygon.any()):
        a = angles[polygon].to(device)  # (p,V) sorted
        nxt = torch.roll(a, -1, 1)
        nxt[:, -1] += 2 * math.pi
        mid, half = (a + nxt) / 2, (nxt - a) / 2
        # Edge i's half-plane: n_i . q <= r cos(half_i); the largest excess is a signed distance (exact along
        # edges). A repeated corner adds a tangent of the circle, which cuts nothing off the polygon.
        edges = torch.cat([unit(mid), -r * torch.cos(half)[..., None]], -1)  # (p,V,3): n_i and the offset
        q1 = torch.cat([q, torch.ones_like(q[..., :1])], -1)  # (S,S,3)
        dist[polygon.to(device)] = torch.einsum("pvc,hwc->pvhw", edges, q1).amax(1)
    # One sprite pixel of soft edge: alpha 1 inside, 0 outside, linear across the boundary.
    return (0.5 - dist * (size / 2)).clamp_(0, 1).unsqueeze(1)


def noise_textures(m: int, size: int, g: torch.Generator, device: torch.device) -> torch.Tensor:
    """m procedural textures (m,3,size,size) in [0,1]: coloured noise at three scales (coarse dominates)."""
    out = torch.zeros(m, 3, size, size, device=device)
    for cells, weight in ((3, 1.0), (7, 0.5), (15, 0.25)):
        grid = torch.rand(m, 3, cells, cells, generator=g).to(device)
        out += weight * F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
    lo = out.amin((1, 2, 3), keepdim=True)
    hi = out.amax((1, 2, 3), keepdim=True)
    return (out - lo) / (hi - lo).clamp_min(1e-6)


class ShapesGenerator:
    """Videos (n,3,T,size,size) in [0,1] of moving shapes, per `ShapesVideos`."""

    def __init__(self, spec: ShapesVideos, frames: int, size: int):
        self.spec, self.frames, self.size = spec, frames, size
        self.times = reference_times(frames)
        self.needs_images = spec.texture == "image" or spec.background == "image"

    def plan(self, n: int, g: torch.Generator) -> ShapesPlan:
        """Draw every object of n videos (CPU)."""
        s = self.spec
        lo, hi = s.objects
        k = hi
        # Videos in order of object count, most first (batch order carries no meaning), so that each depth slot
        # is filled in a prefix of the rows and empty slots cost nothing.
        count = torch.randint(lo, hi + 1, (n,), generator=g).sort(descending=True).values
        present = torch.arange(k)[None, :] >= (k - count)[:, None]  # nearest slots filled: farther ones may be empty
        kinds = torch.tensor([0 if name == "circle" else 1 for name in s.shapes])
        kind = kinds[torch.randint(len(kinds), (n, k), generator=g)]
        n_corners = torch.randint(3, MAX_CORNERS + 1, (n, k), generator=g)
        corners = torch.where(kind == 1, n_corners, torch.zeros_like(n_corners))
        raw = torch.rand(n, k, MAX_CORNERS, generator=g) * (2 * math.pi)
        # Slots past an object's corner count repeat its last corner (a repeated edge changes nothing).
        idx = torch.minimum(torch.arange(MAX_CORNERS)[None, None], (n_corners - 1)[..., None])
        angles = torch.gather(raw, 2, idx).sort(-1).values
        radius = power_law(torch.rand(n, k, generator=g), *s.radius, s.radius_power)
        centre = torch.rand(n, k, 2, generator=g) * 2 - 1
        moving = s.motion != "static"
        speed = s.speed[0] + (s.speed[1] - s.speed[0]) * torch.rand(n, k, generator=g)
        velocity = 2 * speed[..., None] * unit(torch.rand(n, k, generator=g) * 2 * math.pi) * moving
        accel = (2 * s.acceleration * torch.rand(n, k, generator=g))[..., None] * unit(
            torch.rand(n, k, generator=g) * 2 * math.pi) * (s.motion == "accelerating")
        transforming = s.motion in ("transforming", "accelerating")
        angle0 = torch.rand(n, k, generator=g) * 2 * math.pi
        spin = (torch.rand(n, k, generator=g) * 2 - 1) * math.radians(s.rotation) * transforming
        growth = (torch.rand(n, k, generator=g) * 2 - 1) * s.scaling * transforming
        colour = torch.rand(n, k, 3, generator=g)
        background = torch.rand(n, 3, generator=g) * (s.background == "flat")
        return ShapesPlan(present, corners, angles, radius, centre, velocity, accel, angle0, spin, growth,
                          colour, background)

    def sprites(self, plan: ShapesPlan, g: torch.Generator, device: torch.device,
                textures: TextureFn | None) -> Sprites:
        """The sprites of the filled object slots."""
        n, k = plan.present.shape
        size = self.size
        filled = plan.present.flatten().nonzero().squeeze(1)
        m = len(filled)
        alpha = torch.empty(n * k, 1, size, size, device=device)
        alpha[filled.to(device)] = shape_alpha(plan.corners.flatten()[filled], plan.angles.flatten(0, 1)[filled],
                                               size, device)
        alpha = alpha.view(n, k, 1, size, size)
        if self.spec.texture == "flat":
            return Sprites(alpha, plan.colour.to(device))
        rgb = noise_textures(m, size, g, device) if self.spec.texture == "noise" else _fit(textures(m, g), size)
        fill = torch.empty(n * k, 3, size, size, device=device)
        fill[filled.to(device)] = rgb
        return Sprites(alpha, fill.view(n, k, 3, size, size))

    def backgrounds(self, plan: ShapesPlan, g: torch.Generator, device: torch.device,
                    textures: TextureFn | None) -> torch.Tensor:
        """Still backgrounds (n, 3, size, size)."""
        n, size, kind = len(plan.present), self.size, self.spec.background
        if kind == "noise":
            return noise_textures(n, size, g, device)
        if kind == "image":
            return _fit(textures(n, g), size)
        return plan.background.to(device)[:, :, None, None].expand(-1, -1, size, size)

    @torch.no_grad()
    def __call__(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu",
                 textures: TextureFn | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
        """n videos (n,3,T,size,size); `textures` supplies image fills (texture or background `image`);
        written into `out` if given."""
        if self.needs_images and textures is None:
            raise ValueError("this shapes source fills objects or background with images: pass `textures`")
        device = torch.device(device)
        t, size = self.frames, self.size
        if out is None:
            out = torch.empty(n, 3, t, size, size, device=device)
        plan = self.plan(n, generator)
        k = plan.present.shape[1]
        sprites = self.sprites(plan, generator, device, textures)
        back = self.backgrounds(plan, generator, device, textures)
        poses = plan.poses(self.times, size)
        filled = plan.present.sum(0).tolist()  # rows sorted by object count: slot s is filled in rows [0, filled[s])
        step = max(1, chunk_size(t, size, device))
        for lo in range(0, n, step):
            hi = min(lo + step, n)
            video = out[lo:hi]
            video.copy_(back[lo:hi, :, None].expand(-1, -1, t, -1, -1))
            for slot in range(k):  # far to near: "over"
                m = min(hi, filled[slot]) - lo
                if m <= 0:
                    continue
                rows = slice(lo, lo + m)
                grid = warp_grid(poses[rows, slot].to(device), size)  # (m, T*S, S, 2)
                cover = sample(sprites.alpha[rows, slot], grid).view(m, 1, t, size, size)
                if sprites.flat:
                    fill = sprites.fill[rows, slot, :, None, None, None].expand(-1, -1, t, size, size)
                else:
                    fill = sample(sprites.fill[rows, slot], grid).view(m, 3, t, size, size)
                video[:m].lerp_(fill, cover.expand(-1, 3, -1, -1, -1))
        return out.clamp_(0, 1)


def sample(sprites: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sprites (m,C,S,S) through a grid (m,T*S,S,2): (m,C,T*S,S), transparent / black outside the sprite."""
    return F.grid_sample(sprites, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (m,3,h,w) at size x size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
