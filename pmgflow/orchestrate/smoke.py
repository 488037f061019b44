"""Smoke runs: every trial of a sweep for a couple of optimizer steps on a handful of images and videos.

A smoke keeps what decides whether the full sweep can run at all -- the model preset, frames and image size,
the transforms, the test views, the dataset layouts -- and goes through the same Ray trials, MLflow runs,
checkpoints and report. It shrinks what only costs time: pre-training epochs (capped at 1; 0 stays scratch),
clips per epoch, batch, warm-up, the images and the videos. A dataset or image folder that is not on this
machine is replaced by a small generated one in the same layout; one that is there is cut down to a handful of
its own files (videos linked, not copied). Runs go to a throwaway runs root and tracking store, so nothing of
a real sweep is reused or overwritten; after the sweep the smoke runs it again and checks that every trial is
reused (no training twice), then writes the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pmgflow.errors import SpecError
from pmgflow.orchestrate.sweep import Echo, SweepOutcome, load, run_sweep
from pmgflow.spec.base import run_key, spec_hash, validate_spec
from pmgflow.spec.data import DatasetSpec, EmbeddedDatasetSpec, FolderSource, FractalSource, VideoFramesSource
from pmgflow.spec.sweep import Resources, Sweep, Trial, TrialSpec
from pmgflow.spec.train import FinetuneSpec, PretrainSpec

SMOKE_BATCH = 2  # clips per optimizer step (rounded up to a multiple of the spec's accumulation steps)
SMOKE_STEPS = 2  # pre-training steps per epoch
SMOKE_IMAGES = 8  # pre-training images
SMOKE_CLASSES, SMOKE_TRAIN, SMOKE_TEST = 2, 2, 1  # videos: classes, train and test videos per class
SMOKE_SECONDS = 3  # generated videos: long enough for 16 frames at stride 4
SMOKE_SIZE = (320, 240)  # generated videos: UCF101's frame size
SYNTH_VERSION = 1  # bump when what a smoke tree holds changes: trees of another version are written again


def smoke_batch(accum_steps: int) -> int:
    """The smoke's batch: SMOKE_BATCH, rounded up so that the spec's accumulation steps still divide it."""
    return -(-SMOKE_BATCH // accum_steps) * accum_steps


class SmokeData:
    """The small datasets and image folders a smoke sweep reads, under one folder; `write` makes them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.items: dict[Path, tuple[str, str, Callable[[Path], Any]]] = {}  # path -> (description, stamp, writer)

    def _add(self, name: str, original: Any, description: str, writer: Callable[[Path], Any]) -> Path:
        stamp = json.dumps({"version": SYNTH_VERSION, "original": original}, sort_keys=True, default=str)
        path = self.folder / f"{name}-{spec_hash({'stamp': stamp}, 10)}"
        self.items.setdefault(path, (description, stamp, writer))
        return path

    def dataset(self, spec: DatasetSpec) -> dict[str, Any]:
        """A dataset spec (as data) of a handful of videos in the layout of `spec`."""
        if isinstance(spec, EmbeddedDatasetSpec):  # rendered by the trial itself; only smaller, and in the folder
            small = {**spec.model_dump(mode="json"), "classes": SMOKE_CLASSES, "train_per_class": SMOKE_TRAIN,
                     "test_per_class": SMOKE_TEST, "root": None}
            return {**small, "root": str(self.folder / f"{spec.kind}-{spec_hash(small, 10)}")}
        counts = dict(classes=SMOKE_CLASSES, train_per_class=SMOKE_TRAIN, test_per_class=SMOKE_TEST)
        shape = f"{SMOKE_CLASSES} classes x ({SMOKE_TRAIN} train + {SMOKE_TEST} test) videos"
        if Path(spec.root).is_dir():
            from pmgflow.data.synth import write_subset

            path = self._add(spec.kind, spec.model_dump(mode="json"), f"{spec.kind}: {shape} of {spec.root}, linked",
                             lambda out: write_subset(spec, out, **counts))
        else:
            from pmgflow.data.synth import FPS, write_synthetic

            path = self._add(spec.kind, {"kind": spec.kind, "split": spec.split, **counts},
                             f"{spec.kind}: {spec.root} is not here; generated {shape}, {SMOKE_SECONDS} s at "
                             f"{SMOKE_SIZE[0]}x{SMOKE_SIZE[1]}",
                             lambda out: write_synthetic(spec.kind, out, split=spec.split, frames=SMOKE_SECONDS * FPS,
                                                         size=SMOKE_SIZE, **counts))
        return {"kind": spec.kind, "root": str(path), "split": spec.split}

    def source(self, spec: FractalSource | FolderSource | VideoFramesSource) -> dict[str, Any]:
        """An image source spec (as data) of a handful of images of the kind `spec` names."""
        data = spec.model_dump(mode="json")
        if isinstance(spec, FractalSource):
            return {**data, "categories": min(spec.categories, SMOKE_IMAGES), "images": SMOKE_IMAGES}
        images = min(spec.images or SMOKE_IMAGES, SMOKE_IMAGES)
        if isinstance(spec, VideoFramesSource):
            return {**data, "dataset": self.dataset(spec.dataset), "images": images}
        if Path(spec.path).is_dir():
            return {**data, "images": images}
        path = self._add("images", str(spec.path), f"images: {spec.path} is not here; {SMOKE_IMAGES} fractal "
                         "images written as PNG files", _write_images)
        return {**data, "path": str(path), "images": images, "categories": None}

    def describe(self) -> list[str]:
        """One line per dataset or folder: what it is and where it goes."""
        return [f"{description} -> {path}" for path, (description, _, _) in self.items.items()]

    def write(self, echo: Echo) -> None:
        """Write every dataset and folder that is not there yet (a complete one of the same stamp is reused)."""
        from pmgflow.data.synth import ensure_tree

        for path, (description, stamp, writer) in self.items.items():
            echo(f"  {description} -> {path}")
            ensure_tree(path, stamp, writer)


def _write_images(out: Path) -> None:
    """SMOKE_IMAGES fractal images in two category folders, as PNG files."""
    from pmgflow.data.images import export_images, load_image_source

    export_images(load_image_source(FractalSource(categories=2, images=SMOKE_IMAGES, size=128), 128), out)


def _smoke_pretrain(spec: PretrainSpec, seed: int, data: SmokeData) -> dict[str, Any]:
    """The pre-training at most 1 epoch of SMOKE_STEPS small steps, on a handful of images."""
    batch = smoke_batch(spec.accum_steps)
    out = {**spec.model_dump(mode="json"), "epochs": min(spec.epochs, 1), "batch_size": batch,
           "clips_per_epoch": SMOKE_STEPS * batch, "warmup_epochs": 0, "seed": seed, "threads": None,
           "source": data.source(spec.source)}
    if spec.real_mix is not None:
        out["real_mix"] = {**out["real_mix"], "dataset": data.dataset(spec.real_mix.dataset)}
        out["loader"] = _streaming(spec.loader)
    return out


def _streaming(loader) -> dict[str, Any]:
    """The loader, streaming real videos where the full run would: a handful of videos fits any cache, but a
    paper-scale dataset does not (loader.cache auto streams it), so the smoke exercises the streaming path."""
    data = loader.model_dump(mode="json")
    return {**data, "cache": "stream"} if data["cache"] == "auto" else data


def _smoke_finetune(spec: FinetuneSpec, seed: int, data: SmokeData) -> dict[str, Any]:
    """The fine-tuning for 1 epoch of small steps on a handful of videos, tested with the spec's views."""
    out = {**spec.model_dump(mode="json"), "epochs": 1, "batch_size": smoke_batch(spec.accum_steps),
           "warmup_epochs": 0, "seed": seed, "threads": None, "dataset": data.dataset(spec.dataset)}
    if not isinstance(spec.dataset, EmbeddedDatasetSpec):
        out["loader"] = _streaming(spec.loader)
    return out


def _first_seen(keys: list[str]) -> dict[str, int]:
    """Each distinct key's index in order of first appearance."""
    return {key: i for i, key in enumerate(dict.fromkeys(keys))}


def smoke_resources(res: Resources, gpus: int | None, cpus: int | None = 1) -> Resources:
    """The spec's CPUs and GPUs per trial, at most `cpus` and `gpus` (None: as the spec asks, e.g. on a cluster).

    Locally a trial gets up to all of this machine's CPUs, so paper-size trials run one at a time: two ViT-B
    trials side by side (model, optimizer, test views and loader workers each) outgrew 24 GB of memory.
    """
    gpu = res.gpu if gpus is None else min(res.gpu, gpus)
    cpu = res.cpu if cpus is None else min(res.cpu, cpus)
    workers = min(res.workers, max(int(gpu), 1)) if res.workers and gpu else res.workers
    return Resources(cpu=cpu, gpu=gpu, workers=workers)


@dataclass(frozen=True)
class SmokePlan:
    """A smoke sweep and the small data it reads."""

    sweep: Sweep
    original: Sweep
    data: SmokeData


def smoke_sweep(sweep: Sweep, data_dir: Path, gpus: int | None = 0, cpus: int | None = 1) -> SmokePlan:
    """The smoke of a loaded sweep: every trial shrunk to a couple of steps, each reading data under data_dir.

    Capping epochs would make trials alike (200 and 800 epochs both become 1): each distinct pre-training and
    each distinct fine-tuning of the sweep gets its own seed (0, 1, ... in order of appearance), so trials stay
    distinct and trials that shared a pre-training still share one.
    """
    data = SmokeData(data_dir)
    pre_seeds = _first_seen([run_key(t.spec.pretrain) for t in sweep.trials])
    target_seeds = {name: _first_seen([run_key(t.spec.finetune[name]) for t in sweep.trials if name in t.spec.finetune])
                    for name in dict.fromkeys(n for t in sweep.trials for n in t.spec.finetune)}
    trials = []
    for t in sweep.trials:
        raw = {"pretrain": _smoke_pretrain(t.spec.pretrain, pre_seeds[run_key(t.spec.pretrain)], data),
               "finetune": {name: _smoke_finetune(target, target_seeds[name][run_key(target)], data)
                            for name, target in t.spec.finetune.items()}}
        spec = validate_spec(TrialSpec, raw, f"{sweep.source}: smoke of trial {t.index} ({t.describe()})")
        trials.append(Trial(t.index, t.values, t.labels, spec, t.seeds))
    hashes = [t.hash for t in trials]
    if len(set(hashes)) < len(hashes):
        raise SpecError(f"{sweep.source}: two trials have the same smoke spec; report this as a pmgflow bug")
    spec = sweep.spec
    updates = {"name": f"{spec.name}-smoke", "description": f"Smoke run of {sweep.source}: {spec.description}",
               "resources": smoke_resources(spec.resources, gpus, cpus), "max_failures": 0,
               "tracking": {"experiment": f"{spec.experiment}-smoke"}}
    smoke_spec = spec.model_validate({**spec.model_dump(), **updates,
                                      "resources": updates["resources"].model_dump()})
    raw = {**sweep.raw, **updates, "resources": updates["resources"].model_dump()}
    return SmokePlan(Sweep(smoke_spec, sweep.source, raw, trials), sweep, data)


# --- running a smoke ----------------------------------------------------------------------------------------


@dataclass
class SmokePlaces:
    """Where a smoke writes: the runs root (with the small data in it), the tracking store and the report."""

    runs: Path
    tracking_uri: str
    report: Path
    temporary: Path | None  # the temporary folder made for it, if any

    @property
    def data(self) -> Path:
        return self.runs / "smoke-data"

    @property
    def cache(self) -> Path:
        return self.runs / "smoke-cache"

    @property
    def throwaway_runs(self) -> bool:
        """The runs root is in the temporary folder (not one the user gave)."""
        return self.temporary is not None and self.runs.is_relative_to(self.temporary)


def smoke_places(runs: Path | None, tracking_uri: str | None, out: Path | None, *, create: bool = True) -> SmokePlaces:
    """The given runs root, tracking URI and report folder; what is not given goes to a new temporary folder
    (not made when `create` is false: a dry run writes nothing).

    $PMGFLOW_RUNS and $MLFLOW_TRACKING_URI are ignored: they name the stores of real sweeps.
    """
    from pmgflow.orchestrate.tracking import resolve_tracking_uri

    temporary = None
    if runs is None or tracking_uri is None:
        temporary = (Path(tempfile.mkdtemp(prefix="pmgflow-smoke-")) if create
                     else Path(tempfile.gettempdir()) / "pmgflow-smoke-XXXXXXXX")
    runs = Path(runs).expanduser().resolve() if runs is not None else temporary / "runs"
    uri = resolve_tracking_uri(tracking_uri) if tracking_uri else f"sqlite:///{temporary / 'mlflow.db'}"
    report = Path(out) if out is not None else (temporary / "report" if temporary else runs / "smoke-report")
    return SmokePlaces(runs, uri, report, temporary)


def local_gpus(address: str | None) -> int | None:
    """GPUs a local smoke may ask for per trial (this machine's); None on a cluster (the spec's request)."""
    if address is not None:
        return None
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_smoke(path: str | Path, places: SmokePlaces, address: str | None = None) -> SmokePlan:
    """Load a sweep file and make its smoke plan (nothing is written)."""
    return smoke_sweep(load(path), places.data, local_gpus(address),
                       None if address is not None else len(os.sched_getaffinity(0)))


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for a while (a local Ray started inside inherits them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _finished_runs(runs: Path) -> dict[str, int]:
    """Finished run directory name -> when its result was written (a run trained again rewrites it)."""
    from pmgflow.train.rundir import RunDir

    return {run.path.name: t for run in RunDir.under(runs) if (t := run.finished_at()) is not None}


@dataclass
class SmokeOutcome:
    """What a smoke did: its plan, the sweep's outcome, the resume check and the report."""

    plan: SmokePlan
    places: SmokePlaces
    first: SweepOutcome
    runs: dict[str, int]
    resume: str
    problems: list[str] = field(default_factory=list)
    report: list[Path] = field(default_factory=list)
    freed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def resume_check(plan: SmokePlan, places: SmokePlaces, before: dict[str, int], address: str | None,
                 cpus: int | None, echo: Echo) -> tuple[str, list[str]]:
    """Run the smoke sweep again: every trial must be skipped and no run directory trained again."""
    again = run_sweep(plan.sweep, address=address, tracking_uri=places.tracking_uri, runs=places.runs, cpus=cpus,
                      echo=echo)
    n, problems = len(plan.sweep.trials), []
    if sorted(again.skipped) != [t.index for t in plan.sweep.trials]:
        problems.append(f"resume: the second run reused {len(again.skipped)} of {n} trial(s)")
    if _finished_runs(places.runs) != before:
        problems.append("resume: the second run wrote run directories again")
    if problems:
        return "; ".join(problems), problems
    return f"a second run reused all {n} trial(s) and trained nothing", problems


def _remove_checkpoints(runs: Path) -> int:
    """Delete the *.pt files of a temporary runs root (ViT-B checkpoints are about 1 GB a run); bytes freed."""
    freed = 0
    for path in [*runs.glob("*/*.pt")]:
        freed += path.stat().st_size
        path.unlink()
    return freed


def run_smoke(path: str | Path, *, address: str | None = None, tracking_uri: str | None = None,
              runs: Path | None = None, cpus: int | None = None, out: Path | None = None,
              keep_checkpoints: bool = False, echo: Echo = print) -> SmokeOutcome:
    """Run the smoke of a sweep file: data, the sweep through Ray and MLflow, the resume check, the report."""
    from pmgflow.orchestrate.report import load_record, write_report

    start = time.perf_counter()
    places = smoke_places(runs, tracking_uri, out)
    plan = plan_smoke(path, places, address)
    echo(f"smoke of {path}: {len(plan.sweep.trials)} trial(s); runs in {places.runs}, MLflow {places.tracking_uri}")
    with _environ(PMGFLOW_CACHE=str(places.cache)):  # decoded frames and image banks of the smoke: throwaway too
        echo("small data:" if plan.data.items else "small data: none to write (embedded sets are rendered by trials)")
        plan.data.write(echo)
        first = run_sweep(plan.sweep, address=address, tracking_uri=places.tracking_uri, runs=places.runs, cpus=cpus,
                          echo=echo)
        finished = _finished_runs(places.runs)
        problems = [f"trial {i} {first.statuses[i]}" for i in sorted(first.statuses) if first.statuses[i] != "FINISHED"]
        if problems:
            resume = "not run (trials did not finish)"
        else:
            echo("resume check: the same smoke sweep again")
            resume, more = resume_check(plan, places, finished, address, cpus, echo)
            problems += more
    report = write_report(load_record(places.tracking_uri, first.parent_id), places.report)
    freed = _remove_checkpoints(places.runs) if places.throwaway_runs and not keep_checkpoints else 0
    return SmokeOutcome(plan, places, first, finished, resume, problems, report, freed, time.perf_counter() - start)


def _models(sweep: Sweep) -> str:
    """'base 16x224x224' for each distinct model of the sweep."""
    shapes = {(t.spec.pretrain.model.preset, t.spec.pretrain.model.frames, t.spec.pretrain.model.img_size)
              for t in sweep.trials}
    return ", ".join(f"{p} {f}x{s}x{s}" for p, f, s in sorted(shapes))


def _views(sweep: Sweep) -> str:
    """'ucf101 5x3, hmdb51 5x3': the test views of each fine-tuning target."""
    targets = {name: t for trial in sweep.trials for name, t in trial.spec.finetune.items()}
    return ", ".join(f"{name} {t.test_segments}x{t.test_crops}" for name, t in targets.items())


def plan_lines(plan: SmokePlan) -> list[str]:
    """What every smoke trial does and the small data it reads (the dry run's account)."""
    sweep = plan.sweep
    pre = max((t.spec.pretrain for t in sweep.trials), key=lambda p: p.epochs)
    lines = [f"each trial: model {_models(sweep)}; pre-training at most 1 epoch of {SMOKE_STEPS} steps x "
             f"{pre.batch_size} clips on {SMOKE_IMAGES} images; fine-tuning 1 epoch of {SMOKE_BATCH}-clip steps on "
             f"{SMOKE_CLASSES} classes x {SMOKE_TRAIN} videos, tested on {SMOKE_TEST} video per class with the "
             f"spec's views ({_views(sweep)})",
             "small data:"]
    return lines + [f"  {line}" for line in plan.data.describe() or ["none (embedded sets are rendered by trials)"]]


def summary(outcome: SmokeOutcome) -> list[str]:
    """The lines printed after a smoke: wall time, what was exercised, the resume check, where things are."""
    sweep, places, first = outcome.plan.sweep, outcome.places, outcome.first
    res = sweep.spec.resources
    pre = sorted(k for k in outcome.runs if k.startswith("pretrain-"))
    fine = sorted(k for k in outcome.runs if k.startswith("finetune-"))
    phases = ", ".join(f"{k} {v / 60:.1f}" for k, v in first.seconds.items())
    state = "[green]passed[/]" if outcome.ok else "[red]FAILED[/]: " + "; ".join(outcome.problems)
    lines = [f"smoke of {outcome.plan.original.source} {state} in {outcome.seconds / 60:.1f} min ({phases} min)",
             f"  trials: {len(sweep.trials)} on Ray, {res.cpu:g} CPU and {res.gpu:g} GPU each; model {_models(sweep)}",
             f"  runs: {len(pre)} pre-training(s), {len(fine)} fine-tuning(s), checkpointed every epoch; "
             f"test views {_views(sweep)}",
             f"  MLflow: {places.tracking_uri}, parent run {first.parent_id} (experiment {sweep.spec.experiment})",
             f"  resume: {outcome.resume}",
             f"  report: {', '.join(str(p) for p in outcome.report)}",
             f"  runs root: {places.runs}"]
    if outcome.freed:
        lines.append(f"  removed the checkpoints of the temporary runs root ({outcome.freed / 1e9:.1f} GB); "
                     f"delete {places.temporary} when done with it")
    return lines
