"""The `pmgflow` command line: thin wiring from options to the library, errors as one clear message."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from rich.markup import escape

from pmgflow.console import console
from pmgflow.errors import PmgflowError

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

app = typer.Typer(
    help="pmgflow: pre-train video models on pseudo-motion videos made from still images (no video collection), "
    "fine-tune them on action recognition, and run the paper's ablations on Ray with MLflow tracking.",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
)
data_app = typer.Typer(help="Make, export and check datasets and image sources.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def user_errors(fn):
    """Turn PmgflowError into one red message on stderr and exit code 2 (no traceback); Ctrl-C, SIGTERM and
    SIGHUP into "interrupted" and exit code 130, after the command has stopped cleanly (a sweep marks its
    unfinished trials KILLED and shuts Ray down; a training run keeps its last epoch's checkpoint)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from pmgflow.orchestrate.processes import stop_signals_interrupt

        try:
            with stop_signals_interrupt():
                return fn(*args, **kwargs)
        except PmgflowError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]: finished epochs are checkpointed; run the same command to resume")
            raise typer.Exit(130) from None

    return wrapper


@app.command()
@user_errors
def preview(
    out: Annotated[Path, typer.Option(help="Output directory for the GIFs and the contact sheet.")] = Path("preview"),
    spec: Annotated[Optional[Path], typer.Option(help="A pre-training spec YAML: its image source and PMG are shown.")] = None,
    source: Annotated[Optional[str], typer.Option(help="'fractal' or a folder of images (overrides the spec's).")] = None,
    transforms: Annotated[Optional[str], typer.Option(help="Comma-separated transforms (default: the spec's, "
                                                      "or all eight with no spec).")] = None,
    clips: Annotated[int, typer.Option(min=1, max=32, help="Clips per transform.")] = 4,
    size: Annotated[Optional[int], typer.Option(help="Frame size (default: the spec's; 112 with no spec).")] = None,
    frames: Annotated[Optional[int], typer.Option(help="Frames per clip (default: the spec's; 16 with no spec).")] = None,
    mode: Annotated[Optional[str], typer.Option(help="composed or recursive.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of images and motions.")] = 0,
    videos: Annotated[Optional[str], typer.Option(help="Comma-separated video sources: pmg, shapes, mosi (default: "
                                                  "the spec's; all three with no spec).")] = None,
):
    """Write a GIF of a few clips per PMG transform and per other video source, and one PNG contact sheet."""
    from pmgflow.jobs import preview_job

    written = preview_job(out=out, spec_path=spec, source=source, transforms=transforms, clips=clips,
                          size=size, frames=frames, mode=mode, seed=seed, videos=videos)
    console.print(f"wrote {len(written)} files to [bold]{out}[/]: " + ", ".join(p.name for p in written))


@data_app.command("fractal")
@user_errors
def data_fractal(
    out: Annotated[Path, typer.Option(help="Output folder (one sub-folder per category).")],
    categories: Annotated[int, typer.Option(min=1, help="Number of categories.")] = 64,
    per_category: Annotated[int, typer.Option(min=1, help="Images per category.")] = 64,
    size: Annotated[int, typer.Option(min=16, help="Image size in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
):
    """Render a formula-driven (fractal) image set to PNG files."""
    from pmgflow.jobs import export_fractal

    n = export_fractal(out=out, categories=categories, per_category=per_category, size=size, seed=seed)
    console.print(f"wrote {n} images in {categories} categories to [bold]{out}[/]")


@data_app.command("synth")
@user_errors
def data_synth(
    kind: Annotated[str, typer.Option(help="Layout: ucf101, hmdb51 or diving48.")],
    out: Annotated[Path, typer.Option(help="Dataset root to write.")],
    classes: Annotated[int, typer.Option(min=1, help="Number of classes.")] = 3,
    train_per_class: Annotated[int, typer.Option(min=1, help="Training videos per class.")] = 2,
    test_per_class: Annotated[int, typer.Option(min=1, help="Test videos per class.")] = 1,
    size: Annotated[str, typer.Option(help="Frame size, WIDTHxHEIGHT.")] = "320x240",
    seconds: Annotated[float, typer.Option(min=0.04, help="Length of each video (25 frames per second).")] = 2.0,
    split: Annotated[int, typer.Option(min=1, max=3, help="Official split number of the split files.")] = 1,
):
    """Write a small dataset of moving-square videos in an official layout, with its split files (for tests)."""
    from pmgflow.jobs import synth_job

    root = synth_job(kind, out, size, seconds, classes=classes, train_per_class=train_per_class,
                     test_per_class=test_per_class, split=split)
    console.print(f"wrote a {kind} tree to [bold]{root}[/] (`pmgflow data check` reads it with kind: {kind})")


@app.command()
@user_errors
def pretrain(
    spec: Annotated[Path, typer.Argument(help="Pre-training spec YAML (see `pmgflow schema pretrain`).")],
    out: Annotated[Optional[Path], typer.Option(help="Runs root (default $PMGFLOW_RUNS or ./runs).")] = None,
):
    """VideoMAE pre-training on pseudo-motion videos; resumes an interrupted run, skips a finished one."""
    from pmgflow.jobs import pretrain_job

    pretrain_job(spec, out)


@app.command()
@user_errors
def finetune(
    spec: Annotated[Path, typer.Argument(help="Fine-tuning spec YAML (see `pmgflow schema finetune`).")],
    init: Annotated[Optional[Path], typer.Option(help="Pre-trained checkpoint (model.pt); default: the spec's, "
                                                 "else from scratch.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Runs root (default $PMGFLOW_RUNS or ./runs).")] = None,
):
    """Fine-tune (or linear-probe) on an action dataset and report top-1 (single- and multi-view)."""
    from pmgflow.jobs import finetune_job

    finetune_job(spec, init, out)


def _embedded_command(kind: str, what: str) -> None:
    """Register `pmgflow data KIND`: render an embedded set to disk in the UCF101 layout."""

    def command(
        out: Annotated[Path, typer.Option(help="Dataset root to write (UCF101 layout).")],
        classes: Annotated[int, typer.Option(min=2, max=12, help="Number of classes (the first N).")] = 10,
        train_per_class: Annotated[int, typer.Option(min=1, help="Training videos per class.")] = 100,
        test_per_class: Annotated[int, typer.Option(min=1, help="Test videos per class.")] = 30,
        frames: Annotated[int, typer.Option(min=4, help="Frames per video.")] = 32,
        size: Annotated[int, typer.Option(min=16, help="Frame size.")] = 64,
        seed: Annotated[int, typer.Option(min=0, help="Seed.")] = 0,
    ):
        from pmgflow.jobs import embedded_job

        root = embedded_job(kind, out=out, classes=classes, train_per_class=train_per_class,
                            test_per_class=test_per_class, frames=frames, size=size, seed=seed)
        console.print(f"wrote the {kind} set to [bold]{root}[/]")

    command.__doc__ = f"Render the embedded {what} to disk in the UCF101 layout."
    command.__name__ = f"data_{kind}"
    data_app.command(kind)(user_errors(command))


_embedded_command("actions", "action-recognition set (articulated figures)")
_embedded_command("motions", "motion set (rigid shapes told apart by their trajectory)")


@data_app.command("check")
@user_errors
def data_check(
    spec: Annotated[Path, typer.Argument(help="A dataset spec YAML ({kind: ucf101|hmdb51|diving48, root, split} "
                                         "or {kind: actions|motions, ...}), or a fine-tuning spec (its `dataset` "
                                         "is checked).")],
    full: Annotated[bool, typer.Option(help="Decode every video whole (slower, finds more damage).")] = False,
):
    """Count videos per class and split, and list the files that cannot be read (exit 1 if any)."""
    from pmgflow.jobs import check_job

    if not check_job(spec, full):
        raise typer.Exit(1)


@data_app.command("prepare")
@user_errors
def data_prepare(
    spec: Annotated[Path, typer.Argument(help="A dataset spec YAML, or a fine-tuning spec.")],
    out: Annotated[Path, typer.Option(help="Root of the transcoded copy (same layout, .mp4 videos).")],
    short_side: Annotated[int, typer.Option(min=16, help="Short side of the transcoded videos.")] = 128,
    keyframe_interval: Annotated[int, typer.Option(min=1, help="Frames between keyframes (random access cost "
                                                   "of a streamed clip).")] = 16,
):
    """Transcode a dataset once to h264 mp4 at a given short side, for faster decoding; reruns resume."""
    from pmgflow.jobs import prepare_job

    prepare_job(spec, out, short_side, keyframe_interval)


@app.command()
@user_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A pmgflow checkpoint (model.pt of a run).")],
    out: Annotated[Path, typer.Option(help="Output folder (config.json + model.safetensors).")],
    format: Annotated[str, typer.Option("--format", help="Only 'hf' (Hugging Face transformers) for now.")] = "hf",
):
    """Export to transformers: pre-trained -> VideoMAEForPreTraining, fine-tuned -> VideoMAEForVideoClassification."""
    from pmgflow.model.interop import export_hf

    if format != "hf":
        raise PmgflowError(f"--format {format!r}: only 'hf' is supported")
    console.print(f"wrote [bold]{export_hf(checkpoint, out)}[/]")


@app.command("import")
@user_errors
def import_(
    source: Annotated[Path, typer.Argument(help="An official VideoMAE checkpoint file, or a transformers VideoMAE "
                                           "folder (config.json + weights).")],
    out: Annotated[Path, typer.Option(help="The pmgflow checkpoint to write (then: finetune --init OUT).")],
    preset: Annotated[str, typer.Option(help="Architecture of an official checkpoint (its file holds none): "
                                        "tiny, small, base, large.")] = "base",
):
    """Import VideoMAE weights (official or transformers) as a pmgflow checkpoint, to fine-tune them here."""
    from pmgflow.model.interop import import_checkpoint

    kind = import_checkpoint(source, out, preset)
    console.print(f"wrote a {kind} checkpoint to [bold]{out}[/]")


@app.command()
def schema(name: Annotated[str, typer.Argument(help="pretrain, finetune, pmg or sweep.")] = "pretrain"):
    """Print the JSON schema of a spec (every field, its default and its description)."""
    import json

    from pmgflow.spec import SPECS

    if name not in SPECS:
        console.print(f"[bold red]error:[/] unknown spec {name!r}; choose from {', '.join(SPECS)}")
        raise typer.Exit(2)
    print(json.dumps(SPECS[name].model_json_schema(), indent=2))


@app.command()
@user_errors
def sweep(
    spec: Annotated[Path, typer.Argument(help="Sweep YAML (e.g. experiments/epochs.yaml; `pmgflow schema sweep`).")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate every trial, print the trial table and the "
                                          "shared pre-trainings, run nothing.")] = False,
    address: Annotated[Optional[str], typer.Option(help="Join this Ray cluster ('auto' inside a Ray job); default: "
                                                   "a local Ray sized to this machine.")] = None,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (a server: http://HOST:PORT); "
                                                        "default $MLFLOW_TRACKING_URI or sqlite:///./mlflow.db.")] = None,
    runs: Annotated[Optional[Path], typer.Option(help="Shared runs root (default $PMGFLOW_RUNS or ./runs).")] = None,
    cpus: Annotated[Optional[int], typer.Option(min=1, help="CPUs of the local Ray (default: all of this machine's).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Also write the report (Markdown, CSV, PNG) here.")] = None,
    smoke: Annotated[bool, typer.Option("--smoke", help="Run every trial for a couple of steps on a handful of "
                                        "images and videos (generated where a dataset is missing), at the spec's "
                                        "model and clip size, into a throwaway runs root and MLflow store; then "
                                        "check that a re-run reuses every trial, and write the report.")] = False,
    only: Annotated[Optional[list[str]], typer.Option("--only", metavar="AXIS=LABEL[,LABEL]", help="Run only the "
                                                      "trials with these axis labels (repeatable: all must match), "
                                                      "e.g. --only condition=scratch,static: one piece of a long "
                                                      "sweep; the table shows every finished trial.")] = None,
):
    """Run an ablation sweep on Ray with MLflow tracking; finished trials are skipped, interrupted ones resume."""
    from pmgflow.jobs import sweep_job

    code = sweep_job(spec, dry_run, address, tracking_uri, runs, cpus, out, smoke, only)
    if code:
        raise typer.Exit(code)


@app.command()
@user_errors
def report(
    sweep_ref: Annotated[str, typer.Argument(metavar="SWEEP", help="Sweep name, its sweep YAML, or its MLflow parent run id.")],
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default as for `sweep`).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Write <sweep>.md, <sweep>.csv and <sweep>.png here.")] = None,
):
    """Print a sweep's ablation table (Markdown) from MLflow, beside the paper's numbers where it has them."""
    from pmgflow.jobs import report_job

    report_job(sweep_ref, tracking_uri, out)


@app.command()
@user_errors
def submit(
    spec: Annotated[Path, typer.Argument(help="Sweep YAML, inside the project directory (uploaded as the job's "
                                         "working directory).")],
    address: Annotated[str, typer.Option(help="Ray dashboard of the cluster, e.g. http://HEAD:8265.")],
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow URI the job records into (a server the "
                                                        "cluster reaches; default: this machine's).")] = None,
    runs: Annotated[Optional[Path], typer.Option(help="Runs root on the cluster (shared storage; default: this "
                                                 "machine's, absolute).")] = None,
    env: Annotated[list[str], typer.Option(help="KEY=VALUE environment variable for the job (repeatable).")] = [],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job's logs until it ends; exit 1 unless it "
                                       "succeeded.")] = False,
    timeout: Annotated[Optional[float], typer.Option(help="With --wait: stop following after this many seconds.")] = None,
):
    """Submit a sweep to a Ray cluster as a Ray job (`pmgflow sweep FILE --address auto` on the head node)."""
    from pmgflow.jobs import submit_job

    code = submit_job(spec, address, tracking_uri, runs, env, wait, timeout)
    if code:
        raise typer.Exit(code)


@app.command()
@user_errors
def ui(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = 5000,
    tracking_uri: Annotated[Optional[str], typer.Option(help="MLflow tracking URI (default as for `sweep`).")] = None,
):
    """Serve the MLflow UI for the tracking store on 127.0.0.1 (prints its URL)."""
    from pmgflow.jobs import ui_job

    raise typer.Exit(ui_job(port, tracking_uri))
