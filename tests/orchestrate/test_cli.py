"""The sweep commands that need no Ray: dry runs of every experiment file, and a tracking server that is not
there failing the sweep before anything starts."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pmgflow.cli import app

from .conftest import tiny_sweep, free_port

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml")) + sorted((ROOT / "experiments" / "paper").glob("*.yaml"))
runner = CliRunner()


def test_dry_run_prints_trials_resources_and_shared_pretrainings(tmp_path):
    path = tiny_sweep(tmp_path / "s.yaml", axes=[{"path": "finetune.*.train_fraction", "values": [0.5, 1.0]},
                                                 {"path": "pretrain.epochs", "values": [0, 1], "labels": ["scratch", "pmg"],
                                                  "name": "init"}])
    result = runner.invoke(app, ["sweep", str(path), "--dry-run", "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "tiny: 4 trial(s), each 1 CPU and 0 GPU" in out
    assert "| # | train_fraction | init | pre-training | fine-tuning | runs |" in out
    lines = [line for line in out.splitlines() if line.startswith("| 1 |") or line.startswith("| 3 |")]
    key = lines[0].split("|")[4].split()[0]
    assert "(shared with 3)" in lines[0] and "(shared with 1)" in lines[1] and key in lines[1]
    assert f"| {key} | 1 | fractal | pmg:zoom+affine | 1, 3 | new |" in out
    assert "| 0 | 0.5 | scratch | scratch |" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_experiment_file_dry_runs(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    text = path.read_text()
    assert text.startswith("# "), "each experiment begins with its launch command"
    assert "pmgflow sweep" in text.splitlines()[0] or "pmgflow submit" in text.splitlines()[0]
    result = runner.invoke(app, ["sweep", str(path.relative_to(ROOT)), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "trial(s), each" in result.stdout


def test_invalid_trial_exits_2_with_one_message(tmp_path):
    path = tiny_sweep(tmp_path / "bad.yaml", axes=[{"path": "pretrain.mask_ratio", "values": [0.5, 1.5]}])
    result = runner.invoke(app, ["sweep", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert "trial 1 (pretrain.mask_ratio=1.5): invalid spec" in result.output
    assert "pretrain.mask_ratio: Input should be less than 1" in result.output
    assert "Traceback" not in result.output


def test_unreachable_tracking_server_fails_before_any_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"
    path = tiny_sweep(tmp_path / "s.yaml")
    result = runner.invoke(app, ["sweep", str(path), "--tracking-uri", uri, "--runs", str(tmp_path / "runs")])
    assert result.exit_code == 2
    assert f"error: the MLflow tracking server {uri} cannot be reached" in result.output
    assert "Traceback" not in result.output and result.output.count("error:") == 1
    assert not (tmp_path / "runs").exists()  # nothing ran


def test_report_without_a_database_is_one_message(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["report", "no-such-sweep", "--tracking-uri", uri])
    assert result.exit_code == 2 and f"no MLflow database at {tmp_path / 'mlflow.db'}" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_main_job_is_scratch_plus_three_epoch_values_in_one_chain_at_base_learning_rate():
    from pmgflow.spec.sweep import load_sweep

    sweep = load_sweep(ROOT / "experiments" / "epochs.yaml")
    base = load_sweep(ROOT / "experiments" / "base.yaml").trials[0].spec.pretrain
    epochs = [t.spec.pretrain.epochs for t in sweep.trials]
    assert epochs[0] == 0 and len(epochs) >= 4 and epochs[1:] == sorted(set(epochs[1:]))
    pretrainings = [t.spec.pretrain for t in sweep.trials if not t.spec.scratch]
    # One chain: every pre-training is a prefix of the longest, so the sweep computes max(epochs) epochs.
    assert len({p.prefix_key for p in pretrainings}) == 1 and pretrainings[0].prefix_key is not None
    # Half base.yaml's batch at base.yaml's learning rate (blr x batch / 256): twice the steps per clip.
    for p in pretrainings:
        assert p.blr * p.batch_size == pytest.approx(base.blr * base.batch_size)
        assert p.batch_size < base.batch_size
    finetune = sweep.trials[0].spec.finetune["actions"]
    assert finetune.dataset.train_per_class == 20 and finetune.per_class is None
    # The scratch row fine-tunes the architecture the pre-trained rows take from their checkpoints.
    assert finetune.model == pretrainings[0].model
    # Every row is a mean over fine-tuning seeds that share the row's pre-training.
    assert sweep.spec.seeds is not None and len(sweep.spec.seeds) >= 3
