"""Specs of the data: image sources for pre-training and video datasets for fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, Field, model_validator

from pmgflow.spec.base import Spec

# Paths are made absolute when a spec is read, so its hash (and the caches it names) does not depend on the
# working directory.
AbsPath = Annotated[Path, AfterValidator(lambda p: p.expanduser().resolve())]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class EmbeddedDatasetSpec(Spec):
    """Fields shared by the embedded, procedurally rendered sets (no download), written once in the UCF101 layout.

    A set is rendered the first time a run needs it, into `root` or the cache ($PMGFLOW_CACHE/<kind>/<spec hash>),
    and reused afterwards.
    """

    train_per_class: int = Field(100, ge=1, description="Training videos per class.")
    test_per_class: int = Field(30, ge=1, description="Test videos per class (drawn from disjoint seeds).")
    frames: int = Field(32, ge=4, description="Frames per rendered video.")
    size: int = Field(64, ge=16, description="Rendered frame size in pixels (square).")
    seed: int = Field(0, ge=0, description="Base seed; train and test groups use disjoint seeds.")
    root: AbsPath | None = Field(None, description="Where to write it; default: the cache, named by this spec's hash.")


class ActionsDatasetSpec(EmbeddedDatasetSpec):
    """The embedded action set: articulated stick figures whose actions differ in how the limbs move."""

    kind: Literal["actions"] = "actions"
    classes: int = Field(10, ge=2, le=12, description="Number of actions (the first N of pmgflow.data.actions.ACTIONS).")


class MotionsDatasetSpec(EmbeddedDatasetSpec):
    """The embedded motion set: rigid shapes whose classes differ only in their trajectory (kinematics).

    One textured shape (sometimes with a slow distractor) on a smooth background per video; the classes are
    motion patterns (linear drift, orbit, spin, approach, oscillation, fall, bounce, zigzag, stop-and-go, pulse,
    spiral, jitter) with random start, direction, speed and phase.
    """

    kind: Literal["motions"] = "motions"
    classes: int = Field(10, ge=2, le=12, description="Number of motion patterns (the first N of "
                         "pmgflow.data.motions.MOTIONS, most distinct first).")


class VideoDatasetSpec(Spec):
    """A real video dataset in its official layout, set by its root path and split number."""

    kind: Literal["ucf101", "hmdb51", "diving48"] = Field(description="Layout of the dataset on disk.")
    root: AbsPath = Field(description="Dataset root (videos and split files; see the README for each layout).")
    split: int = Field(1, ge=1, le=3, description="Official split number (UCF101, HMDB51: 1-3; Diving48: 1).")


class VideoLoaderSpec(Spec):
    """How videos reach training: decoded once and cached, or decoded clip by clip in loader worker processes.

    None of it changes what a run computes (a clip is the same frames, crop and flip in every mode and with
    any number of workers), so it is not part of a run's name.
    """

    cache: Literal["auto", "memory", "disk", "stream"] = Field(
        "auto", description="auto: decode once into a disk cache (memory-mapped) when the decoded frames fit "
        "memory_cap_gb and the cache stays under disk_cap_gb, else stream; memory: decode once, keep in RAM; "
        "disk: decode once into the disk cache; stream: decode only each clip's frames, on the fly (paper scale).")
    memory_cap_gb: float = Field(4.0, gt=0, description="Largest decoded dataset (train + test, GB) kept in "
                                 "memory or mapped from the disk cache; a larger one streams (auto) or is refused.")
    disk_cap_gb: float = Field(40.0, gt=0, description="Size cap of the decoded-frame disk cache ($PMGFLOW_CACHE/"
                               "frames, GB, all datasets together); fits a 64 GB disk.")
    workers: int | None = Field(None, ge=0, description="DataLoader worker processes; default: 0 for cached "
                                "frames, the run's CPUs minus one (at least 1) when streaming.")
    prefetch: int = Field(4, ge=1, description="Batches each worker prepares ahead.")
    backend: Literal["auto", "decord", "pyav"] = Field("auto", description="Video decoder (auto: decord, then PyAV).")
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description="Largest fraction of unreadable videos skipped "
                                    "(with a warning) before the run is refused.")


DatasetSpec = Annotated[Union[ActionsDatasetSpec, MotionsDatasetSpec, VideoDatasetSpec], Field(discriminator="kind")]


class FractalSource(Spec):
    """Formula-driven images (iterated function systems, FractalDB-style): the embedded default, no download."""

    kind: Literal["fractal"] = "fractal"
    categories: int = Field(64, ge=1, le=100_000, description="Number of categories (one IFS each).")
    images: int = Field(4096, ge=1, description="Number of images in all (data scale), spread evenly over categories.")
    size: int = Field(128, ge=16, le=1024, description="Rendered size in pixels (square) before the random crop.")
    seed: int = Field(0, ge=0, description="Seed of the category systems and instance perturbations.")

    @model_validator(mode="after")
    def _enough_images(self) -> "FractalSource":
        if self.images < self.categories:
            raise ValueError(f"images ({self.images}) must be at least categories ({self.categories})")
        return self


class FolderSource(Spec):
    """Any tree of images (PASS, ImageNet-style); a sub-folder is a category."""

    kind: Literal["folder"] = "folder"
    path: AbsPath = Field(description="Root folder of the images.")
    images: int | None = Field(None, ge=1, description="Use at most this many images (data scale); all if unset.")
    categories: int | None = Field(None, ge=1, description="Use only the first N sub-folders (sorted); all if unset.")
    extensions: list[str] = Field(list(IMAGE_EXTENSIONS), description="File extensions taken as images.")
    seed: int = Field(0, ge=0, description="Seed of the subset drawn when `images` is set.")


class VideoFramesSource(Spec):
    """Frames of a video dataset's training split, as still images (the paper's "PMG on downstream frames")."""

    kind: Literal["video_frames"] = "video_frames"
    dataset: DatasetSpec = Field(description="The video dataset whose training videos give the frames.")
    frames_per_video: int = Field(1, ge=1, description="Frames taken per video, evenly spaced.")
    images: int | None = Field(None, ge=1, description="Use at most this many frames in all; all if unset.")


ImageSourceSpec = Annotated[Union[FractalSource, FolderSource, VideoFramesSource], Field(discriminator="kind")]
