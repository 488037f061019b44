"""MLflow experiments made or reused by a sweep open on their runs table in the MLflow UI."""

from __future__ import annotations

from pmgflow.orchestrate.tracking import EXPERIMENT_KIND, MODEL_TRAINING, SweepTracker, client
from pmgflow.orchestrate.ui import experiment_url, sweep_experiments
from pmgflow.spec.sweep import load_sweep

from .conftest import tiny_sweep


def test_sweep_experiments_are_model_training_and_linked_as_such(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = client(uri)
    ids = {"old": mlflow.create_experiment("pmgflow-old"),  # as an older pmgflow made it: no kind
           "chosen": mlflow.create_experiment("pmgflow-chosen", tags={EXPERIMENT_KIND: "finetuning"})}
    for name in ("new", "old", "chosen"):
        tracker = SweepTracker(uri, load_sweep(tiny_sweep(tmp_path / f"{name}.yaml", name=name)))
        tracker.start()
        assert ids.setdefault(name, tracker.experiment_id) == tracker.experiment_id
        kind = mlflow.get_experiment(tracker.experiment_id).tags.get(EXPERIMENT_KIND)
        assert kind == ("finetuning" if name == "chosen" else MODEL_TRAINING)
    # `pmgflow ui` links each one to its runs table in the UI's model-training view
    assert sorted(sweep_experiments(uri)) == [("pmgflow-new", ids["new"]), ("pmgflow-old", ids["old"])]
    assert (experiment_url("http://127.0.0.1:5000", ids["new"])
            == f"http://127.0.0.1:5000/#/experiments/{ids['new']}/runs?workflowType=machine_learning")
