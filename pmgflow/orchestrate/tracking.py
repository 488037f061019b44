"""MLflow tracking of sweeps: one parent run per sweep, one nested child run per trial.

The driver creates the database, the experiment, the parent run and every child run before any trial starts
(parallel trials race on a new database); trials only log into their own child run. A re-run of the same
sweep finds its parent by the sweep hash and its children by the trial hash, so finished trials are neither
run nor recorded twice.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pmgflow.errors import PmgflowError
from pmgflow.spec.base import canonical_json
from pmgflow.spec.sweep import Sweep, Trial

KIND, SWEEP, SWEEP_HASH, TRIAL_HASH, TRIAL_INDEX = ("pmgflow.kind", "pmgflow.sweep", "pmgflow.sweep_hash",
                                                    "pmgflow.trial_hash", "pmgflow.trial_index")
LABELS, TABLE, AXES, TARGETS, ERROR, NODE, PRETRAIN_KEY = ("pmgflow.labels", "pmgflow.table", "pmgflow.axes",
                                                           "pmgflow.targets", "pmgflow.error", "pmgflow.node",
                                                           "pmgflow.pretrain_key")
PARENT = "mlflow.parentRunId"
# MLflow 3's UI opens an experiment by its kind: the runs table for model training, the GenAI overview and
# traces otherwise. UIs with a GenAI / model-training switch follow the switch instead (see orchestrate/ui.py).
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
SEEDS = "pmgflow.seeds"  # a trial's fine-tuning seeds (JSON list), when its sweep has seeds
MAX_PARAMS_PER_BATCH = 100
MAX_ERROR = 4000
INTERRUPTED = "interrupted before it finished; run the sweep again to resume it"
NOT_SELECTED = "not run: left out by --only (run the sweep without it, or with its labels, to run it)"


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else a SQLite database in the working directory (absolute, so trials agree)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None) -> str:
    """The tracking URI to use: the given one (a relative sqlite path made absolute) or the default."""
    if not uri:
        return default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    return uri


def configure_mlflow_env() -> None:
    """Quiet, private and quick to fail: no telemetry, few HTTP retries, a short request timeout."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail with one message, before any trial starts, if the tracking store cannot be reached."""
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        import requests

        try:
            response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        except requests.RequestException as exc:
            reason = type(exc).__name__.replace("Error", " error").strip().lower()
            raise PmgflowError(f"the MLflow tracking server {uri} cannot be reached ({reason}); start it "
                               f"(`mlflow server --host 127.0.0.1 --port {urlparse(uri).port or 5000}`) or leave "
                               "out --tracking-uri to record into ./mlflow.db") from None
        if response.status_code != 200:
            raise PmgflowError(f"the MLflow tracking server {uri} answered /health with HTTP "
                               f"{response.status_code}; is it an MLflow server (and are you logged in)?")
    elif scheme == "sqlite":
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)


def client(uri: str):
    """An MlflowClient for the URI (imported late: trials and the CLI start faster without it)."""
    configure_mlflow_env()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested spec as dotted keys: mappings and lists of mappings recurse, other lists stay one JSON value."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    elif isinstance(data, list) and any(isinstance(v, dict) for v in data):
        for i, value in enumerate(data):
            out.update(flatten(value, f"{prefix}.{i}"))
    else:
        out[prefix] = json.dumps(data) if isinstance(data, (list, tuple, bool)) or data is None else str(data)
    return out


def as_params(data: Any):
    """MLflow Param entities of a flattened spec, values cut to MLflow's length limit."""
    from mlflow.entities import Param
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    def cut(v: str) -> str:
        return v if len(v) <= MAX_PARAM_VAL_LENGTH else v[: MAX_PARAM_VAL_LENGTH - 3] + "..."

    return [Param(k, cut(v)) for k, v in sorted(flatten(data).items())]


def log_params(mlflow_client, run_id: str, data: Any) -> None:
    """Log a spec's flattened params in batches of MLflow's maximum size."""
    params = as_params(data)
    for i in range(0, len(params), MAX_PARAMS_PER_BATCH):
        mlflow_client.log_batch(run_id, params=params[i: i + MAX_PARAMS_PER_BATCH])


def metric_key(stage: str, name: str) -> str:
    """MLflow key of a per-epoch metric: stage-prefixed (pretrain_lr), fine-tuning target as suffix (top1.ucf101)."""
    if stage == "pretrain":
        return name if name.startswith("pretrain") else f"pretrain_{name}"
    base = name if name.startswith(("finetune", "top1")) else f"finetune_{name}"
    return f"{base}.{stage}"


def error_text(exc: BaseException) -> str:
    """'Type: message', cut to a length that fits a tag."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR else text[: MAX_ERROR - 3] + "..."


def trial_tags(sweep: Sweep, trial: Trial, parent_id: str) -> dict[str, str]:
    return {PARENT: parent_id, KIND: "trial", SWEEP: sweep.spec.name, SWEEP_HASH: sweep.hash,
            TRIAL_HASH: trial.hash, TRIAL_INDEX: str(trial.index), LABELS: json.dumps(trial.labels),
            PRETRAIN_KEY: trial.pretrain_key or "scratch"}


@dataclass
class ChildRun:
    """A trial's MLflow child run and whether it finished in an earlier run of the sweep."""

    trial: Trial
    run_id: str
    finished: bool


class SweepTracker:
    """The driver's side: experiment, parent run and child runs, created before trials start."""

    def __init__(self, uri: str, sweep: Sweep):
        self.uri, self.sweep = uri, sweep
        try:
            self.client = client(uri)
        except Exception as exc:  # a bad URI scheme, an unreadable database
            raise PmgflowError(f"MLflow tracking URI {uri}: {error_text(exc)}") from None
        self.experiment_id = ""
        self.parent_id = ""
        self.children: dict[int, ChildRun] = {}

    def _experiment(self) -> str:
        name = self.sweep.spec.experiment
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            kind = found.tags.get(EXPERIMENT_KIND, "")
            if not kind or kind.startswith("genai"):  # made by an older pmgflow, or guessed: a kind the user chose stays
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
            return found.experiment_id
        location = None
        if self.uri.startswith("sqlite:///"):  # artifacts beside the database, not in whatever cwd a worker has
            location = (Path(self.uri[len("sqlite:///"):]).parent / "mlruns").as_uri()
        return self.client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: MODEL_TRAINING})

    def _parent(self) -> str:
        sweep = self.sweep
        runs = self.client.search_runs([self.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
                                       filter_string=f"tags.`{KIND}` = 'sweep' and tags.`{SWEEP_HASH}` = '{sweep.hash}'")
        if runs:
            self.client.update_run(runs[0].info.run_id, status="RUNNING")
            return runs[0].info.run_id
        spec = sweep.spec
        targets = {name: t.dataset.kind for name, t in sweep.trials[0].spec.finetune.items()} if sweep.trials else {}
        tags = {KIND: "sweep", SWEEP: spec.name, SWEEP_HASH: sweep.hash, AXES: json.dumps(spec.axis_names),
                TABLE: json.dumps({**spec.table.model_dump(), "row": spec.row_axis}), TARGETS: json.dumps(targets),
                "mlflow.note.content": spec.description or spec.name, "pmgflow.source": str(sweep.source)}
        run = self.client.create_run(self.experiment_id, run_name=spec.name, tags=tags)
        run_id = run.info.run_id
        log_params(self.client, run_id, {"sweep": {"name": spec.name, "trials": len(sweep.trials),
                                                    "axes": ",".join(spec.axis_names) or "none",
                                                    "resources": spec.resources.model_dump(),
                                                    "max_failures": spec.max_failures}})
        self.client.log_text(run_id, sweep.source.read_text(), f"sweep/{sweep.source.name}")
        self.client.log_dict(run_id, sweep.raw, "sweep/resolved.yaml")
        self.client.log_dict(run_id, trial_table(sweep), "sweep/trials.json")
        return run_id

    def start(self) -> dict[int, ChildRun]:
        """Create (or find) the experiment, the parent run and one child run per trial."""
        from mlflow.exceptions import MlflowException

        try:
            self.experiment_id = self._experiment()
            self.parent_id = self._parent()
            existing = {}
            for run in self.client.search_runs([self.experiment_id], max_results=10_000,
                                               filter_string=f"tags.`{PARENT}` = '{self.parent_id}'"):
                existing.setdefault(run.data.tags.get(TRIAL_HASH), run)
            for trial in self.sweep.trials:
                run = existing.get(trial.hash)
                if run is not None:
                    finished = run.info.status == "FINISHED"
                    if not finished:
                        self.client.update_run(run.info.run_id, status="SCHEDULED")
                    self.children[trial.index] = ChildRun(trial, run.info.run_id, finished)
                    continue
                name = f"{self.sweep.spec.name}-{trial.index:02d}-{trial.describe()}"[:250]
                run = self.client.create_run(self.experiment_id, run_name=name,
                                             tags=trial_tags(self.sweep, trial, self.parent_id))
                log_params(self.client, run.info.run_id, trial.spec.model_dump(mode="json"))
                self.client.log_text(run.info.run_id, trial_yaml(trial), "trial.yaml")
                self.client.update_run(run.info.run_id, status="SCHEDULED")
                self.children[trial.index] = ChildRun(trial, run.info.run_id, False)
        except MlflowException as exc:
            raise PmgflowError(f"MLflow ({self.uri}): {exc.message}") from None
        return self.children

    def finish(self, errors: dict[int, str], interrupted: list[int], unselected: list[int] = ()) -> dict[int, str]:
        """Mark unfinished trials KILLED (interrupted, or left out by `--only`) or FAILED (with their error), then
        the parent; returns trial statuses."""
        statuses = {}
        for index, child in self.children.items():
            run = self.client.get_run(child.run_id)
            status = run.info.status
            if status != "FINISHED":
                stopped = index in interrupted or index in unselected
                status = "KILLED" if stopped and index not in errors else "FAILED"
                message = (NOT_SELECTED if status == "KILLED" and index in unselected else
                           INTERRUPTED if status == "KILLED" else
                           run.data.tags.get(ERROR) or errors.get(index) or "the trial ended without a result")
                self.client.set_tag(child.run_id, ERROR, message[:MAX_ERROR])
                self.client.set_terminated(child.run_id, status)
            statuses[index] = status
        values = set(statuses.values())
        self.client.set_terminated(self.parent_id, "FINISHED" if values <= {"FINISHED"} else
                                   "FAILED" if "FAILED" in values else "KILLED")
        return statuses


def trial_yaml(trial: Trial) -> str:
    """The trial spec as YAML (the artifact a user can edit and rerun by hand)."""
    import yaml

    return yaml.safe_dump({"axes": trial.values, "trial": trial.spec.model_dump(mode="json")}, sort_keys=False)


def trial_table(sweep: Sweep) -> list[dict[str, Any]]:
    """The resolved trial table: index, labels, axis values, hashes."""
    return [{"index": t.index, "labels": t.labels, "values": json.loads(canonical_json(t.values)),
             "trial_hash": t.hash, "pretrain_key": t.pretrain_key} for t in sweep.trials]


class TrialLogger:
    """A trial's side: per-epoch metrics (step = epoch, never logged twice), summaries, artifacts, status."""

    def __init__(self, uri: str, run_id: str):
        self.uri, self.run_id = uri, run_id
        self.client = client(uri)
        self.seen: set[tuple[str, int]] = set()
        self.refresh()

    def refresh(self) -> None:
        """Re-read which (metric, step) pairs the run has: a retried or resumed trial replays its finished
        epochs, and other processes (data-parallel workers) log into the same run."""
        run = self.client.get_run(self.run_id)
        self.seen = {(key, m.step) for key in run.data.metrics for m in self.client.get_metric_history(self.run_id, key)}

    def start(self, node: str | None = None) -> None:
        self.client.update_run(self.run_id, status="RUNNING")
        if ERROR in self.client.get_run(self.run_id).data.tags:  # from an earlier attempt
            self.client.delete_tag(self.run_id, ERROR)
        if node:
            self.client.set_tag(self.run_id, NODE, node)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Log metrics at a step, skipping (key, step) pairs already logged."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()
                 if v is not None and (k, step) not in self.seen]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)
            self.seen.update((m.key, step) for m in batch)

    def log_epoch(self, stage: str, epoch: int, metrics: dict[str, float]) -> None:
        """One epoch of a stage ('pretrain' or a fine-tuning target name)."""
        self.log({metric_key(stage, k): v for k, v in metrics.items() if isinstance(v, (int, float))}, epoch)

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, exc: BaseException) -> None:
        self.client.set_tag(self.run_id, ERROR, error_text(exc))
        self.client.set_terminated(self.run_id, "FAILED")


def find_sweep_run(mlflow_client, ref: str, uri: str):
    """The parent run a reference names: a run id, or the latest sweep run of that name (any experiment)."""
    from mlflow.exceptions import MlflowException

    try:
        run = mlflow_client.get_run(ref)
        if run.data.tags.get(KIND) == "sweep":
            return run
    except MlflowException:
        pass
    experiments = [e.experiment_id for e in mlflow_client.search_experiments()]
    runs = mlflow_client.search_runs(experiments, max_results=1, order_by=["attributes.start_time DESC"],
                                     filter_string=f"tags.`{KIND}` = 'sweep' and tags.`{SWEEP}` = '{ref}'")
    if not runs:
        raise PmgflowError(f"no sweep named {ref!r} (nor a sweep run with that id) in the tracking store "
                           f"{uri}; run `pmgflow sweep FILE` first")
    return runs[0]


def earlier_finished_trial(mlflow_client, run):
    """The newest FINISHED trial run with ``run``'s sweep name and trial hash under another parent (a run of an
    earlier version of the sweep file), or None."""
    tags = run.data.tags
    if TRIAL_HASH not in tags:
        return None
    found = mlflow_client.search_runs(
        [run.info.experiment_id], max_results=1, order_by=["attributes.start_time DESC"],
        filter_string=f"tags.`{KIND}` = 'trial' and tags.`{SWEEP}` = '{tags.get(SWEEP, '')}' and "
                      f"tags.`{TRIAL_HASH}` = '{tags[TRIAL_HASH]}' and attributes.status = 'FINISHED'")
    return found[0] if found else None


def child_runs(mlflow_client, parent) -> list:
    """The trial runs of a parent run, by trial index."""
    runs = mlflow_client.search_runs([parent.info.experiment_id], max_results=10_000,
                                     filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}'")
    return sorted(runs, key=lambda r: int(r.data.tags.get(TRIAL_INDEX, 0)))
