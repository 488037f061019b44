"""The PMG transform families, each one small class registered by name with its parameter model.

A transform does not touch pixels. For `n` videos it draws one strength per video and describes the
per-frame step as matrices:

* a geometric step ``S`` (3x3 homography acting on normalized output coordinates, the map from an
  output pixel to where it samples the previous frame) and an initial view ``M0``;
* a photometric step ``P`` (4x4 affine colour matrix on RGB) and an initial colour map ``P0``;
* optionally a pasted patch (CutMix) that moves by a fixed velocity.

Frame t of the paper's recursion I_{t+1} = f(I_t; θ) then samples the source through ``M0 · S^t`` and
colours it with ``P^t · P0``: the generator computes every frame at once from the source (``composed``)
or literally frame after frame (``recursive``). Adding a transform = one class here; see README.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Annotated, ClassVar

import torch
from pydantic import AfterValidator, Field

from pmgflow.spec.base import Spec


def _ordered(v: tuple[float, float]) -> tuple[float, float]:
    if v[0] > v[1]:
        raise ValueError(f"range low {v[0]} is above high {v[1]}")
    return v


Range = Annotated[tuple[float, float], AfterValidator(_ordered)]
"""A [low, high] interval a strength is drawn from, uniformly, once per video."""

# How a per-frame range follows the generator's step scale k (PMGSpec.step_scale): an amount added per frame
# (degrees, fractions of the side) is multiplied by k; a factor per frame (zoom, scale, brightness) is raised to
# the power k; a fraction lost per frame (fade) keeps (1 - x)^k. Ranges without a kind (sizes, windows) stay.
STEP_KIND = "step_kind"


def step_range(kind: str, default: tuple[float, float], description: str) -> object:
    """A per-frame Range field whose values scale with the generator's step scale."""
    return Field(default, description=description, json_schema_extra={STEP_KIND: kind})


def scale_steps(params: Spec, k: float) -> Spec:
    """The parameters with every per-frame range scaled by k (k = 1: unchanged)."""
    if k == 1:
        return params
    update = {}
    for name, info in type(params).model_fields.items():
        kind = (info.json_schema_extra or {}).get(STEP_KIND) if isinstance(info.json_schema_extra, dict) else None
        lo, hi = getattr(params, name) if kind else (0.0, 0.0)
        if kind == "add":
            update[name] = (lo * k, hi * k)
        elif kind == "factor":
            update[name] = (lo ** k, hi ** k)
        elif kind == "loss":
            update[name] = (1 - (1 - lo) ** k, 1 - (1 - hi) ** k)
    return params.model_copy(update=update)


@dataclass
class Motion:
    """Per-video step matrices of a batch of n videos (see module docstring); identity by default."""

    n: int
    geo_init: torch.Tensor = field(default=None)  # (n,3,3) M0
    geo_step: torch.Tensor = field(default=None)  # (n,3,3) S
    color_init: torch.Tensor = field(default=None)  # (n,4,4) P0
    color_step: torch.Tensor = field(default=None)  # (n,4,4) P
    paste_size: torch.Tensor = field(default=None)  # (n,2) half-size of the pasted box (normalized, 0 = none)
    paste_start: torch.Tensor = field(default=None)  # (n,2) box centre in frame 0
    paste_step: torch.Tensor = field(default=None)  # (n,2) box velocity per frame

    def __post_init__(self) -> None:
        for f in fields(self)[1:]:
            if getattr(self, f.name) is None:
                kind = f.name.split("_")[0]
                default = (torch.eye(3).repeat(self.n, 1, 1) if kind == "geo" else
                           torch.eye(4).repeat(self.n, 1, 1) if kind == "color" else torch.zeros(self.n, 2))
                setattr(self, f.name, default)

    def rows(self, start: int, stop: int) -> Motion:
        """The motions of videos start..stop-1."""
        return Motion(stop - start, **{f.name: getattr(self, f.name)[start:stop] for f in fields(self)[1:]})


def uniform(rng: Range, n: int, g: torch.Generator | None) -> torch.Tensor:
    """n draws from U(low, high)."""
    lo, hi = rng
    return lo + (hi - lo) * torch.rand(n, generator=g)


def affine3(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor,
            tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    """Batch of 3x3 matrices [[a b tx] [c d ty] [0 0 1]]."""
    n = a.shape[0]
    m = torch.zeros(n, 3, 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = a, b, tx
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = c, d, ty
    m[:, 2, 2] = 1
    return m


def scale3(s: torch.Tensor, cx: torch.Tensor | None = None, cy: torch.Tensor | None = None) -> torch.Tensor:
    """Isotropic scaling by s about the point (cx, cy) (normalized coordinates)."""
    cx = torch.zeros_like(s) if cx is None else cx
    cy = torch.zeros_like(s) if cy is None else cy
    return affine3(s, torch.zeros_like(s), torch.zeros_like(s), s, cx * (1 - s), cy * (1 - s))


class Transform:
    """Base class: `Params` is the parameter model, `motion` draws one strength per video."""

    name: ClassVar[str]
    Params: ClassVar[type[Spec]]

    def __init__(self, params: Spec | dict | None = None, step_scale: float = 1.0):
        params = params if isinstance(params, Spec) else self.Params.model_validate(params or {})
        self.params = scale_steps(params, step_scale)

    def motion(self, n: int, frames: int, g: torch.Generator | None) -> Motion:
        """Draw the step (and initial view) of n videos of `frames` frames."""
        raise NotImplementedError


TRANSFORMS: dict[str, type[Transform]] = {}


def register(cls: type[Transform]) -> type[Transform]:
    """Class decorator: make a transform available by its `name` in specs and the CLI."""
    TRANSFORMS[cls.name] = cls
    return cls


class _NoParams(Spec):
    pass


@register
class Identity(Transform):
    """Static video: every frame is the source image (the paper's no-motion baseline)."""

    name, Params = "identity", _NoParams

    def motion(self, n, frames, g):
        return Motion(n)


class _SlidingParams(Spec):
    window: Range = Field((0.6, 0.8), description="Side of the sliding window as a fraction of the image.")
    speed: Range = step_range("add", (0.01, 0.03), "Window displacement per frame, as a fraction of the image side.")


@register
class SlidingWindow(Transform):
    """A window that slides over the image in a random direction, kept inside the image."""

    name, Params = "sliding_window", _SlidingParams

    def motion(self, n, frames, g):
        p = self.params
        c = uniform(p.window, n, g)
        angle = 2 * math.pi * torch.rand(n, generator=g)
        room = 1 - c  # the window centre may move in [-room, room] (normalized units)
        speed = torch.minimum(2 * uniform(p.speed, n, g), 2 * room / max(frames - 1, 1))
        dx, dy = speed * torch.cos(angle), speed * torch.sin(angle)
        # Centre the path so it stays inside the image; steps are in frame units, hence / c.
        ox, oy = -dx * (frames - 1) / 2, -dy * (frames - 1) / 2
        zero = torch.zeros(n)
        init = affine3(c, zero, zero, c, ox, oy)
        step = affine3(torch.ones(n), zero, zero, torch.ones(n), dx / c, dy / c)
        return Motion(n, geo_init=init, geo_step=step)


class _ZoomParams(Spec):
    step: Range = step_range("factor", (1.01, 1.04), "Zoom factor per frame (>1).")
    direction: str = Field("both", pattern="^(in|out|both)$", description="in, out, or both (each video draws one).")
    center: float = Field(0.3, ge=0, le=1, description="The zoom centre is drawn in [-center, center] (normalized).")


@register
class Zoom(Transform):
    """Zoom-in/out: the view scales by a constant factor per frame about a random centre."""

    name, Params = "zoom", _ZoomParams

    def motion(self, n, frames, g):
        p = self.params
        s = uniform(p.step, n, g)
        if p.direction == "in":
            zoom_in = torch.ones(n, dtype=torch.bool)
        elif p.direction == "out":
            zoom_in = torch.zeros(n, dtype=torch.bool)
        else:
            zoom_in = torch.rand(n, generator=g) < 0.5
        cx, cy = (torch.rand(2, n, generator=g) * 2 - 1) * p.center
        # Sampling coordinates shrink by 1/s per frame when zooming in; zooming out is the same path
        # reversed, anchored so its widest frame is the whole image (no borders).
        step_scale = torch.where(zoom_in, 1 / s, s)
        init_scale = torch.where(zoom_in, torch.ones(n), s ** -(frames - 1))
        return Motion(n, geo_init=scale3(init_scale, cx, cy), geo_step=scale3(step_scale, cx, cy))


class _AffineParams(Spec):
    rotate: Range = step_range("add", (-2.0, 2.0), "Rotation per frame, degrees.")
    scale: Range = step_range("factor", (0.98, 1.02), "Scale factor per frame.")
    translate: Range = step_range("add", (-0.015, 0.015), "Translation per frame and axis, fraction of the image side.")
    shear: Range = step_range("add", (-1.5, 1.5), "Shear per frame, degrees.")


@register
class Affine(Transform):
    """Affine: rotation, scale, translation and shear per frame, about the image centre."""

    name, Params = "affine", _AffineParams

    def motion(self, n, frames, g):
        p = self.params
        rot = torch.deg2rad(uniform(p.rotate, n, g))
        sc = uniform(p.scale, n, g)
        tx, ty = 2 * uniform(p.translate, n, g), 2 * uniform(p.translate, n, g)
        sh = torch.tan(torch.deg2rad(uniform(p.shear, n, g)))
        cos, sin = torch.cos(rot), torch.sin(rot)
        # (rotation · shear) scaled, then translated.
        a, b = sc * cos, sc * (cos * sh - sin)
        c, d = sc * sin, sc * (sin * sh + cos)
        return Motion(n, geo_step=affine3(a, b, c, d, tx, ty))


class _PerspectiveParams(Spec):
    corner: Range = step_range("add", (0.005, 0.02), "Displacement of each image corner per frame, fraction of the side.")


def homography_from_corners(dst: torch.Tensor) -> torch.Tensor:
    """Batch of homographies mapping the corners (±1, ±1) to dst (n,4,2), by an 8x8 linear solve."""
    n = dst.shape[0]
    src = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]]).expand(n, 4, 2)
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    zeros, ones = torch.zeros_like(x), torch.ones_like(x)
    rows_u = torch.stack([x, y, ones, zeros, zeros, zeros, -u * x, -u * y], -1)
    rows_v = torch.stack([zeros, zeros, zeros, x, y, ones, -v * x, -v * y], -1)
    a = torch.cat([rows_u, rows_v], 1)
    b = torch.cat([u, v], 1).unsqueeze(-1)
    h = torch.linalg.solve(a.double(), b.double()).squeeze(-1).float()
    return torch.cat([h, torch.ones(n, 1)], 1).view(n, 3, 3)


@register
class Perspective(Transform):
    """Perspective: each corner of the view moves by a small random step per frame (a homography)."""

    name, Params = "perspective", _PerspectiveParams

    def motion(self, n, frames, g):
        p = self.params
        mag = 2 * uniform(p.corner, n, g)[:, None, None]
        direction = torch.nn.functional.normalize(torch.randn(n, 4, 2, generator=g), dim=-1)
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
        return Motion(n, geo_step=homography_from_corners(corners + mag * direction))


class _FadeParams(Spec):
    step: Range = step_range("loss", (0.03, 0.08), "Fraction of brightness lost (fade-out) or regained per frame.")


@register
class Fade(Transform):
    """Fade-in/out: brightness multiplied by a constant factor per frame, towards or from black."""

    name, Params = "fade", _FadeParams

    def motion(self, n, frames, g):
        keep = 1 - uniform(self.params.step, n, g)
        fade_in = torch.rand(n, generator=g) < 0.5
        step = torch.where(fade_in, 1 / keep, keep)
        init = torch.where(fade_in, keep ** (frames - 1), torch.ones(n))  # fade-in ends at full brightness
        eye = torch.eye(4)
        color_step, color_init = eye * step[:, None, None], eye * init[:, None, None]
        color_step[:, 3, 3] = color_init[:, 3, 3] = 1
        return Motion(n, color_init=color_init, color_step=color_step)


class _ColorJitterParams(Spec):
    brightness: Range = step_range("factor", (0.97, 1.03), "Brightness factor per frame.")
    contrast: Range = step_range("factor", (0.97, 1.03), "Contrast factor per frame (about mid-grey).")
    saturation: Range = step_range("factor", (0.95, 1.05), "Saturation factor per frame.")
    hue: Range = step_range("add", (-4.0, 4.0), "Hue rotation per frame, degrees.")


_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


@register
class ColorJitter(Transform):
    """Color jitter: brightness, contrast, saturation and hue drift by a constant step per frame.

    Each step is one affine colour map (hue = rotation of the chroma plane in YIQ), so its powers are exact.
    """

    name, Params = "color_jitter", _ColorJitterParams

    def motion(self, n, frames, g):
        p = self.params
        b, c = uniform(p.brightness, n, g), uniform(p.contrast, n, g)
        s, h = uniform(p.saturation, n, g), torch.deg2rad(uniform(p.hue, n, g))
        yiq = torch.zeros(n, 3, 3)
        yiq[:, 0, 0] = 1
        yiq[:, 1, 1], yiq[:, 1, 2] = s * torch.cos(h), -s * torch.sin(h)
        yiq[:, 2, 1], yiq[:, 2, 2] = s * torch.sin(h), s * torch.cos(h)
        rgb = torch.linalg.inv(_RGB_TO_YIQ) @ yiq @ _RGB_TO_YIQ
        step = torch.zeros(n, 4, 4)
        step[:, :3, :3] = (b * c)[:, None, None] * rgb
        step[:, :3, 3] = (0.5 * (1 - c))[:, None]  # contrast about mid-grey 0.5
        step[:, 3, 3] = 1
        return Motion(n, color_step=step)


class _CutMixParams(Spec):
    size: Range = Field((0.3, 0.5), description="Side of the pasted patch, fraction of the image side.")
    speed: Range = step_range("add", (0.01, 0.03), "Patch displacement per frame, fraction of the image side.")


@register
class CutMix(Transform):
    """CutMix: a patch of another image of the batch is pasted and moves across the frame."""

    name, Params = "cutmix", _CutMixParams

    def motion(self, n, frames, g):
        p = self.params
        half = uniform(p.size, n, g)  # half-size in normalized units = fraction of the side
        angle = 2 * math.pi * torch.rand(n, generator=g)
        speed = 2 * uniform(p.speed, n, g)
        v = torch.stack([torch.cos(angle), torch.sin(angle)], 1) * speed[:, None]
        # Start so the path is centred on a random point that keeps the patch mostly in view.
        centre = (torch.rand(n, 2, generator=g) * 2 - 1) * (1 - half[:, None])
        start = centre - v * (frames - 1) / 2
        return Motion(n, paste_size=half[:, None].expand(n, 2).clone(), paste_start=start, paste_step=v)
