"""Pre-training video sources: what makes the videos VideoMAE learns from.

PMG (the paper's, parameters in the pre-training spec's `pmg`) is one source; beside it pmgflow has synthetic
moving shapes after Yu, Chen and Gandelsman (arXiv 2410.24213) and MoSI-style pseudo camera motion (Huang et
al., CVPR 2021). A pre-training spec lists its sources under `videos`, each with the share of every batch it
makes; without `videos`, PMG makes every video (the paper's setting).

Motions are written like PMG's: amounts per frame of a 16-frame clip, as fractions of the frame side (the same
motion at any size); a clip of T frames takes steps (16-1)/(T-1) times as large, so it covers the same motion end
to end.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, ValidationInfo, field_validator

from pmgflow.spec.base import Spec

Range = tuple[float, float]


def _ordered(value: tuple, low: float, high: float) -> tuple:
    lo, hi = value
    if lo > hi:
        raise ValueError(f"lower bound {lo} is above upper bound {hi}")
    if lo < low or hi > high:
        raise ValueError(f"({lo}, {hi}) is not within [{low}, {high}]")
    return value


class SourceShare(Spec):
    """What every video source has: the share of each batch it makes."""

    fraction: float = Field(1.0, gt=0, le=1, description="Share of every batch made by this source; the shares "
                            "of a pre-training's sources add up to 1.")


class PMGVideos(SourceShare):
    """The Pseudo Motion Generator on the pre-training's image source; its parameters are the spec's `pmg`."""

    kind: Literal["pmg"] = "pmg"

    @property
    def summary(self) -> str:
        return "pmg"


class ShapesVideos(SourceShare):
    """Synthetic videos of moving shapes after Yu et al.: several objects per video, each with its own
    position, velocity, acceleration, rotation, scale change, shape and texture, drawn nearest-last over a
    background (depth-ordered occlusion). Their progression: `motion` static -> moving -> transforming ->
    accelerating, `texture` flat -> noise or image."""

    kind: Literal["shapes"] = "shapes"
    objects: tuple[int, int] = Field((8, 12), description="Objects per video, drawn uniformly in this range.")
    shapes: list[Literal["circle", "polygon"]] = Field(
        ["circle", "polygon"], min_length=1,
        description="Shapes drawn (uniformly) per object: circle, or a convex polygon of 3 to 6 corners on a "
        "circle (triangles, quadrilaterals, ... as in Yu et al.'s mixed shapes).")
    radius: Range = Field((0.15, 0.8), description="Object radius as a fraction of the frame side; drawn from a "
                          "power law p(r) ~ r^-radius_power in this range (the dead-leaves model). With the default "
                          "objects, about a quarter of the frame shows the background (sparser videos, e.g. 3-8 "
                          "objects of radius 0.08-0.4, leave it about 80 % of the frame: most masked patches are "
                          "then plain background, and they pre-trained nothing useful on the embedded action set).")
    radius_power: float = Field(3.0, ge=0, le=10, description="Exponent of the radius law (0 = uniform; Yu et "
                                "al.: 3, many small objects and a few large ones).")
    motion: Literal["static", "moving", "transforming", "accelerating"] = Field(
        "accelerating",
        description="static: objects stay put; moving: constant velocity; transforming: also rotation and scale "
        "change; accelerating: also a constant acceleration.")
    speed: Range = Field((0.005, 0.03), description="Speed in fractions of the frame side per frame (of a 16-frame "
                         "clip), direction uniform.")
    acceleration: float = Field(0.002, ge=0, le=0.1, description="Largest acceleration (fractions of the side per "
                                "frame squared), direction uniform, magnitude uniform up to it (accelerating).")
    rotation: float = Field(3.0, ge=0, le=45, description="Largest rotation speed in degrees per frame, sign "
                            "random (transforming and accelerating).")
    scaling: float = Field(0.02, ge=0, le=0.2, description="Largest relative size change per frame, grow or "
                           "shrink (transforming and accelerating).")
    texture: Literal["flat", "noise", "image"] = Field(
        "flat", description="Object fill: flat (one random colour), noise (procedural coloured noise), image "
        "(a random crop of the pre-training's image source, e.g. the embedded fractals).")
    background: Literal["black", "flat", "noise", "image"] = Field(
        "black", description="Background: black (Yu et al.'s), flat colour, noise, or an image crop (still).")

    @property
    def summary(self) -> str:
        """Short description for tables: shapes/<shapes>/<motion>/<texture>."""
        return f"shapes/{'+'.join(self.shapes)}/{self.motion}/{self.texture}"

    @field_validator("objects", "radius", "speed")
    @classmethod
    def _ranges(cls, value: tuple, info: ValidationInfo) -> tuple:
        return _ordered(value, *{"objects": (1, 64), "radius": (0.005, 2.0), "speed": (0.0, 0.5)}[info.field_name])


class MoSIVideos(SourceShare):
    """MoSI-style pseudo camera motion: a crop window slides over a still image of the image source at a speed
    drawn per axis (Huang et al., CVPR 2021)."""

    kind: Literal["mosi"] = "mosi"
    window: Range = Field((0.5, 0.8), description="Window side as a fraction of the image side.")
    speeds: list[float] = Field(
        [-0.02, -0.01, 0.0, 0.01, 0.02], min_length=1,
        description="Speeds a window axis takes (drawn uniformly per axis), in fractions of the image side per "
        "frame of a 16-frame clip; MoSI's discrete speed classes. Each is rounded to a whole number of the clip's "
        "pixels per frame (at least one for a nonzero class), so that the frames are crops of one resampled canvas; "
        "a speed the window cannot keep inside the image for the whole clip is slowed to the fastest it can.")
    one_axis: bool = Field(True, description="MoSI's rule: the window moves along one axis only (the other speed "
                           "is 0); false: both axes move.")

    @property
    def summary(self) -> str:
        return "mosi"

    @field_validator("window")
    @classmethod
    def _window(cls, value: tuple) -> tuple:
        return _ordered(value, 0.05, 1.0)

    @field_validator("speeds")
    @classmethod
    def _speeds(cls, value: list[float]) -> list[float]:
        if any(abs(s) > 0.5 for s in value):
            raise ValueError("every speed must be within [-0.5, 0.5] (fractions of the image side per frame)")
        return value


VideoSourceSpec = Annotated[Union[PMGVideos, ShapesVideos, MoSIVideos], Field(discriminator="kind")]
