"""Trials that share a pre-training: the run directory's lock makes one wait for the other, whether the
pre-training runs in the trial's process or data-parallel in workers; nothing is trained twice."""

import subprocess
import sys

import pytest

from pmgflow.orchestrate import trial
from pmgflow.spec.train import PretrainSpec
from pmgflow.train.rundir import RunDir

from ..conftest import waited_behind_lock
from .conftest import TINY_MODEL, TINY_SOURCE


class Log:
    """The part of TrialLogger a pre-training stage uses."""

    run_id = "run"

    def __init__(self):
        self.epochs = []

    def log_epoch(self, stage, epoch, metrics):
        self.epochs.append((stage, epoch))


def lock_is_held(run: RunDir) -> bool:
    """Whether some process holds the run's lock (asked from a process of its own)."""
    probe = ("from filelock import FileLock, Timeout\ntry:\n"
             f"    FileLock({str(run.path / '.lock')!r}).acquire(timeout=0)\nexcept Timeout:\n    raise SystemExit(1)")
    return subprocess.run([sys.executable, "-c", probe]).returncode == 1


@pytest.fixture
def stage(tmp_path, monkeypatch):
    """(spec, its run dir, the trainings started in this process, a function running pretrain_stage)."""
    spec = PretrainSpec(model=TINY_MODEL, source=TINY_SOURCE, epochs=1, batch_size=8, threads=1)
    run = RunDir.for_spec("pretrain", spec, tmp_path)
    trained = []

    def data_parallel(run_dir, *args):  # what the TorchTrainer's workers leave: a finished run
        trained.append(("data-parallel", lock_is_held(run_dir)))
        return run_dir.finish({"stage": "pretrain", "run_dir": str(run_dir.path), "by": "workers"})

    monkeypatch.setattr(trial, "_pretrain_data_parallel", data_parallel)
    monkeypatch.setattr("pmgflow.train.pretrain._pretrain_run", lambda *args: trained.append(("here", None)))

    def run_stage(workers: int) -> dict:
        ctx = trial.TrialContext(str(tmp_path), "unused", 1, 0, workers)
        return trial.pretrain_stage(spec, ctx, Log(), None)

    return spec, run, trained, run_stage


def test_data_parallel_pretraining_runs_under_the_runs_lock_once(stage):
    _, run, trained, run_stage = stage
    result = run_stage(2)
    assert trained == [("data-parallel", True)]  # the trial's process held the lock while the workers trained
    assert result == run.result() and result["by"] == "workers"
    assert run_stage(2) == result and len(trained) == 1  # finished: neither trained again nor here


@pytest.mark.parametrize("workers", [1, 2])
def test_a_trial_waits_for_the_one_training_its_shared_pretraining(stage, workers, capsys):
    _, run, trained, run_stage = stage
    finished = {"stage": "pretrain", "run_dir": str(run.path), "by": "the other trial"}
    # Another trial's process holds the run's lock, then finishes the run (writes its result) and exits.
    out = waited_behind_lock(run.path, finished, lambda: run_stage(workers))
    assert out == finished and trained == []  # the other trial's result, and nothing trained by this one
    assert "another process is running this spec" in capsys.readouterr().err
