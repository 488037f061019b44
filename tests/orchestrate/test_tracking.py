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


def test_report_takes_trials_left_out_after_a_file_change_from_the_earlier_run(tmp_path):
    import time

    from pmgflow.orchestrate.report import ablation_table, as_rows, load_record

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = client(uri)
    axis = {"path": "pretrain.epochs", "name": "epochs"}
    first = SweepTracker(uri, load_sweep(tiny_sweep(tmp_path / "v1.yaml", axes=[{**axis, "values": [1, 2]}])))
    for index, child in first.start().items():
        mlflow.log_metric(child.run_id, "top1.actions", 40.0 + index)
        mlflow.set_terminated(child.run_id, "FINISHED")
    first.finish({}, [])
    time.sleep(0.01)  # the newer parent starts later
    # the file gains a row: a new parent; the old rows are left out by --only, the new one finishes
    second = SweepTracker(uri, load_sweep(tiny_sweep(tmp_path / "v2.yaml", axes=[{**axis, "values": [1, 2, 3]}])))
    children = second.start()
    assert second.parent_id != first.parent_id
    mlflow.log_metric(children[2].run_id, "top1.actions", 50.0)
    mlflow.set_terminated(children[2].run_id, "FINISHED")
    second.finish({}, [], unselected=[0, 1])
    record = load_record(uri, "tiny")
    assert record.run_id == second.parent_id
    assert [(t.status, t.earlier, t.metrics.get("top1.actions")) for t in record.trials] == [
        ("FINISHED", True, 40.0), ("FINISHED", True, 41.0), ("FINISHED", False, 50.0)]
    table = ablation_table(record)
    assert [row["top1 actions"].value for row in as_rows(table)] == [40.0, 41.0, 50.0]
    assert "2 row(s) (1; 2) are from an earlier run of this sweep with the same trial spec" in table.note
    # a trial whose spec changed has no earlier result: it stays as this run left it
    third = SweepTracker(uri, load_sweep(tiny_sweep(tmp_path / "v3.yaml", axes=[{**axis, "values": [4]}])))
    third.start()
    third.finish({}, [], unselected=[0])
    (only,) = load_record(uri, "tiny").trials
    assert (only.status, only.earlier) == ("KILLED", False)
