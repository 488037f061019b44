"""Running a sweep: validate every trial, record it in MLflow, run the pending trials on Ray Tune, report.

Without an address a local Ray sized to this machine is started (and stopped); with one (`auto` inside a Ray
job) the sweep joins that cluster. Each trial is a Tune function trainable with the sweep's resources, one
grid point per trial index. Trials already FINISHED in MLflow are not scheduled at all; the others resume
from their checkpoints under the shared runs root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pmgflow.errors import PmgflowError, SpecError
from pmgflow.orchestrate import tracking
from pmgflow.orchestrate.paper import TABLES
from pmgflow.orchestrate.preflight import preflight
from pmgflow.orchestrate.progress import SweepProgress, plan_trials
from pmgflow.orchestrate.report import Table
from pmgflow.orchestrate.trial import DRIVER_CPU, TrialContext, TrialPayload
from pmgflow.paths import runs_dir
from pmgflow.spec.sweep import Sweep, Trial, load_sweep
from pmgflow.train.rundir import RunDir

Echo = Callable[[str], None]


def load(path: str | Path) -> Sweep:
    """Load and expand a sweep file, also checking the names that live above the spec layer."""
    sweep = load_sweep(path)
    paper = sweep.spec.table.paper
    if paper is not None and paper not in TABLES:
        raise SpecError(f"{path}: table.paper: unknown paper table {paper!r}; known: {', '.join(TABLES)}")
    return sweep


def runs_root(runs: str | Path | None) -> Path:
    """The shared runs root, absolute (trials run in other working directories, maybe on other nodes)."""
    return Path(runs or runs_dir()).expanduser().resolve()


def _trial_state(trial: Trial, root: Path) -> str:
    """The runs column of a trial: 'pre done / ft 2/3 done, 1 partial' (fine-tuning: every target x seed).

    A pre-trained trial's fine-tuning runs are keyed with their init, the pre-training's checkpoint under
    this runs root, exactly as the trial sets it.
    """
    from pmgflow.orchestrate.trial import finetune_runs, pretrain_checkpoint
    from pmgflow.spec.sweep import run_key

    key = trial.pretrain_key
    init = None if key is None else pretrain_checkpoint(root, key)
    ft = [RunDir.at(root, "finetune", run_key(spec)).state()
          for stages in finetune_runs(trial.spec, init, trial.seeds).values() for spec in stages.values()]
    done, partial = ft.count("done"), ft.count("partial")
    ft_state = (f"ft {ft[0]}" if len(ft) == 1 else
                f"ft {done}/{len(ft)} done" + (f", {partial} partial" if partial else ""))
    return " / ".join(([f"pre {RunDir.at(root, 'pretrain', key).state()}"] if key else []) + [ft_state])


def plan_tables(sweep: Sweep, root: Path) -> tuple[Table, Table]:
    """The dry-run tables: trials (axis values, pre-training, state of their runs) and the pre-trainings they share."""
    names = sweep.spec.axis_names
    shared = sweep.pretrainings()
    rows = []
    for t in sweep.trials:
        key = t.pretrain_key
        others = [i for i in shared.get(key, []) if i != t.index] if key else []
        pre = "scratch" if key is None else key + (f" (shared with {', '.join(map(str, others))})" if others else "")
        targets = ", ".join(f"{n} ({s.dataset.kind}, {s.epochs} ep)" for n, s in t.spec.finetune.items())
        rows.append([t.index, *[t.labels[n] for n in names], pre, targets, _trial_state(t, root)])
    res, seeds = sweep.spec.resources, sweep.spec.seeds
    trials = Table(f"{sweep.spec.name}: {len(sweep.trials)} trial(s), each {res.cpu:g} CPU and {res.gpu:g} GPU"
                   + (f", {res.num_workers} data-parallel workers" if res.num_workers > 1 else "")
                   + (f"; each target fine-tuned with seeds {', '.join(map(str, seeds))}" if seeds else ""),
                   ["#", *names, "pre-training", "fine-tuning", "runs"], rows)
    pre_rows = []
    for key, indices in shared.items():
        spec = sweep.trials[indices[0]].spec.pretrain
        pre_rows.append([key, spec.epochs, spec.source.kind, spec.videos_summary,
                         ", ".join(map(str, indices)), RunDir.at(root, "pretrain", key).state()])
    scratch = sum(t.pretrain_key is None for t in sweep.trials)
    note = f"{len(shared)} pre-training(s) for {len(sweep.trials) - scratch} pre-trained trial(s); {scratch} from scratch."
    chains: dict[str, int] = {}
    for key, indices in shared.items():
        spec = sweep.trials[indices[0]].spec.pretrain
        if spec.prefix_key is not None:
            chains[spec.prefix_key] = max(chains.get(spec.prefix_key, 0), spec.epochs)
    if chains:
        note += (f" Constant schedule: they form {len(chains)} chain(s) of epochs, each computed once "
                 f"({sum(chains.values())} pre-training epoch(s) in all; shorter runs are checkpoints of longer ones).")
    return trials, Table("pre-trainings (trials differing only in fine-tuning share one)",
                         ["pre-training", "epochs", "source", "videos", "trials", "run"], pre_rows, note)


@contextlib.contextmanager
def ray_session(address: str | None, cpus: int | None) -> Iterator[bool]:
    """A Ray session: the caller's if one is up, the cluster at `address`, else a local one; yields 'local?'."""
    import ray

    from pmgflow.orchestrate.processes import stop_signals_interrupt

    if ray.is_initialized():  # a notebook's or a test's session: use it as it is, leave it running
        yield False
        return
    record = None
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as exc:
            raise PmgflowError(f"cannot join the Ray cluster at {address}: {exc}") from None
    else:
        from pmgflow.orchestrate.processes import RaySessionRecord, stop_stale_ray_sessions

        stop_stale_ray_sessions()  # what an earlier local sweep, killed, left running
        since = time.time()
        try:
            # address="local": never attach to some other cluster started on this machine with `ray start`.
            ray.init(address="local", num_cpus=cpus or len(os.sched_getaffinity(0)), include_dashboard=False,
                     logging_level=logging.WARNING)
        except BaseException:  # e.g. Ctrl+C while it starts: stop what it started so far
            RaySessionRecord.write(since).stop()
            raise
        record = RaySessionRecord.write(since)
    try:
        # ray.init makes SIGTERM end the driver on the spot (its handlers exit or abort): while the session is up,
        # TERM and HUP stop the trials as Ctrl-C does instead.
        with stop_signals_interrupt():
            yield address is None
    finally:
        session = record.processes() if record else []  # taken while the raylet still runs: its workers too
        ray.shutdown()
        if record:
            record.stop(session)  # ray.shutdown leaves some (the agents) to end on their own: stop them now


def check_resources(sweep: Sweep, local: bool, echo: Echo) -> None:
    """A trial that can never be placed would wait forever: fail (local) or warn (a cluster may autoscale)."""
    import ray

    res, total = sweep.spec.resources, ray.cluster_resources()
    if total.get("CPU", 0) >= res.cpu and total.get("GPU", 0) >= res.gpu:
        return
    message = (f"each trial of {sweep.source} asks for {res.cpu:g} CPU and {res.gpu:g} GPU, but the Ray cluster has "
               f"{total.get('CPU', 0):g} CPU and {total.get('GPU', 0):g} GPU")
    if local:
        raise PmgflowError(message + "; lower `resources` in the sweep file, or run it on a cluster (--address)")
    echo(f"[yellow]warning:[/] {message}; trials wait until the cluster has them")


def _progress_callback(progress: SweepProgress, positions: list[int]):
    """A Tune callback that hands each trial's start, reports, end and failure to the sweep's progress
    (Tune's own tables are off); `positions[config index]` is the trial's index in the sweep."""
    from ray.tune import Callback

    class Forward(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            progress.start(positions[trial.config["index"]])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            progress.result(positions[trial.config["index"]], result)

        def on_trial_complete(self, iteration, trials, trial, **info):
            progress.complete(positions[trial.config["index"]], trial.last_result)

        def on_trial_recover(self, iteration, trials, trial, **info):
            progress.retry(positions[trial.config["index"]])

        def on_trial_error(self, iteration, trials, trial, **info):
            progress.error(positions[trial.config["index"]])

    return Forward()


def select_trials(sweep: Sweep, only: list[str] | None) -> set[int]:
    """The trials `--only AXIS=LABEL[,LABEL...]` (repeatable) selects: those matching every filter (all without)."""
    chosen = {t.index for t in sweep.trials}
    for item in only or []:
        axis, sep, labels = item.partition("=")
        names = sweep.spec.axis_names
        if not sep or axis not in names:
            raise SpecError(f"{sweep.source}: --only {item!r}: expected AXIS=LABEL[,LABEL...] with AXIS one of "
                            f"{', '.join(names) or '(no axes)'}")
        wanted = set(labels.split(","))
        known = {t.labels[axis] for t in sweep.trials}
        if wanted - known:
            raise SpecError(f"{sweep.source}: --only {item!r}: axis {axis} has no label "
                            f"{', '.join(sorted(wanted - known))}; its labels: {', '.join(sorted(known))}")
        chosen &= {t.index for t in sweep.trials if t.labels[axis] in wanted}
    return chosen


def run_trials(sweep: Sweep, children: dict, ctx: TrialContext, echo: Echo,
               selected: set[int] | None = None) -> tuple[dict[int, str], list[int]]:
    """Run the pending (and selected) trials as one Tune grid; returns (trial index -> error of the failed trials,
    indices of the trials an interrupt (Ctrl-C: Tune stops the grid and returns) left unfinished)."""
    from ray import tune
    from ray.tune import FailureConfig, RunConfig, TuneConfig, Tuner

    from pmgflow.orchestrate.trial import trainable

    pending = [t for t in sweep.trials if not children[t.index].finished and (selected is None or t.index in selected)]
    payloads = [asdict(TrialPayload(t.index, t.spec.model_dump(mode="json"), children[t.index].run_id)) for t in pending]
    res = sweep.spec.resources
    # A data-parallel trial's own process only drives its TorchTrainer, whose workers ask for the resources.
    resources = {"cpu": res.cpu, "gpu": res.gpu} if res.num_workers == 1 else {"cpu": DRIVER_CPU}
    fn = tune.with_resources(tune.with_parameters(trainable, payloads=payloads, context=asdict(ctx)), resources)
    progress = SweepProgress(plan_trials(pending, Path(ctx.root)), echo)
    concurrent = None
    if res.num_workers > 1:  # Tune cannot see the workers' needs: cap the trials to what the cluster holds
        import ray

        total = ray.cluster_resources()
        fits = [total.get("CPU", 0) // res.cpu] + ([total.get("GPU", 0) // res.gpu] if res.gpu else [])
        concurrent = max(int(min(fits)), 1)
    tuner = Tuner(fn, param_space={"index": tune.grid_search(list(range(len(payloads))))},
                  tune_config=TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
                  run_config=RunConfig(name=f"{sweep.spec.name}-{sweep.hash}", storage_path=str(Path(ctx.root) / "tune"),
                                       failure_config=FailureConfig(max_failures=sweep.spec.max_failures), verbose=0,
                                       callbacks=[_progress_callback(progress, [t.index for t in pending])]))
    errors, done = {}, set()
    with progress:  # the live view ends with the trials, however they end (Ctrl-C, an error)
        results = tuner.fit()
    for result in results:
        if result.config is None:  # a trial an interrupt stopped before it started
            continue
        index = pending[result.config["index"]].index
        if result.error is not None:
            errors[index] = tracking.error_text(result.error)
        elif (result.metrics or {}).get("done"):
            done.add(index)
    return errors, [t.index for t in pending if t.index not in errors and t.index not in done]


@dataclass
class SweepOutcome:
    """What a sweep run did: its parent run, each trial's status and the ablation table."""

    sweep: Sweep
    tracking_uri: str
    parent_id: str
    statuses: dict[int, str]
    skipped: list[int]
    table: Table | None = None
    failed: list[int] = field(default_factory=list)
    interrupted: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time by phase: tracking (MLflow, report), ray, trials


def run_sweep(path: str | Path | Sweep, *, address: str | None = None, tracking_uri: str | None = None,
              runs: str | Path | None = None, cpus: int | None = None, echo: Echo = print,
              only: list[str] | None = None) -> SweepOutcome:
    """Validate, record, run and report a sweep file or a loaded Sweep (finished trials are skipped, interrupted
    ones resume); `only` (AXIS=LABEL filters) runs a part of the grid, as one piece of a longer sweep."""
    from pmgflow.orchestrate.report import ablation_table, load_record, log_report

    seconds, clock = {}, time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase] = seconds.get(phase, 0.0) + now - clock
        clock = now

    sweep = path if isinstance(path, Sweep) else load(path)  # a Sweep: already loaded (and maybe transformed)
    selected = select_trials(sweep, only)
    preflight(sweep, echo)  # every dataset, image folder and cap, before anything is recorded or trained
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.configure_mlflow_env()
    tracking.check_tracking_uri(uri)
    tracker = tracking.SweepTracker(uri, sweep)
    children = tracker.start()
    lap("tracking")
    skipped = [i for i, c in children.items() if c.finished]
    if skipped:
        echo(f"{len(skipped)} of {len(children)} trial(s) already finished in MLflow: skipped ({', '.join(map(str, skipped))})")
    errors: dict[int, str] = {}
    interrupted: list[int] = []
    unselected = [i for i, c in children.items() if not c.finished and i not in selected]
    if unselected:
        echo(f"--only: {len(unselected)} unfinished trial(s) left for another run ({', '.join(map(str, unselected))})")
    if len(skipped) + len(unselected) < len(children):
        root = runs_root(runs)
        res = sweep.spec.resources
        ctx = TrialContext(str(root), uri, res.cpu, res.gpu, res.num_workers,
                           tuple(sweep.spec.seeds) if sweep.spec.seeds else None)
        try:
            with ray_session(address, cpus) as local:
                lap("ray")
                check_resources(sweep, local, echo)
                errors, interrupted = run_trials(sweep, children, ctx, echo, selected)
                lap("trials")
            lap("ray")  # shutting down
        except BaseException:
            tracker.client.set_terminated(tracker.parent_id, "KILLED")
            raise
    statuses = tracker.finish(errors, interrupted, unselected)
    record = load_record(uri, tracker.parent_id)
    log_report(uri, record)
    lap("tracking")
    failed = [i for i, s in statuses.items() if s == "FAILED"]
    return SweepOutcome(sweep, uri, tracker.parent_id, statuses, skipped, ablation_table(record), failed, interrupted,
                        seconds)


# --- submission to a cluster as a Ray job ------------------------------------------------------------------

# Never uploaded with the project (Ray also skips what .gitignore lists).
UPLOAD_EXCLUDES = [".git", ".venv", ".ci-venv", ".ci-cache", "runs", "mlruns", "mlflow.db", "*.pt", "__pycache__",
                   "*.egg-info", "out", "preview"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def submit_sweep(path: str | Path, address: str, *, tracking_uri: str | None = None, runs: str | Path | None = None,
                 env: dict[str, str] | None = None) -> tuple[str, str]:
    """Submit `pmgflow sweep FILE --address auto` as a Ray job with the working directory as the project.

    The sweep is validated here first, so a bad file fails before anything is uploaded. Returns (job id,
    entrypoint). The tracking URI and runs root default to this machine's (absolute paths: right for a
    cluster on this machine or a shared filesystem; give a tracking server and a shared runs root otherwise).
    """
    import shlex

    sweep = load(path)
    project = Path.cwd().resolve()
    try:
        relative = Path(path).resolve().relative_to(project)
    except ValueError:
        raise PmgflowError(f"{path}: the sweep file must be inside the project directory {project} "
                           "(it is uploaded as the job's working directory)") from None
    uri = tracking.resolve_tracking_uri(tracking_uri)
    entrypoint = shlex.join(["pmgflow", "sweep", str(relative), "--address", "auto", "--tracking-uri", uri,
                             "--runs", str(runs_root(runs))])
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except Exception as exc:  # ConnectionError, or an auth error from the dashboard
        raise PmgflowError(f"cannot reach the Ray dashboard at {address}: {exc}") from None
    env_vars = {"RAY_USAGE_STATS_ENABLED": "0", "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    job_id = client.submit_job(entrypoint=entrypoint,
                               submission_id=f"pmgflow-{sweep.spec.name}-{sweep.hash[:6]}-{int(time.time())}",
                               runtime_env={"working_dir": str(project), "excludes": UPLOAD_EXCLUDES,
                                            "env_vars": env_vars})
    return job_id, entrypoint


def wait_for_job(address: str, job_id: str, echo: Echo, poll_s: float = 2.0, timeout_s: float | None = None) -> str:
    """Follow a job's logs until it ends (or the timeout passes); returns its last status."""
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    shown, deadline = 0, None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = str(client.get_job_status(job_id).value)
        logs = client.get_job_logs(job_id)
        if len(logs) > shown:
            echo(logs[shown:].rstrip("\n"))
            shown = len(logs)
        if status in TERMINAL or (deadline is not None and time.monotonic() > deadline):
            return status
        time.sleep(poll_s)
