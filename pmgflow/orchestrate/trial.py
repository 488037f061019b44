"""One trial of a sweep as a Ray Tune function trainable: the (shared) pre-training, then each fine-tuning.

Runs live under one shared runs root, named by spec hash, so a trial whose pre-training another trial already
computed (or is computing) reuses it: the run directory's lock (:class:`~pmgflow.train.rundir.RunDir`) makes the
second trial wait for the first instead of computing it twice. A finished run returns its stored result; an
interrupted one resumes from its last checkpoint, so Tune's retries and re-runs of a sweep pick up where they
stopped.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pmgflow.orchestrate.tracking import TrialLogger
from pmgflow.spec.sweep import TrialSpec
from pmgflow.spec.train import FinetuneSpec, PretrainSpec
from pmgflow.train.rundir import RunDir

Report = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class TrialContext:
    """What every trial of a sweep shares: the runs root, the tracking URI and the resources of one trial."""

    root: str
    tracking_uri: str
    cpus: float
    gpus: float
    workers: int
    seeds: tuple[int, ...] | None = None  # fine-tuning seeds (None: each target's own seed, once)


@dataclass(frozen=True)
class TrialPayload:
    """What one trial needs: its index, its spec (as JSON data) and its MLflow child run."""

    index: int
    spec: dict[str, Any]
    run_id: str


def pmg_preview_gif(spec: PretrainSpec, path: Path, clips: int = 4) -> Path:
    """A GIF of a few pre-training clips exactly as this pre-training generates them (PMG's, or a batch of its
    own mix of video sources)."""
    import torch

    from pmgflow.pmg.preview import save_gif, tile_clips, to_uint8
    from pmgflow.sources.mix import VideoClips

    source = VideoClips(spec)
    g = torch.Generator().manual_seed(spec.seed)
    n = max(clips, len(source.sources))
    save_gif(tile_clips(to_uint8(source.clips(source.draw(n, g), g))), path)
    return path


def log_history(log: TrialLogger, stage: str, run_dir: str | Path) -> None:
    """Log the per-epoch metrics a run wrote, whoever computed it (a run another trial computed shows its curve
    in this trial's run too)."""
    for h in RunDir(Path(run_dir)).metrics():
        log.log_epoch(stage, h["epoch"], {k: v for k, v in h.items() if k != "epoch"})


def _epoch_callback(log: TrialLogger | None, stage: str, report: Report | None):
    """The on_epoch of one stage (logs to MLflow, reports to Tune); it is made as the stage begins, so the
    stage's start is reported here (the sweep's progress shows it before the first epoch ends)."""
    if report is not None:
        report({"stage": stage, "event": "start"})

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        if log is not None:
            log.log_epoch(stage, epoch, metrics)
        if report is not None:
            report({"stage": stage, "epoch": epoch, **metrics})

    return on_epoch


def _pretrain_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: the data-parallel pre-training (rank 0 writes the run dir and logs to MLflow)."""
    import ray.train
    import ray.train.torch

    from pmgflow.train.pretrain import pretrain

    rank0 = ray.train.get_context().get_world_rank() == 0
    log = TrialLogger(config["tracking_uri"], config["run_id"]) if rank0 else None
    _set_threads(config["cpus_per_worker"])
    pretrain(PretrainSpec.model_validate(config["spec"]), root=Path(config["root"]),
             on_epoch=_epoch_callback(log, "pretrain", None), device=ray.train.torch.get_device())


def pretrain_stage(spec: PretrainSpec, ctx: TrialContext, log: TrialLogger, report: Report | None) -> dict[str, Any]:
    """The trial's pre-training: computed here, in a TorchTrainer (workers > 1), or reused from the runs root."""
    from pmgflow.train.pretrain import pretrain

    root = Path(ctx.root)
    if ctx.workers > 1:
        # This process holds the run's lock while the workers train (they take none among themselves), so a
        # trial sharing this pre-training waits for it; a finished run is not trained again.
        run = RunDir.for_spec("pretrain", spec, root)
        if spec.schedule == "constant":  # a chain of runs differing in epochs: start from the furthest one
            from pmgflow.train.pretrain import shared_prefix

            run.keep_epochs = True
            with shared_prefix(run, spec):
                run.run_once(lambda: _pretrain_data_parallel(run, spec, ctx, log))
        else:
            run.run_once(lambda: _pretrain_data_parallel(run, spec, ctx, log))
    result = pretrain(spec, root=root, on_epoch=_epoch_callback(log, "pretrain", report))
    log_history(log, "pretrain", result["run_dir"])
    return result


def _pretrain_data_parallel(run: RunDir, spec: PretrainSpec, ctx: TrialContext,
                            log: TrialLogger) -> dict[str, Any] | None:
    """Train the pre-training in a TorchTrainer of ctx.workers workers; returns its result (None if it left none)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cpus, gpus = worker_resources(ctx)
    TorchTrainer(_pretrain_worker,
                 train_loop_config={"spec": spec.model_dump(mode="json"), "root": ctx.root,
                                    "tracking_uri": ctx.tracking_uri, "run_id": log.run_id, "cpus_per_worker": cpus},
                 scaling_config=ScalingConfig(num_workers=ctx.workers, use_gpu=gpus > 0,
                                              resources_per_worker={"CPU": cpus, "GPU": gpus}),
                 run_config=RunConfig(name=run.path.name, storage_path=str(Path(ctx.root) / "ray-train"))).fit()
    log.refresh()  # rank 0 logged the epochs from its own process
    return run.result()


def finetune_target(name: str, spec: FinetuneSpec, ctx: TrialContext, log: TrialLogger,
                    report: Report | None) -> dict[str, Any]:
    """One fine-tuning target of the trial (identical fine-tunings of two trials run once: see RunDir.run_once)."""
    from pmgflow.train.finetune import finetune

    result = finetune(spec, root=Path(ctx.root), on_epoch=_epoch_callback(log, name, report))
    log_history(log, name, result["run_dir"])
    log.log({f"top1.{name}": result["top1"], f"top1_single.{name}": result["top1_single"],
             f"finetune_seconds.{name}": result.get("seconds")}, step=spec.epochs)
    return result


# The process of a data-parallel trial only drives its TorchTrainer: it holds this sliver of a CPU, and the
# trial's CPUs go to the workers (so a 2-CPU trial with 2 workers fits on 2 CPUs).
DRIVER_CPU = 0.01


def worker_resources(ctx: TrialContext) -> tuple[float, float]:
    """(CPUs, GPUs) of each data-parallel worker of a trial."""
    return (ctx.cpus - DRIVER_CPU) / ctx.workers, ctx.gpus / ctx.workers


def _remote_finetune(name: str, spec_data: dict, ctx_data: dict, run_id: str) -> dict[str, Any]:
    """finetune_target in a Ray task of its own (one GPU) when the trial's pre-training was data-parallel."""
    ctx = TrialContext(**ctx_data)
    _set_threads(ctx.cpus)
    return finetune_target(name, FinetuneSpec.model_validate(spec_data), ctx, TrialLogger(ctx.tracking_uri, run_id),
                           None)


def _set_threads(cpus: float) -> int:
    """torch threads = the trial's CPUs (Ray sets OMP_NUM_THREADS too; never more threads than cores)."""
    import torch

    n = max(int(cpus), 1)
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n


def _node_id() -> str | None:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


def write_artifacts(spec: TrialSpec, runs: dict[str, dict[str, Any]], log: TrialLogger) -> None:
    """Loss curves (PNG) and, for a pre-trained trial, a GIF of its pseudo-motion clips."""
    from pmgflow.orchestrate.report import plot_loss_curves

    with tempfile.TemporaryDirectory() as tmp:
        curves = {stage: [(h["epoch"], h.get("pretrain_loss", h.get("finetune_loss")))
                          for h in RunDir(Path(r["run_dir"])).metrics()]
                  for stage, r in runs.items()}
        log.log_artifact(plot_loss_curves(curves, Path(tmp) / "loss_curves.png"))
        if not spec.scratch:
            log.log_artifact(pmg_preview_gif(spec.pretrain, Path(tmp) / "pmg_preview.gif"))


def pretrain_checkpoint(root: Path, key: str) -> Path:
    """The checkpoint the pre-training of run key `key` leaves under the runs root (its run dir's model.pt)."""
    return RunDir.at(root, "pretrain", key).model_path


def finetune_runs(spec: TrialSpec, init: Path | None,
                  seeds: tuple[int, ...] | list[int] | None) -> dict[str, dict[str, FinetuneSpec]]:
    """The fine-tuning runs of a trial: target -> {stage: spec}, each from `init`; one stage per seed
    (`<target>.seed<k>`, the spec's seed set to k) when the sweep has seeds, else the target's own spec once."""
    runs = {}
    for name, target in spec.finetune.items():
        target = target.model_copy(update={"init": init})
        runs[name] = ({f"{name}.seed{s}": target.model_copy(update={"seed": s}) for s in seeds} if seeds
                      else {name: target})
    return runs


def run_trial(payload: TrialPayload, ctx: TrialContext, report: Report | None = None) -> dict[str, float]:
    """Run one trial end to end, logging into its MLflow child run; returns its summary metrics."""
    from pmgflow.orchestrate.stats import is_seed_metric, target_metrics
    from pmgflow.orchestrate.tracking import SEEDS

    _set_threads(ctx.cpus)
    spec = TrialSpec.model_validate(payload.spec)
    log = TrialLogger(ctx.tracking_uri, payload.run_id)
    log.start(_node_id())
    try:
        runs: dict[str, dict[str, Any]] = {}
        init = None
        if not spec.scratch:
            runs["pretrain"] = pretrain_stage(spec.pretrain, ctx, log, report)
            init = Path(runs["pretrain"]["checkpoint"])
        if ctx.seeds:
            log.client.set_tag(log.run_id, SEEDS, json.dumps(list(ctx.seeds)))
        summary: dict[str, float] = {}
        for name, stages in finetune_runs(spec, init, ctx.seeds).items():
            for stage, target in stages.items():  # each seed is a run of its own: finished ones are reused
                if ctx.workers > 1:
                    import ray

                    cpus, _ = worker_resources(ctx)
                    # "DEFAULT": outside the trial's placement group (it holds only the driver's sliver of CPU)
                    task = ray.remote(_remote_finetune).options(num_cpus=cpus * ctx.workers, num_gpus=min(ctx.gpus, 1),
                                                                scheduling_strategy="DEFAULT")
                    runs[stage] = ray.get(task.remote(stage, target.model_dump(mode="json"), asdict(ctx),
                                                      payload.run_id))
                else:
                    runs[stage] = finetune_target(stage, target, ctx, log, report)
            metrics = target_metrics(name, [runs[stage] for stage in stages], ctx.seeds)
            log.log(metrics, step=spec.finetune[name].epochs)
            summary.update({k: v for k, v in metrics.items() if not is_seed_metric(k)})
        if "pretrain" in runs:
            summary["pretrain_seconds"] = runs["pretrain"].get("seconds") or 0.0
            log.log({"pretrain_seconds": summary["pretrain_seconds"]}, step=0)
        write_artifacts(spec, runs, log)
        log.finish()
        return summary
    except BaseException as exc:
        log.fail(exc)
        raise


def trainable(config: dict[str, Any], *, payloads: list[dict[str, Any]], context: dict[str, Any]) -> None:
    """The Ray Tune function trainable: config['index'] picks the trial; metrics go to tune.report per epoch."""
    from ray import tune

    payload = TrialPayload(**payloads[config["index"]])
    summary = run_trial(payload, TrialContext(**context), report=tune.report)
    tune.report({"done": True, "index": payload.index, **summary})
