"""The CLI's glue: each command's body as a plain function. They read spec files and options, call the library,
show progress bars and print results; the work itself is done in the modules they call."""

from __future__ import annotations

from pathlib import Path

from pmgflow.console import console, counter_bar, progress_bar, summary_table
from pmgflow.errors import SpecError
from pmgflow.spec.base import load_spec
from pmgflow.spec.data import ActionsDatasetSpec, FolderSource, FractalSource, MotionsDatasetSpec
from pmgflow.spec.pmg import PMGSpec
from pmgflow.spec.train import FinetuneSpec, PretrainSpec, load_dataset_spec


def preview_source(source: str | None, spec: PretrainSpec | None):
    """The image source of a preview: --source ('fractal' or a folder) wins over the spec's."""
    if source is None:
        return spec.source if spec else FractalSource(categories=16, images=64, size=128)
    if source == "fractal":
        return FractalSource(categories=16, images=64, size=128)
    return FolderSource(path=Path(source))


PREVIEW_SOURCES = {"pmg": {"kind": "pmg"}, "shapes": {"kind": "shapes", "texture": "image"}, "mosi": {"kind": "mosi"}}
"""What `pmgflow preview --videos` shows of each kind (its default parameters; shapes textured with images)."""


def preview_videos(spec: PretrainSpec | None, videos: str | None) -> list:
    """The video sources a preview shows: --videos (pmg, shapes, mosi) wins, then the spec's, else all three."""
    from pydantic import TypeAdapter

    from pmgflow.spec.sources import VideoSourceSpec

    if videos is None:
        if spec is not None:
            return spec.videos or [PREVIEW_SOURCES["pmg"]]
        names = list(PREVIEW_SOURCES)
    else:
        names = [v.strip() for v in videos.split(",") if v.strip()]
        unknown = [n for n in names if n not in PREVIEW_SOURCES]
        if unknown or not names:
            raise SpecError(f"--videos: unknown video source(s) {', '.join(unknown) or '(none)'}; known: "
                            f"{', '.join(PREVIEW_SOURCES)}")
    return [TypeAdapter(VideoSourceSpec).validate_python(PREVIEW_SOURCES[n]) for n in names]


def preview_job(out: Path, spec_path: Path | None, source: str | None, transforms: str | None, clips: int,
                size: int | None, frames: int | None, mode: str | None, seed: int,
                videos: str | None = None) -> list[Path]:
    """Generate clips from the image source with every transform of the set (PMG) and with every other video
    source, and write the preview files."""
    import torch

    from pmgflow.pmg.clips import ImageClips
    from pmgflow.pmg.preview import render_preview
    from pmgflow.pmg.transforms import TRANSFORMS
    from pmgflow.sources.mix import VideoClips
    from pmgflow.spec.base import validate_spec

    spec = load_spec(PretrainSpec, spec_path) if spec_path else None
    sources = preview_videos(spec, videos)
    pmg_data = spec.pmg.model_dump() if spec else {"frames": 16, "size": 112, "transforms": sorted(TRANSFORMS)}
    if transforms:
        pmg_data["transforms"] = [t.strip() for t in transforms.split(",") if t.strip()]
    for key, value in (("size", size), ("frames", frames), ("mode", mode), ("seed", seed)):
        if value is not None:
            pmg_data[key] = value
    pmg_spec = validate_spec(PMGSpec, pmg_data, str(spec_path or "preview options"))
    with counter_bar("loading images") as update:  # stored as for training, a little larger than the clips
        made = ImageClips(pmg_spec, preview_source(source, spec), (spec or PretrainSpec()).crop_scale,
                          progress=update)
    report_skipped(made.bank)
    shown = (spec or PretrainSpec()).model_copy(update={"pmg": pmg_spec, "videos": sources})
    others = VideoClips(shown, made.bank)
    g = torch.Generator().manual_seed(seed)
    with_pmg = any(s.kind == "pmg" for s in sources)
    rest = {label: make(others.draw(clips, g), g, None, None)
            for label, make, s in zip(others.labels, others.makers, sources) if s.kind != "pmg"}
    return render_preview(made.pmg if with_pmg else None, made.crops(made.draw(clips, g), g) if with_pmg else None,
                          out, seed=seed, others=rest)


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
    """Load a pre-training spec, check its inputs, run it with a progress bar, print the summary."""
    from pmgflow.orchestrate.preflight import preflight_run
    from pmgflow.train.pretrain import pretrain

    spec = load_spec(PretrainSpec, spec_path)
    preflight_run(spec, spec_path)
    with progress_bar("pre-training", None) as advance:
        result = pretrain(spec, root=root, progress=advance)
    summary_table(f"pre-training {spec_path}", result)
    console.print(f"outputs in [bold]{result['run_dir']}[/]")
    return result


def finetune_job(spec_path: Path, init: Path | None, root: Path | None) -> dict:
    """Load a fine-tuning spec (optionally overriding its init checkpoint), check its checkpoint and data, run it,
    print the summary."""
    from pmgflow.orchestrate.preflight import preflight_run
    from pmgflow.train.finetune import finetune

    spec = load_spec(FinetuneSpec, spec_path)
    if init is not None:
        spec = spec.model_copy(update={"init": init.resolve()})
    preflight_run(spec, spec_path, init_field="--init" if init is not None else "init")
    with progress_bar("fine-tuning", None) as advance:
        result = finetune(spec, root=root, progress=advance)
    summary_table(f"fine-tuning {spec_path}", result)
    console.print(f"outputs in [bold]{result['run_dir']}[/]")
    return result


def embedded_job(kind: str, out: Path, **fields) -> Path:
    """Render an embedded set ("actions" or "motions") into `out`."""
    from pmgflow.data.embedded import ensure_embedded_dataset
    from pmgflow.spec.base import validate_spec

    cls = {"actions": ActionsDatasetSpec, "motions": MotionsDatasetSpec}[kind]
    spec = validate_spec(cls, {"root": out, **fields}, f"pmgflow data {kind}")
    with counter_bar(f"rendering {kind}") as update:
        return ensure_embedded_dataset(spec, progress=update)


# --- sweeps, reports, submission, MLflow UI (pmgflow.orchestrate) -------------------------------------------


def _echo(message: str) -> None:
    console.print(message, highlight=False, soft_wrap=True)


def sweep_job(spec_path: Path, dry_run: bool, address: str | None, tracking_uri: str | None, runs: Path | None,
              cpus: int | None, out: Path | None, smoke: bool = False, only: list[str] | None = None) -> int:
    """Dry-run (print the plan) or run a sweep (or its smoke) and print its ablation table; returns the exit code."""
    from pmgflow.orchestrate.sweep import load, plan_tables, run_sweep, runs_root

    if smoke:
        return smoke_job(spec_path, dry_run, address, tracking_uri, runs, cpus, out)
    if dry_run:
        from pmgflow.orchestrate.preflight import preflight_problems

        sweep = load(spec_path)
        trials, pretrainings = plan_tables(sweep, runs_root(runs))
        print(trials.markdown())
        print(pretrainings.markdown())
        checked, problems = preflight_problems(sweep)  # the checks a real run makes before its first trial
        _echo(f"pre-flight: {checked} input(s) checked, {len(problems)} problem(s)"
              + (" (a run would stop here):\n" + "\n".join(problems) if problems else ""))
        return 0
    outcome = run_sweep(spec_path, address=address, tracking_uri=tracking_uri, runs=runs, cpus=cpus, echo=_echo,
                        only=only)
    print(outcome.table.markdown())
    if out is not None:
        from pmgflow.orchestrate.report import load_record, write_report

        written = write_report(load_record(outcome.tracking_uri, outcome.parent_id), out)
        _echo(f"wrote {', '.join(str(p) for p in written)}")
    _echo(f"MLflow: {outcome.tracking_uri}, parent run {outcome.parent_id} (`pmgflow ui` to browse, "
          f"`pmgflow report {outcome.sweep.spec.name}` for the table)")
    if outcome.failed:
        _echo(f"[red]{len(outcome.failed)} of {len(outcome.statuses)} trial(s) failed[/] "
              f"({', '.join(map(str, outcome.failed))}); the status column says why")
        return 1
    if outcome.interrupted:
        _echo("[yellow]interrupted[/]: finished epochs are checkpointed; run the same command to resume")
        return 130
    return 0


def smoke_job(spec_path: Path, dry_run: bool, address: str | None, tracking_uri: str | None, runs: Path | None,
              cpus: int | None, out: Path | None) -> int:
    """Print the smoke plan, or run the smoke of a sweep and print its table and summary; returns the exit code."""
    from pmgflow.orchestrate import smoke
    from pmgflow.orchestrate.sweep import plan_tables

    if dry_run:
        places = smoke.smoke_places(runs, tracking_uri, out, create=False)
        plan = smoke.plan_smoke(spec_path, places, address)
        trials, pretrainings = plan_tables(plan.sweep, places.runs)
        print(trials.markdown())
        print(pretrainings.markdown())
        for line in smoke.plan_lines(plan):
            _echo(line)
        _echo(f"runs root: {'a new temporary folder' if places.temporary else places.runs} (nothing written yet)")
        return 0
    outcome = smoke.run_smoke(spec_path, address=address, tracking_uri=tracking_uri, runs=runs, cpus=cpus, out=out,
                              echo=_echo)
    print(outcome.first.table.markdown())
    for line in smoke.summary(outcome):
        _echo(line)
    return 0 if outcome.ok else 1


def synth_job(kind: str, out: Path, size: str, seconds: float, **counts) -> Path:
    """Write a small generated dataset of `kind` in its official layout."""
    from pmgflow.data.synth import FPS, write_synthetic

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise SpecError(f"--size {size!r}: expected WIDTHxHEIGHT, e.g. 320x240") from None
    with console.status(f"writing a {kind} tree"):
        return write_synthetic(kind, out, frames=max(1, round(seconds * FPS)), size=(width, height), **counts)


def report_job(ref: str, tracking_uri: str | None, out: Path | None) -> None:
    """Print a sweep's ablation table as Markdown (stdout) and write CSV + PNG to `out`."""
    from pmgflow.orchestrate.report import report
    from pmgflow.orchestrate.tracking import resolve_tracking_uri

    if ref.endswith((".yaml", ".yml")) and Path(ref).is_file():  # a sweep file: its name
        from pmgflow.orchestrate.sweep import load

        ref = load(ref).spec.name
    table, written = report(resolve_tracking_uri(tracking_uri), ref, out)
    print(table.markdown())
    if written:
        _echo(f"wrote {', '.join(str(p) for p in written)}")


def submit_job(spec_path: Path, address: str, tracking_uri: str | None, runs: Path | None, env: list[str],
               wait: bool, timeout: float | None) -> int:
    """Submit a sweep as a Ray job; with `wait`, follow its logs and return 0 only if it succeeded."""
    from pmgflow.orchestrate.sweep import submit_sweep, wait_for_job

    pairs = {}
    for item in env:
        if "=" not in item:
            raise SpecError(f"--env {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        pairs[key] = value
    job_id, entrypoint = submit_sweep(spec_path, address, tracking_uri=tracking_uri, runs=runs, env=pairs)
    print(job_id)
    _echo(f"submitted [bold]{job_id}[/] to {address}: {entrypoint}\n"
          f"follow it: ray job logs --address {address} --follow {job_id}   (status: ray job status ... {job_id})")
    if not wait:
        return 0
    status = wait_for_job(address, job_id, print, timeout_s=timeout)
    _echo(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def ui_job(port: int, tracking_uri: str | None) -> int:
    """Serve the MLflow UI for the tracking store on 127.0.0.1 until stopped; returns the exit code."""
    from pmgflow.orchestrate.tracking import resolve_tracking_uri
    from pmgflow.orchestrate.ui import serve

    return serve(resolve_tracking_uri(tracking_uri), port, echo=_echo)


def check_job(spec_path: Path, full: bool) -> bool:
    """Print a dataset's counts per class and split and its unreadable files; True if all were readable."""
    from pmgflow.data.layouts import check_dataset

    spec = load_dataset_spec(spec_path)
    with counter_bar("checking videos") as update:
        report = check_dataset(spec, full=full, progress=update)
    print(report.format())
    return report.ok


def prepare_job(spec_path: Path, out: Path, short_side: int, keyframe_interval: int = 16) -> None:
    """Transcode a dataset to mp4 at `short_side` in the same layout."""
    from pmgflow.data.layouts import prepare_dataset

    spec = load_dataset_spec(spec_path)
    with counter_bar("transcoding") as update:
        result = prepare_dataset(spec, out, short_side, keyframe_interval=keyframe_interval, progress=update)
    console.print(f"{result.written} transcoded, {result.reused} already there, {len(result.unreadable)} unreadable; "
                  f"use root: {result.root}")
    for path, why in result.unreadable:
        console.print(f"  [yellow]unreadable[/] {path}: {why}")
