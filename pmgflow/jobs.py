"""What each command does, as plain functions: the CLI parses options, these do the work with progress."""

from __future__ import annotations

from pathlib import Path

import torch

from pmgflow.console import console, counter_bar, progress_bar, summary_table
from pmgflow.errors import SpecError
from pmgflow.spec.base import load_spec
from pmgflow.spec.data import FolderSource, FractalSource
from pmgflow.spec.pmg import PMGSpec
from pmgflow.spec.data import ActionsDatasetSpec
from pmgflow.spec.train import FinetuneSpec, PretrainSpec


def preview_source(source: str | None, spec: PretrainSpec | None):
    """The image source of a preview: --source ('fractal' or a folder) wins over the spec's."""
    if source is None:
        return spec.source if spec else FractalSource(categories=16, images=64, size=128)
    if source == "fractal":
        return FractalSource(categories=16, images=64, size=128)
    return FolderSource(path=Path(source))


def preview_job(out: Path, spec_path: Path | None, source: str | None, transforms: str | None, clips: int,
                size: int | None, frames: int | None, mode: str | None, seed: int) -> list[Path]:
    """Generate clips from the image source with every transform of the set and write the preview files."""
    from pmgflow.data.images import load_image_source, random_resized_crop
    from pmgflow.pmg.generator import PseudoMotionGenerator
    from pmgflow.pmg.preview import render_preview
    from pmgflow.pmg.transforms import TRANSFORMS

    spec = load_spec(PretrainSpec, spec_path) if spec_path else None
    pmg_data = spec.pmg.model_dump() if spec else {"frames": 16, "size": 112, "transforms": sorted(TRANSFORMS)}
    if transforms:
        pmg_data["transforms"] = [t.strip() for t in transforms.split(",") if t.strip()]
    for key, value in (("size", size), ("frames", frames), ("mode", mode), ("seed", seed)):
        if value is not None:
            pmg_data[key] = value
    from pmgflow.spec.base import validate_spec

    pmg_spec = validate_spec(PMGSpec, pmg_data, str(spec_path or "preview options"))
    src = preview_source(source, spec)
    with counter_bar("loading images") as update:
        bank = load_image_source(src, pmg_spec.size, progress=update)
    report_skipped(bank)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(bank), generator=g)[:clips]
    images = bank.batch(idx).float() / 255
    images = random_resized_crop(images, pmg_spec.size, generator=g)
    return render_preview(PseudoMotionGenerator(pmg_spec), images, out, seed=seed)


def report_skipped(bank) -> None:
    """Report unreadable source files once (they were skipped)."""
    if bank.skipped:
        shown = ", ".join(f"{p} ({why})" for p, why in bank.skipped[:5])
        more = f" and {len(bank.skipped) - 5} more" if len(bank.skipped) > 5 else ""
        console.print(f"[yellow]skipped {len(bank.skipped)} unreadable file(s):[/] {shown}{more}")


def export_fractal(out: Path, categories: int, per_category: int, size: int, seed: int) -> int:
    """Render a fractal image set and write it as PNG files, one folder per category."""
    from pmgflow.data.images import export_images, load_image_source

    try:
        spec = FractalSource(categories=categories, images=categories * per_category, size=size, seed=seed)
    except ValueError as exc:
        raise SpecError(f"data fractal: {exc}") from None
    with counter_bar("rendering fractals") as update:
        bank = load_image_source(spec, size, progress=update)
    return export_images(bank, out)


def pretrain_job(spec_path: Path, root: Path | None) -> dict:
    """Load a pre-training spec, run it with a progress bar, print the summary."""
    from pmgflow.train.pretrain import pretrain

    spec = load_spec(PretrainSpec, spec_path)
    with progress_bar("pre-training", None) as advance:
        result = pretrain(spec, root=root, progress=advance)
    summary_table(f"pre-training {spec_path}", result)
    console.print(f"outputs in [bold]{result['run_dir']}[/]")
    return result


def finetune_job(spec_path: Path, init: Path | None, root: Path | None) -> dict:
    """Load a fine-tuning spec (optionally overriding its init checkpoint), run it, print the summary."""
    from pmgflow.train.finetune import finetune

    spec = load_spec(FinetuneSpec, spec_path)
    if init is not None:
        if not init.is_file():
            raise SpecError(f"--init {init}: checkpoint not found")
        spec = spec.model_copy(update={"init": init.resolve()})
    with progress_bar("fine-tuning", None) as advance:
        result = finetune(spec, root=root, progress=advance)
    summary_table(f"fine-tuning {spec_path}", result)
    console.print(f"outputs in [bold]{result['run_dir']}[/]")
    return result


def actions_job(out: Path, **fields) -> Path:
    """Render the embedded action set into `out`."""
    from pmgflow.data.actions import ensure_actions_dataset

    spec = ActionsDatasetSpec(root=out, **fields)
    with counter_bar("rendering actions") as update:
        return ensure_actions_dataset(spec, progress=update)
