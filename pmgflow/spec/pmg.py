"""PMGSpec: how the Pseudo Motion Generator turns each image into a pseudo-motion video."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pmgflow.spec.base import Spec

# The paper's best transform set: Zoom-in/out + Affine (with Mixup on top).
PAPER_BEST = ("zoom", "affine")

# Per-frame ranges are written for a clip of this many frames (the paper's): a clip of T frames takes steps
# scaled by (REFERENCE_FRAMES - 1) / (T - 1), so that it covers the same motion from its first to its last frame.
REFERENCE_FRAMES = 16


class TransformChoice(Spec):
    """One transform of the set: its registered name, its sampling weight and its parameter ranges."""

    name: str = Field(description="Registered transform name, e.g. zoom, affine, perspective (see `pmgflow preview --help`).")
    weight: float = Field(1.0, gt=0, description="Relative probability that a video uses this transform.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameter ranges of the transform; unset ones take the transform's documented defaults.",
    )

    @model_validator(mode="after")
    def _check_params(self) -> "TransformChoice":
        # The registry owns each transform's parameter model, so a new transform is one file in pmg/.
        from pmgflow.pmg.transforms import TRANSFORMS

        if self.name not in TRANSFORMS:
            raise ValueError(f"unknown transform {self.name!r}; known: {', '.join(sorted(TRANSFORMS))}")
        params = TRANSFORMS[self.name].Params.model_validate(self.params)
        # Store the resolved parameters (defaults filled in) so the spec hash covers them.
        object.__setattr__(self, "params", params.model_dump(mode="json"))
        return self


class AugmentSpec(Spec):
    """Video-level augmentation that mixes two pseudo-motion videos of the batch."""

    kind: Literal["none", "mixup", "videomix"] = Field(
        "none", description="none; mixup (blend whole videos, the paper's best); videomix (paste a box of another video)."
    )
    alpha: float = Field(1.0, gt=0, description="Beta(alpha, alpha) draws the mixing ratio lambda.")
    prob: float = Field(1.0, ge=0, le=1, description="Probability that a video of the batch is mixed.")


class PMGSpec(Spec):
    """The Pseudo Motion Generator: per video one transform and one strength, applied recursively over T frames."""

    frames: int = Field(16, ge=1, le=256, description="Frames per video (T); 16 at paper scale.")
    size: int = Field(112, ge=8, le=1024, description="Frame height and width in pixels; 224 at paper scale.")
    transforms: list[TransformChoice] = Field(
        default_factory=lambda: [TransformChoice(name=n) for n in PAPER_BEST],
        min_length=1,
        description="The transform set; each video draws one transform from it by weight. Names or objects.",
    )
    augment: AugmentSpec = Field(default_factory=AugmentSpec, description="Video-level augmentation (mixup / videomix).")
    mode: Literal["composed", "recursive"] = Field(
        "composed",
        description="composed: frame t is the source warped once by the t-th power of the step (sharp, no borders); "
        "recursive: the paper's literal frame-after-frame resampling, for comparison.",
    )
    margin: float = Field(
        0.0, ge=0, le=0.5,
        description="Extra border (fraction of the size) cropped around each frame so motion reveals real image "
        "content; sampling outside the image reflects. 0 = reflection only.",
    )
    strength: float = Field(
        1.0, gt=0, le=10,
        description="Motion strength: every transform's per-frame change is scaled by it (amounts added per frame, "
        "such as degrees and fractions of the side, are multiplied; factors per frame, such as zoom and scale, are "
        "raised to its power). 1 = the documented ranges, which are fractions of the frame (the same motion at "
        "any size) per frame of a 16-frame clip (a clip of T frames takes steps (16-1)/(T-1) times as large, so it "
        "covers the same motion end to end: at 8x32x32 the default translation is about 1 px per frame, at "
        "16x224x224 about 3.4 px).",
    )
    seed: int = Field(0, ge=0, description="Seed of the generator's own random stream.")

    @property
    def step_scale(self) -> float:
        """The factor applied to every per-frame range: strength x (16 - 1) / (frames - 1)."""
        return self.strength * (REFERENCE_FRAMES - 1) / max(self.frames - 1, 1)

    @field_validator("transforms", mode="before")
    @classmethod
    def _names_to_choices(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [{"name": x} if isinstance(x, str) else x for x in v]
        if isinstance(v, str):
            return [{"name": v}]
        return v
