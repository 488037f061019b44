"""Synthetic videos of moving shapes (after Yu, Chen and Gandelsman, arXiv 2410.24213), generated in batches.

Each object is a *sprite* in its own frame, made once per video: an anti-aliased shape mask (alpha) and the
fill under it, a flat colour or a texture image. A frame of a video is every sprite sampled through its pose at
that time (position c0 + v·t + a·t²/2, rotation θ0 + ω·t, scale (1+g)^t), composited far to near ("over"), so
a nearer object hides a farther one. An object is sampled only inside its *box*: the square of pixels its alpha
can reach in any frame, so the work follows the objects' area, not the frame's. Objects of one depth slot whose
boxes fall in the same size class (a few per clip size) are drawn together: one `grid_sample` of their sprites'
alpha and texture (as four channels) through their poses over their boxes in every frame, then
`lerp(frame, fill, alpha)` on the boxes, read and written through a strided view of the clip buffer. The fill is
straight colour, defined over the whole sprite.
Python loops run over depth slots and size classes only, never over videos or frames. Every random draw comes
from the caller's CPU generator, and boxes and size classes are worked out on the CPU, so a seed gives the same
videos on any device.

Coordinates are grid_sample's normalized ones: the frame spans [-1, 1] on each axis (x right, y down), so a
fraction f of the frame side is 2f.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F

from pmgflow.pmg.generator import chunk_size, pixel_centres
from pmgflow.spec.pmg import REFERENCE_FRAMES
from pmgflow.spec.sources import ShapesVideos

# The sprite spans SPRITE_MARGIN x the object's radius, so the anti-aliased edge and corners fit inside it.
SPRITE_MARGIN = 1.15
MAX_CORNERS = 6
# How far past the shape's circle (radius 1/SPRITE_MARGIN) a sample of the sprite can see alpha, in texels: the
# soft edge reaches half a texel past the rim, and a bilinear sample sees texels less than one texel away along
# each axis (up to sqrt 2 texels on a diagonal).
REACH_TEXELS = 0.5 + math.sqrt(2)
# Box sides are rounded up to multiples of clip size / BOX_CLASSES (at least MIN_BOX_STEP pixels): each depth
# slot is drawn in at most this many groups, and a box wastes at most one step of its side.
BOX_CLASSES = 16
MIN_BOX_STEP = 8  # pixels: at small clip sizes fewer, larger groups cost less than tighter boxes
BOX_SLACK = 0.05  # pixels added to each side of a box's exact extent, for float rounding

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

    def boxes(self, times: torch.Tensor, size: int) -> Boxes:
        """Each object's box in size x size frames at the given reference times (T,), for sprites of size x size
        texels: every pixel whose centre is within the reach of the object's alpha (its circle, plus
        REACH_TEXELS texels), for all frames, the side rounded up to a size class and at most the frame."""
        t = times.double()[None, None, :]
        scale = (1 + self.growth.double()[..., None]) ** t  # (n,K,T)
        # The circle's radius is r*size pixels at scale 1; a texel is 2 r SPRITE_MARGIN scale pixels. Pixels
        # strictly within `half` of the centre can see alpha; BOX_SLACK pixels more absorb float rounding.
        half = self.radius.double()[..., None] * size * scale * (1 + 2 * SPRITE_MARGIN * REACH_TEXELS / size)
        centre = (self.positions(times).double() + 1) * (size / 2) - 0.5  # pixel coordinates (x, y): pixel i at i
        lo = (centre - half[..., None] - BOX_SLACK).ceil().clamp(min=0)  # the part within the frame
        hi = (centre + half[..., None] + BOX_SLACK).floor().clamp(max=size - 1)
        need = (hi - lo + 1).clamp(min=1).amax((2, 3))  # (n,K): pixels spanned along either axis in any frame
        step = max(math.ceil(size / BOX_CLASSES), MIN_BOX_STEP)
        side = ((need / step).ceil() * step).clamp(max=size).long()
        origin = torch.minimum(lo, (size - side)[..., None, None].double()).long()
        return Boxes(side, origin)


@dataclass
class Boxes:
    """Where n videos' objects are drawn (CPU tensors): per object a square box of `side` pixels (a size class)
    at `origin` in each frame, holding every pixel its alpha reaches, within the frame."""

    side: torch.Tensor  # (n,K) long
    origin: torch.Tensor  # (n,K,T,2) long: the box's first column (x) and row (y)


@dataclass
class DrawGroup:
    """Layers start:stop of a layout: objects of one depth slot whose boxes have one side."""

    slot: int
    side: int
    start: int
    stop: int


@dataclass
class Layout:
    """The filled slots' objects in drawing order (CPU): by depth slot far to near, then by box side, then by
    video; cut into groups of one slot and one side. Objects of a group are in different videos."""

    video: torch.Tensor  # (m,) long
    slot: torch.Tensor  # (m,) long
    groups: list[DrawGroup]


@dataclass
class Sprites:
    """The filled slots' objects in their own frames, one layer per object in drawing order (slot by slot far
    to near, by box side within a slot); `row[v, s]` is the layer of video v's slot s (-1: empty slot)."""

    layers: torch.Tensor  # (m,1,S,S) alpha (flat fills) or (m,4,S,S) texture RGB (straight colour) and alpha
    colour: torch.Tensor  # (n,K,3) flat fills in [0, 1]
    row: torch.Tensor  # (n,K) long, CPU

    @property
    def flat(self) -> bool:
        return self.layers.shape[1] == 1

    def alpha(self, video: int, slot: int) -> torch.Tensor:
        """(1,S,S) anti-aliased mask of one object."""
        return self.layers[self.row[video, slot], -1:]

    def fill(self, video: int, slot: int) -> torch.Tensor:
        """(3,1,1) flat colour or (3,S,S) texture of one object."""
        if self.flat:
            return self.colour[video, slot, :, None, None]
        return self.layers[self.row[video, slot], :3]


def shape_alpha(corners: torch.Tensor, angles: torch.Tensor, size: int, device: torch.device,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """Anti-aliased masks (m,1,size,size) of m shapes in sprite coordinates: a circle of radius 1/SPRITE_MARGIN,
    or the convex polygon of its corners on that circle (the intersection of its edges' half-planes and the
    circle); written into `out` if given."""
    m = len(corners)
    if out is None:
        out = torch.empty(m, 1, size, size, device=device)
    c = pixel_centres(size, device)  # texel centres, x or y
    r = 1 / SPRITE_MARGIN
    circle = (c[None, :] ** 2 + c[:, None] ** 2).sqrt_() - r  # (S,S) signed distance to the rim

    def soft(dist: torch.Tensor) -> torch.Tensor:  # one texel of soft edge: 1 inside, 0 outside, linear across
        return (0.5 - dist * (size / 2)).clamp_(0, 1)

    polygon = corners > 0
    circles = (~polygon).nonzero().squeeze(1).to(device)
    out.index_copy_(0, circles, soft(circle).expand(len(circles), 1, size, size))
    if bool(polygon.any()):
        a = angles[polygon].to(device)  # (p,V) sorted
        nxt = torch.roll(a, -1, 1)
        nxt[:, -1] += 2 * math.pi
        mid, half = (a + nxt) / 2, (nxt - a) / 2
        # Edge i's half-plane: n_i . q <= r cos(half_i); the largest excess is a signed distance (exact along
        # edges). A repeated corner adds a tangent of the circle, which cuts nothing off the polygon. The
        # excess is a term along x plus a term along y.
        normal = unit(mid)  # (p,V,2)
        along_x = normal[..., 0, None] * c  # (p,V,S)
        along_y = normal[..., 1, None] * c - (r * torch.cos(half))[..., None]
        # Within its circle too: the polygon lies inside it, so this cuts only the soft edge's spikes past acute
        # corners, and every shape's alpha stays within REACH_TEXELS of the circle (see ShapesPlan.boxes).
        dist = torch.maximum((along_x[:, :, None, :] + along_y[:, :, :, None]).amax(1), circle)
        out.index_copy_(0, polygon.nonzero().squeeze(1).to(device), soft(dist)[:, None])
    return out


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
    """Videos (n,3,T,size,size) in [0,1] of moving shapes, per `ShapesVideos`. A generator keeps a buffer
    between calls: one generator serves one thread at a time."""

    def __init__(self, spec: ShapesVideos, frames: int, size: int):
        self.spec, self.frames, self.size = spec, frames, size
        self.times = reference_times(frames)
        self.needs_images = spec.texture == "image" or spec.background == "image"
        self._layers: torch.Tensor | None = None  # sprite layers' buffer, reused by every call

    @property
    def channels(self) -> int:
        """Channels of a sprite layer: the mask, after the texture's three if the fill is not flat."""
        return 1 if self.spec.texture == "flat" else 4

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

    def layout(self, plan: ShapesPlan, boxes: Boxes) -> Layout:
        """The filled slots' objects in drawing order."""
        n = len(plan.present)
        video, slot = plan.present.nonzero(as_tuple=True)
        side = boxes.side[video, slot]
        key = slot * (self.size + 1) + side  # slot, then side
        order = (key * n + video).argsort()
        video, slot, side, key = video[order], slot[order], side[order], key[order]
        groups, start = [], 0
        for count in torch.unique_consecutive(key, return_counts=True)[1].tolist():
            groups.append(DrawGroup(int(slot[start]), int(side[start]), start, start + count))
            start += count
        return Layout(video, slot, groups)

    def sprites(self, plan: ShapesPlan, layout: Layout, g: torch.Generator, device: torch.device,
                textures: TextureFn | None, out: torch.Tensor | None = None) -> Sprites:
        """The sprites of the filled object slots, one layer each in drawing order (written into `out`, a
        buffer of at least m layers, if given)."""
        n, k = plan.present.shape
        size = self.size
        m = len(layout.video)
        row = torch.full((n, k), -1, dtype=torch.long)
        row[layout.video, layout.slot] = torch.arange(m)
        objects = layout.video * k + layout.slot
        channels = self.channels
        if out is None:
            out = torch.empty(m * channels * size * size, device=device)
        layers = out.flatten()[:m * channels * size * size].view(m, channels, size, size)
        shape_alpha(plan.corners.flatten()[objects], plan.angles.flatten(0, 1)[objects], size, device,
                    out=layers[:, -1:])
        if self.spec.texture != "flat":
            # Textures are drawn for the filled slots in video-major order (the order they were always drawn
            # in), then laid out in drawing order.
            rgb = noise_textures(m, size, g, device) if self.spec.texture == "noise" else _fit(textures(m, g), size)
            layers[:, :3].index_copy_(0, row[plan.present].to(device), rgb)
        return Sprites(layers, plan.colour.to(device), row)

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
        if not out.is_contiguous():  # boxes are read and written through a strided view of a contiguous buffer
            return out.copy_(self(n, generator, device, textures))
        plan = self.plan(n, generator)
        boxes = plan.boxes(self.times, size)
        layout = self.layout(plan, boxes)
        # The sprite layers go to a buffer kept across batches: a large new buffer would be mapped, and faulted
        # in, anew every batch (as much as a tenth of a batch's time on the CPU).
        need = plan.present.numel() * self.channels * size * size
        if self._layers is None or self._layers.device != out.device or self._layers.numel() < need:
            self._layers = torch.empty(need, device=out.device)
        sprites = self.sprites(plan, layout, generator, device, textures, out=self._layers)
        back = self.backgrounds(plan, generator, device, textures)
        # Per layer: the sampling matrices of its boxes and where each box starts in the clip buffer.
        origin = boxes.origin[layout.video, layout.slot]  # (m,T,2)
        grids = BoxGrids(box_poses(plan.poses(self.times, size)[layout.video, layout.slot], origin, size).to(device),
                         size)
        start = box_starts(layout.video, origin, out.shape).to(device)
        colour = sprites.colour[layout.video.to(device), layout.slot.to(device)]  # (m,3)
        if self.spec.background == "black":
            out.zero_()
        else:
            out.copy_(back[:, :, None].expand(-1, -1, t, -1, -1))
        for group in layout.groups:  # far to near: "over"
            side = group.side
            step = max(1, chunk_size(t, side, device))
            for lo in range(group.start, group.stop, step):
                hi = min(lo + step, group.stop)
                tiles = sample(sprites.layers[lo:hi], grids(lo, hi, side)).view(hi - lo, -1, t, side, side).transpose(1, 2)
                fill = colour[lo:hi, None, :, None, None] if sprites.flat else tiles[:, :, :3]
                draw_over(out, start[lo:hi], tiles[:, :, -1:], fill)
        return out.clamp_(0, 1)


class BoxGrids:
    """grid_sample grids of boxes, from their affine sampling matrices (m,T,3,3): each coordinate of a box pixel is
    a term along x plus a term along y, both made once for every box (at the pixel pitch of the size x size
    frame), so a group's grid is one broadcast add."""

    def __init__(self, mats: torch.Tensor, size: int):
        c = pixel_centres(size, mats.device)
        self.along_x = mats[..., :2, 0, None] * c  # (m,T,2,S): row k's x term, for coordinate k
        self.along_y = mats[..., :2, 1, None] * c + mats[..., :2, 2, None]

    def __call__(self, lo: int, hi: int, side: int) -> torch.Tensor:
        """The grids (hi-lo, T*side, side, 2) of layers lo:hi, boxes of `side` pixels."""
        t = self.along_x.shape[1]
        grid = torch.empty(hi - lo, t, side, side, 2, device=self.along_x.device)
        torch.add(self.along_x[lo:hi, :, :, None, :side], self.along_y[lo:hi, :, :, :side, None],
                  out=grid.permute(0, 1, 4, 2, 3))
        return grid.view(hi - lo, t * side, side, 2)


def box_poses(mats: torch.Tensor, origin: torch.Tensor, size: int) -> torch.Tensor:
    """Sampling matrices (m,T,3,3) of whole frames -> those of the boxes at `origin` (m,T,2) pixels: the box's
    pixel (0, 0) is the frame's pixel `origin`."""
    shift = origin.to(mats.dtype) * (2 / size)  # normalized offset of the box
    out = mats.clone()
    out[..., :, 2] += mats[..., :, 0] * shift[..., None, 0] + mats[..., :, 1] * shift[..., None, 1]
    return out


def box_starts(video: torch.Tensor, origin: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Element offsets (m,T) in a contiguous clip buffer of `shape` (n,C,T,S,S) of the first pixel of each box:
    video[i]'s frame t at origin[i, t] (x, y)."""
    c, t, size = shape[1], shape[2], shape[3]
    return (video[:, None] * (c * t * size * size) + torch.arange(t)[None, :] * (size * size)
            + origin[..., 1] * size + origin[..., 0])


def squares(flat: torch.Tensor, side: int, row: int, planes: int = 1, plane: int = 0) -> torch.Tensor:
    """Every square of side x side elements of a contiguous tensor as one view (L, planes, side, side): square k
    starts at element k, its rows `row` elements apart and its planes `plane` apart (L: the squares that fit).
    `index_select` on it gathers squares at any element offsets; `index_copy_` writes them back."""
    return flat.as_strided((flat.numel() - (planes - 1) * plane - (side - 1) * (row + 1), planes, side, side),
                           (1, plane, row, 1), flat.storage_offset())


def draw_over(video: torch.Tensor, start: torch.Tensor, alpha: torch.Tensor, fill: torch.Tensor) -> None:
    """Composite boxes into a contiguous clip buffer (n,C,T,S,S) in place: the box of side b starting at
    element start[i, t] (see box_starts) becomes lerp(box, fill, alpha); alpha (m,T,1,b,b), fill (m,T,C,b,b) or
    broadcastable. A box appears once, so none is written twice."""
    c, t, size = video.shape[1], video.shape[2], video.shape[3]
    side = alpha.shape[-1]
    boxes = squares(video, side, size, c, t * size * size)  # channels a frame apart
    index = start.flatten()
    drawn = boxes.index_select(0, index).view(alpha.shape[:2] + (c, side, side)).lerp_(fill, alpha)
    boxes.index_copy_(0, index, drawn.flatten(0, 1))


def sample(sprites: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sprites (m,C,S,S) through a grid (m,T*S,S,2): (m,C,T*S,S), transparent / black outside the sprite."""
    return F.grid_sample(sprites, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _fit(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images (m,3,h,w) at size x size."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
