"""A data-parallel trial on the CPU: the pre-training runs in a Ray Train TorchTrainer with 2 gloo workers
inside the Tune trial, the fine-tuning in a Ray task of its own. Slow: run with -m slow."""

import json

import pytest
from typer.testing import CliRunner

from pmgflow.cli import app
from pmgflow.orchestrate import tracking

from .conftest import TINY_BASE, tiny_sweep

runner = CliRunner()


@pytest.mark.slow
def test_two_worker_pretraining_inside_a_trial(ray_local, tmp_path):
    base = {**TINY_BASE, "pretrain": {**TINY_BASE["pretrain"], "epochs": 2}}
    base["pretrain"].pop("threads")
    path = tiny_sweep(tmp_path / "dp.yaml", name="dp", base=base, resources={"cpu": 2, "workers": 2})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["sweep", str(path), "--tracking-uri", uri, "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    (run,) = (tmp_path / "runs").glob("pretrain-*")
    assert json.loads((run / "result.json").read_text())["ranks"] == 2
    client = tracking.client(uri)
    (child,) = tracking.child_runs(client, tracking.find_sweep_run(client, "dp", uri))
    assert child.info.status == "FINISHED" and "top1.actions" in child.data.metrics
    # rank 0 logged the curve from its worker; the trial did not log it again
    assert [m.step for m in client.get_metric_history(child.info.run_id, "pretrain_loss")] == [0, 1]
