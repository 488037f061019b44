"""A real tiny sweep through Ray Tune (local, 2 CPUs) and MLflow (SQLite): four trials, two of which share one
pre-training, one from scratch and one that fails; then the report, and a re-run that skips what finished."""

import json
import re

import pytest
from typer.testing import CliRunner

from pmgflow.cli import app
from pmgflow.orchestrate import tracking
from pmgflow.orchestrate.report import as_rows, load_record, ablation_table
from pmgflow.orchestrate.stats import read_estimate
from pmgflow.spec.sweep import load_sweep

from .conftest import tiny_sweep

runner = CliRunner()
LABELS = ["pmg", "pmg-half", "scratch", "broken"]


@pytest.fixture(scope="module")
def swept(ray_local, tmp_path_factory):
    """The sweep, run once through the CLI; the module's tests read what it left."""
    tmp = tmp_path_factory.mktemp("sweep")
    path = tiny_sweep(tmp / "tiny.yaml", max_failures=1, axes=[{"zip": [
        {"path": "pretrain.epochs", "values": [1, 1, 0, 1]},
        {"path": "finetune.actions.train_fraction", "values": [None, 0.5, None, None]},
        # a dataset root below a file cannot be written: that trial fails, the others go on
        {"path": "finetune.actions.dataset.root", "values": [None, None, None, "/dev/null/actions"]},
    ], "name": "setting", "labels": LABELS}])
    uri, runs = f"sqlite:///{tmp / 'mlflow.db'}", tmp / "runs"
    result = runner.invoke(app, ["sweep", str(path), "--tracking-uri", uri, "--runs", str(runs), "--out", str(tmp / "out")])
    return {"path": path, "uri": uri, "runs": runs, "result": result, "sweep": load_sweep(path), "tmp": tmp,
            "client": tracking.client(uri)}


def _runs(swept):
    client = swept["client"]
    parent = tracking.find_sweep_run(client, "tiny", swept["uri"])
    return parent, tracking.child_runs(client, parent)


def test_sweep_runs_every_trial_and_reports_the_failed_one(swept):
    result = swept["result"]
    assert result.exit_code == 1, result.output  # one trial failed; the command says so
    assert "1 of 4 trial(s) failed (3)" in result.output
    parent, children = _runs(swept)
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]
    error = children[3].data.tags[tracking.ERROR]
    assert "NotADirectoryError" in error or "Not a directory" in error
    # the printed table carries the failure, the good rows their numbers
    assert "| broken | – | FAILED: " in result.stdout and "| pmg | " in result.stdout
    # off a terminal, the progress is one plain line per stage start and per epoch (the shared pre-training
    # runs in one of the trials 0, 1, 3; the others reuse it)
    assert "trial 2 (setting=scratch) fine-tuning actions starting (1 epoch)" in result.output
    assert re.search(r"trial 2 \(setting=scratch\) fine-tuning actions epoch 1/1 loss \d+\.\d{4} \d+ clips/s, "
                     r"trial eta 0s; sweep \d+/\d+ epochs, [0-3]/4 trials, eta \S+\n", result.output)
    assert re.search(r"trial [013] \(setting=[\w-]+\) pre-training epoch 1/1 loss \d+\.\d{4} \d+ clips/s", result.output)
    assert "trial 3 failed; retrying it" in result.output and "trial 3 failed (4/4)" in result.output


def test_parent_and_child_runs_carry_spec_params_metrics_and_artifacts(swept):
    client = swept["client"]
    parent, children = _runs(swept)
    sweep = swept["sweep"]
    assert parent.data.tags[tracking.SWEEP_HASH] == sweep.hash
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} == {
        "sweep/tiny.yaml", "sweep/resolved.yaml", "sweep/trials.json"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "report")} == {
        "report/tiny.md", "report/tiny.csv", "report/tiny.png"}
    for child, trial in zip(children, sweep.trials):
        tags, params = child.data.tags, client.get_run(child.info.run_id).data.params
        assert tags[tracking.PARENT] == parent.info.run_id and tags[tracking.TRIAL_HASH] == trial.hash
        assert json.loads(tags[tracking.LABELS]) == {"setting": LABELS[trial.index]}
        assert params["pretrain.epochs"] == str(trial.spec.pretrain.epochs)
        assert params["finetune.actions.dataset.classes"] == "3"
        assert params["pretrain.pmg.transforms.0.name"] == "zoom"
    pmg, _, scratch, _ = children
    history = client.get_metric_history(pmg.info.run_id, "pretrain_loss")
    assert [m.step for m in history] == [0]
    assert [m.step for m in client.get_metric_history(pmg.info.run_id, "finetune_loss.actions")] == [0]
    assert [m.step for m in client.get_metric_history(pmg.info.run_id, "top1.actions")] == [1]  # step = epochs
    assert {"pretrain_lr", "pretrain_clips_per_s", "finetune_lr.actions", "top1_single.actions", "top1_lo.actions",
            "top1_hi.actions", "classes.actions", "test_videos.actions"} <= set(pmg.data.metrics)
    assert "pretrain_loss" not in scratch.data.metrics
    assert {a.path for a in client.list_artifacts(pmg.info.run_id)} == {"trial.yaml", "loss_curves.png",
                                                                       "pmg_preview.gif"}
    assert {a.path for a in client.list_artifacts(scratch.info.run_id)} == {"trial.yaml", "loss_curves.png"}


def test_trials_that_differ_only_in_finetuning_share_one_pretraining(swept):
    sweep = swept["sweep"]
    key = sweep.trials[0].pretrain_key
    assert key == sweep.trials[1].pretrain_key == sweep.trials[3].pretrain_key
    assert [p.name for p in swept["runs"].glob("pretrain-*")] == [f"pretrain-{key}"]
    _, children = _runs(swept)
    client = swept["client"]
    curves = [[(m.step, m.value) for m in client.get_metric_history(c.info.run_id, "pretrain_loss")]
              for c in children[:2]]
    assert curves[0] == curves[1] and len(curves[0]) == 1  # both child runs show the one shared curve


def test_report_values_are_the_logged_metrics(swept):
    _, children = _runs(swept)
    table = ablation_table(load_record(swept["uri"], "tiny"))
    rows = as_rows(table)
    assert [r["setting"] for r in rows] == LABELS
    for row, child in zip(rows[:3], children[:3]):
        assert row["top1 actions"].value == child.data.metrics["top1.actions"]
        assert row["top1 actions"].lo == child.data.metrics["top1_lo.actions"]
    assert rows[3]["top1 actions"] is None and rows[3]["status"].startswith("FAILED: ")
    result = runner.invoke(app, ["report", "tiny", "--tracking-uri", swept["uri"], "--out", str(swept["tmp"] / "rep")])
    assert result.exit_code == 0, result.output
    cell = read_estimate(children[0].data.metrics, "top1", "actions").format()
    assert f"| pmg | {cell} | ok |" in result.stdout and "bootstrap 95 % interval over the 6 test videos" in result.stdout
    csv_rows = (swept["tmp"] / "rep" / "tiny.csv").read_text().splitlines()
    assert csv_rows[0] == ("setting,top1 actions,top1 actions lo,top1 actions hi,top1 actions std,top1 actions n,"
                           "top1 actions per seed,status")
    assert float(csv_rows[1].split(",")[1]) == children[0].data.metrics["top1.actions"]
    assert (swept["tmp"] / "rep" / "tiny.png").stat().st_size > 1000
    result = runner.invoke(app, ["report", "no-such-sweep", "--tracking-uri", swept["uri"]])
    assert result.exit_code == 2 and "no sweep named 'no-such-sweep'" in result.output


def test_rerun_skips_finished_trials_and_adds_no_runs(swept):
    runs = swept["runs"]
    (pre,) = runs.glob("pretrain-*")
    stamp = (pre / "result.json").stat().st_mtime_ns
    _, before = _runs(swept)
    result = runner.invoke(app, ["sweep", str(swept["path"]), "--tracking-uri", swept["uri"], "--runs", str(runs)])
    assert result.exit_code == 1  # the broken trial was tried again and failed again
    assert "3 of 4 trial(s) already finished in MLflow: skipped (0, 1, 2)" in result.output
    parent, after = _runs(swept)
    assert [c.info.run_id for c in after] == [c.info.run_id for c in before]  # no duplicate child runs
    assert [c.info.status for c in after] == ["FINISHED", "FINISHED", "FINISHED", "FAILED"]
    assert list(runs.glob("pretrain-*")) == [pre] and (pre / "result.json").stat().st_mtime_ns == stamp
    client = swept["client"]
    assert [m.step for m in client.get_metric_history(after[0].info.run_id, "pretrain_loss")] == [0]
    assert len(client.search_runs([parent.info.experiment_id])) == 5  # one parent, four children
