"""PMGSpec: how the Pseudo Motion Generator turns each image into a pseudo-motion video."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pmgflow.spec.base import Spec

# The paper's best transform set: Zoom-in/out + Affine (with Mixup on top).
PAPER_BEST = ("zoom", "affine")


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
    seed: int = Field(0, ge=0, description="Seed of the generator's own random stream.")

    @field_validator("transforms", mode="before")
    @classmethod
    def _names_to_choices(cls, v: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [{"name": x} if isinstance(x, str) else x for x in v]
        if isinstance(v, str):
            return [{"name": v}]
        return v
