"""Typed specs: the single source of truth of every run (validated, hashed)."""

from pmgflow.spec.base import Spec, load_spec, spec_hash, validate_spec
from pmgflow.spec.data import FolderSource, FractalSource, ImageSourceSpec, VideoDatasetSpec, VideoFramesSource
from pmgflow.spec.model import ModelSpec
from pmgflow.spec.pmg import AugmentSpec, PMGSpec, TransformChoice
from pmgflow.spec.train import FinetuneSpec, PretrainSpec

from pmgflow.spec.sweep import SweepSpec, TrialSpec  # noqa: E402  (sweep specs build on the ones above)

SPECS = {"pretrain": PretrainSpec, "finetune": FinetuneSpec, "pmg": PMGSpec, "sweep": SweepSpec, "trial": TrialSpec}

__all__ = ["Spec", "load_spec", "spec_hash", "validate_spec", "FolderSource", "FractalSource", "ImageSourceSpec",
           "VideoDatasetSpec", "VideoFramesSource", "ModelSpec", "AugmentSpec", "PMGSpec", "TransformChoice",
           "FinetuneSpec", "PretrainSpec", "SweepSpec", "TrialSpec", "SPECS"]
