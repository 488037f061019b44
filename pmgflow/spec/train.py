"""Specs of the two training stages: VideoMAE pre-training on PMG videos, and fine-tuning on actions."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, TypeAdapter, ValidationError, model_serializer, model_validator

from pmgflow.errors import SpecError
from pmgflow.spec.base import Spec, format_validation_error, load_spec, read_yaml
from pmgflow.spec.data import AbsPath, ActionsDatasetSpec, DatasetSpec, FractalSource, ImageSourceSpec, VideoLoaderSpec
from pmgflow.spec.model import ModelSpec
from pmgflow.spec.pmg import PMGSpec
from pmgflow.spec.sources import VideoSourceSpec


class OptimSpec(Spec):
    """Optimizer and schedule shared by both stages (VideoMAE's recipe: AdamW, cosine with warmup)."""

    epochs: int = Field(10, ge=0, description="Training epochs (0 = no training; for pre-training: scratch).")
    batch_size: int = Field(32, ge=1, description="Clips per optimizer step, summed over accumulation steps.")
    accum_steps: int = Field(1, ge=1, description="Gradient accumulation steps per optimizer step.")
    blr: float = Field(1.5e-4, gt=0, description="Base learning rate; lr = blr * batch_size / 256 (VideoMAE).")
    min_lr: float = Field(1e-6, ge=0, description="Final learning rate of the cosine schedule.")
    warmup_epochs: float = Field(1.0, ge=0, description="Linear warm-up length in epochs.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay (not on norms, biases, position tables).")
    betas: tuple[float, float] = Field((0.9, 0.95), description="AdamW betas.")
    clip_grad: float | None = Field(None, gt=0, description="Clip the gradient norm to this value; off if unset.")
    seed: int = Field(0, ge=0, description="Seed of initialization, data order and masks.")
    device: str = Field("auto", description="auto (cuda if available), cpu, cuda, cuda:N.")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: the CPUs given to the run.")
    log_every: int = Field(50, ge=1, description="Read the loss back to the host every N optimizer steps (and at "
                           "an epoch's last step) for progress and the non-finite check; between, it stays on the "
                           "device so that a GPU step never waits for the host.")
    fused_adamw: bool = Field(True, description="Fused AdamW kernel when the model is on CUDA (the CPU keeps "
                              "torch's default multi-tensor AdamW).")
    compile: bool = Field(False, description="torch.compile the training forward (checkpoints stay uncompiled). "
                          "Off by default: at the CPU presets a compiled step is 0.97-1.08x as fast as eager and "
                          "compiling takes about a minute (bench/compile_speed.py); measure it on a GPU.")

    @model_validator(mode="after")
    def _accum_divides(self) -> "OptimSpec":
        if self.batch_size % self.accum_steps:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of accum_steps {self.accum_steps}")
        return self

    @property
    def lr(self) -> float:
        """Peak learning rate, scaled by the total batch as in VideoMAE."""
        return self.blr * self.batch_size / 256


class RealVideoMix(Spec):
    """Mix clips of a real video dataset into pre-training (the paper's real + pseudo-motion table)."""

    dataset: DatasetSpec = Field(description="Video dataset whose training clips are mixed in.")
    ratio: float = Field(0.5, ge=0, le=1, description="Fraction of each batch taken from real clips.")
    stride: int = Field(2, ge=1, description="Frame stride of the real clips.")


class PretrainSpec(OptimSpec):
    """VideoMAE pre-training on pseudo-motion videos generated from an image source."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="Encoder and decoder sizes.")
    source: ImageSourceSpec = Field(default_factory=FractalSource, description="Where the still images come from.")
    pmg: PMGSpec = Field(default_factory=dict, description="The Pseudo Motion Generator (frames and size follow the model).")
    videos: list[VideoSourceSpec] | None = Field(
        None, min_length=1,
        description="Video sources and the share of every batch each makes (kind: pmg, shapes or mosi; shares add "
        "up to 1); unset: PMG makes every video (the paper's setting). Shapes and MoSI clips have the model's "
        "frames and size; `source` gives MoSI its images and shapes their image textures.")
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="Learning-rate schedule after the warm-up: cosine (VideoMAE's, decaying to min_lr at "
        "the last step) or constant. Under constant, epoch e of a run does not depend on its total epochs, so runs "
        "differing only in `epochs` share their work: a longer run continues from a shorter one's checkpoint and a "
        "shorter one is a checkpoint of a longer one (each run keeps every epoch's checkpoint for that).")
    mask_ratio: float = Field(0.75, gt=0, lt=1, description="Tube-mask ratio (paper: 0.75; VideoMAE on K400: 0.9).")
    decoder_mask_ratio: float = Field(0.0, ge=0, lt=1, description="VideoMAE V2 decoder masking: this fraction "
                                      "of tokens is left out of the decoder by running-cell masking (0 = off, "
                                      "as the paper; V2 uses 0.5); the loss covers tokens both masked and decoded.")
    norm_pix_loss: bool = Field(True, description="Regress per-patch normalized pixels (VideoMAE's target).")
    clips_per_epoch: int | None = Field(None, ge=1, description="Clips per epoch; default: one per source image.")
    crop_scale: tuple[float, float] = Field((0.35, 1.0), description="Random resized crop scale range before PMG.")
    real_mix: RealVideoMix | None = Field(None, description="Optionally mix real video clips into each batch.")
    loader: VideoLoaderSpec = Field(default_factory=VideoLoaderSpec, description="How real_mix videos are read.")

    @model_validator(mode="after")
    def _shares(self) -> "PretrainSpec":
        if self.videos is None:
            return self
        total = sum(v.fraction for v in self.videos)
        if abs(total - 1) > 1e-6:
            raise ValueError(f"videos: the fractions add up to {total:g}, not 1")
        if sum(v.kind == "pmg" for v in self.videos) > 1:
            raise ValueError("videos: pmg is listed more than once (its parameters are the spec's `pmg`)")
        if len(self.videos) == 1 and self.videos[0].kind == "pmg":
            object.__setattr__(self, "videos", None)  # the default spelled out: one spec, one run key
        return self

    @model_serializer(mode="wrap")
    def _omit_default_videos(self, handler):
        # Without `videos` a spec dumps as before the field existed, so run keys of PMG-only runs are unchanged.
        data = handler(self)
        if self.videos is None and isinstance(data, dict):
            data.pop("videos", None)
        return data

    @property
    def video_kinds(self) -> tuple[str, ...]:
        """The kinds of video source this pre-training draws from."""
        return ("pmg",) if self.videos is None else tuple(v.kind for v in self.videos)

    @property
    def videos_summary(self) -> str:
        """Short description of the videos for tables: PMG's transforms (pmg:zoom+affine), or each source with
        its share (pmg:zoom+affine 0.5 + shapes/circle+polygon/accelerating/image 0.5)."""
        pmg = "pmg:" + "+".join(c.name for c in self.pmg.transforms)
        if self.videos is None:
            return pmg
        if len(self.videos) == 1:
            return self.videos[0].summary
        return " + ".join(f"{pmg if v.kind == 'pmg' else v.summary} {v.fraction:g}" for v in self.videos)

    @property
    def prefix_key(self) -> str | None:
        """Under `schedule: constant`, the key runs differing only in `epochs` share (they form one chain of
        epochs); None under cosine."""
        from pmgflow.spec.base import run_key

        return run_key(self.model_copy(update={"epochs": 0})) if self.schedule == "constant" else None

    @model_validator(mode="before")
    @classmethod
    def _pmg_follows_model(cls, data):
        # One source of truth for clip shape: the model. PMG frames/size default to it and must agree.
        if isinstance(data, dict):
            try:
                model = ModelSpec.model_validate(data.get("model", {}))
            except ValidationError:
                return data  # the field validation reports it, with its path
            pmg = data.get("pmg", {})
            if not isinstance(pmg, (Spec, dict, type(None))):
                return data  # not a mapping: the field validation reports it, with its path
            if isinstance(pmg, Spec):  # already validated (assignment to another field): check, keep the model
                for key, value in (("frames", model.frames), ("size", model.img_size)):
                    if getattr(pmg, key) != value:
                        raise ValueError(f"pmg.{key} ({getattr(pmg, key)}) differs from the model's ({value})")
                return data
            pmg = dict(pmg or {})
            for key, value in (("frames", model.frames), ("size", model.img_size)):
                if pmg.setdefault(key, value) != value:
                    raise ValueError(f"pmg.{key} ({pmg[key]}) differs from the model's ({value})")
            data = {**data, "pmg": pmg}
        return data


class FinetuneSpec(OptimSpec):
    """Fine-tuning (or linear probing) on an action-recognition dataset, from a checkpoint or from scratch."""

    dataset: DatasetSpec = Field(default_factory=ActionsDatasetSpec, description="Downstream video dataset.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Architecture when training from scratch "
                             "(with an init checkpoint the architecture is the checkpoint's).")
    init: AbsPath | None = Field(None, description="Pre-trained checkpoint; scratch if unset (a sweep sets it).")
    mode: Literal["full", "linear"] = Field("full", description="full fine-tuning, or linear probe (frozen encoder).")
    blr: float = Field(1e-3, gt=0, description="Base learning rate; lr = blr * batch_size / 256.")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    layer_decay: float = Field(0.75, gt=0, le=1, description="Layer-wise lr decay (1 = off).")
    drop_path: float = Field(0.1, ge=0, lt=1, description="Stochastic depth rate.")
    head_init_scale: float = Field(0.001, gt=0, description="Scale of the classifier's initial weights "
                                   "(VideoMAE: 0.001; a model trained from scratch learns faster with 1).")
    label_smoothing: float = Field(0.1, ge=0, lt=1, description="Label smoothing.")
    mixup: float = Field(0.8, ge=0, description="Mixup alpha (0 = off).")
    cutmix: float = Field(1.0, ge=0, description="CutMix alpha (0 = off).")
    mixup_prob: float = Field(1.0, ge=0, le=1, description="Probability of applying mixup/cutmix to a batch.")
    stride: int = Field(2, ge=1, description="Frame stride of sampled clips.")
    crop_scale: tuple[float, float] = Field((0.4, 1.0), description="Random resized crop scale range (training).")
    train_fraction: float | None = Field(None, gt=0, le=1, description="Use this fraction of the training videos "
                                         "(stratified; the paper's limited-data experiment).")
    per_class: int | None = Field(None, ge=1, description="Or use this many training videos per class.")
    test_segments: int = Field(2, ge=1, description="Temporal clips per test video (multi-view testing).")
    test_crops: int = Field(3, ge=1, description="Spatial crops per test clip (1 = centre, 3 = three along the long side).")
    eval_every: int = Field(0, ge=0, description="Evaluate single-view top-1 every N epochs (0 = only at the end).")
    loader: VideoLoaderSpec = Field(default_factory=VideoLoaderSpec, description="How the videos are read.")

    @model_validator(mode="after")
    def _one_limit(self) -> "FinetuneSpec":
        if self.train_fraction is not None and self.per_class is not None:
            raise ValueError("set train_fraction or per_class, not both")
        return self


def load_dataset_spec(path: str | Path) -> DatasetSpec:
    """A dataset spec from a YAML file holding one, or holding a fine-tuning spec (its `dataset`)."""
    data = read_yaml(path)
    if "kind" not in data:
        return load_spec(FinetuneSpec, path).dataset
    try:
        return TypeAdapter(DatasetSpec).validate_python(data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, str(path))) from None
